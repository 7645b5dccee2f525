"""model: Flamingo as a plain nn.Module tree: frozen vision encoder, Perceiver Resampler,
gated XATTN-Dense layers around a frozen HuggingFace causal LM. Runs on one CPU; no Ray, no
FSDP, no data code."""

from flamboyance.model.config import FlamingoConfig
from flamboyance.model.flamingo import Flamingo, FlamingoOutput, causal_lm_loss, prepare_tokenizer
from flamboyance.model.resampler import PerceiverResampler
from flamboyance.model.vision import ImageTransform, VisionEncoder
from flamboyance.model.xattn import GatedCrossAttentionBlock, MediaContext, media_attention_mask

__all__ = [
    "Flamingo",
    "FlamingoConfig",
    "FlamingoOutput",
    "GatedCrossAttentionBlock",
    "ImageTransform",
    "MediaContext",
    "PerceiverResampler",
    "VisionEncoder",
    "causal_lm_loss",
    "media_attention_mask",
    "prepare_tokenizer",
]
