"""model: Flamingo as a plain nn.Module tree: frozen vision encoder, Perceiver Resampler,
gated XATTN-Dense layers around a frozen HuggingFace causal LM. Runs on one CPU; no Ray, no
FSDP, no data code."""
