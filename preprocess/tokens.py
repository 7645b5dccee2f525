"""The project-wide special tokens and sequence markers, defined once.

Everything that writes or reads M3W sequence text (preprocess, shards, trainer, model,
evaluation) imports these names; nobody retypes the strings.
"""

IMAGE_TOKEN = "<image>"
"""Stands where an image (or a video) stood on the page."""

EOC_TOKEN = "<EOC>"
"""End of chunk: before every <image> except the first, and at the end of a document."""

SPECIAL_TOKENS: tuple[str, ...] = (IMAGE_TOKEN, EOC_TOKEN)
"""The tokens added to every tokenizer, in this order."""

PAD_FALLBACK_TOKEN = "<pad>"
"""Added as the pad token when a tokenizer has none (never reuse eos as pad: it would mask <EOC>/eos labels)."""
