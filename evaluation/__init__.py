"""evaluation: few-shot in-context evaluation as in the Flamingo paper (prompts, zero-shot,
RICES, beam search, log-likelihood ranking) and its metrics (CIDEr, VQA accuracy)."""
