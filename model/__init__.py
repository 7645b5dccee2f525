"""model: Flamingo as a plain nn.Module tree: frozen vision encoder, Perceiver Resampler,
gated XATTN-Dense layers around a frozen HuggingFace causal LM. Runs on one CPU; no Ray, no
FSDP, no data code.

    from flamboyance.model import Flamingo
    from flamboyance.model.tiny import tiny_config
    model = Flamingo.from_config(tiny_config(family="gpt2"))
    enc = model.tokenizer(["<image>a red circle<EOC>"], return_tensors="pt")
    pixels = model.image_transform(pil_image)                     # (C, H, W)
    media = pixels[None, None, None]                              # (batch, media, frames, C, H, W)
    out = model(enc.input_ids, enc.attention_mask, media, labels=enc.input_ids)
    out.loss.backward()                                           # grads reach trainable_parameters() only

Media slot k of a row is the k-th <image> token of that row; a token attends to the latest image at
or before it (config.only_attend_immediate_media; False = all previous images). Packed rows pass
``segment_ids`` (batch, tokens): tokens then attend (text and images) only within their document.
"""

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
