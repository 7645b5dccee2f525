"""Where things live inside a HuggingFace causal LM, per family, and how our blocks join it.

The frozen LM stays an attribute of Flamingo, untouched: no class swapping, no setters. The
MediaContext of a call travels as the ``flamingo_media`` keyword through the HF model's forward
(GPT-2, Llama, Qwen2, OPT pass unknown keywords down to their decoder layers); a forward pre-hook
on each decoder layer takes it out of the keywords and, where a gated block belongs, runs that
block on the layer's input hidden states. Called without the keyword, the LM is the plain LM.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch
from flamboyance.model.xattn import GatedCrossAttentionBlock, MediaContext
from torch import nn
from transformers import PreTrainedModel

MEDIA_KWARG = "flamingo_media"
"""The forward keyword that carries a MediaContext down to the decoder layers."""

DECODER_LAYERS_PATH: dict[str, str] = {
    "gpt2": "h",
    "llama": "layers",
    "qwen2": "layers",
    "mistral": "layers",
    "opt": "decoder.layers",
}
"""Path of the decoder-layer ModuleList inside ``lm.base_model``, per ``config.model_type``."""


@lru_cache(maxsize=64)
def _forward_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def cache_keyword(base_model: nn.Module) -> str:
    """The forward keyword of the KV cache: ``cache`` from transformers 5.x on (``past_key_values``
    is deprecated there), ``past_key_values`` before."""
    return "cache" if "cache" in _forward_parameters(type(base_model)) else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a base-model forward returned (``output.cache`` in transformers 5.x)."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else getattr(output, "past_key_values", None)


def decoder_layers(lm: PreTrainedModel) -> nn.ModuleList:
    """The decoder layers of a causal LM: by the family table, else the one ModuleList whose length
    is the config's number of layers."""
    base = lm.base_model
    path = DECODER_LAYERS_PATH.get(lm.config.model_type)
    if path is not None:
        return base.get_submodule(path)
    num_layers = lm.config.get_text_config().num_hidden_layers
    candidates = [m for _, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    if len(candidates) != 1:
        raise ValueError(
            f"cannot locate the decoder layers of a {lm.config.model_type!r} model "
            f"({len(candidates)} ModuleLists of length {num_layers}); add it to DECODER_LAYERS_PATH"
        )
    return candidates[0]


class _MediaPreHook:
    """Forward pre-hook of one decoder layer: pops the MediaContext keyword and, when the layer has a
    gated block, applies it to the layer's input hidden states."""

    def __init__(self, block: GatedCrossAttentionBlock | None) -> None:
        self.block = block

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        context: MediaContext | None = kwargs.pop(MEDIA_KWARG, None)
        if context is None or self.block is None:
            return args, kwargs
        if args:
            args = (self._apply(args[0], context), *args[1:])
        else:
            kwargs["hidden_states"] = self._apply(kwargs["hidden_states"], context)
        return args, kwargs

    def _apply(self, hidden: torch.Tensor, context: MediaContext) -> torch.Tensor:
        """The block in its own (fp32, trainable) dtype on a frozen LM of another (bf16) dtype;
        under autocast both casts are no-ops for the matmuls."""
        dtype = self.block.attn_gate.dtype
        return self.block(hidden.to(dtype), context).to(hidden.dtype)


def attach_cross_attention(lm: PreTrainedModel, blocks: dict[int, GatedCrossAttentionBlock]) -> list[Any]:
    """Register the pre-hooks on every decoder layer (blocks keyed by layer index); returns handles."""
    layers = decoder_layers(lm)
    bad = [i for i in blocks if not 0 <= i < len(layers)]
    if bad:
        raise ValueError(f"cross-attention layer indices {bad} outside 0..{len(layers) - 1}")
    return [
        layer.register_forward_pre_hook(_MediaPreHook(blocks.get(i)), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
