"""FlamingoConfig: the one typed description of a Flamingo model.

A config names its two frozen towers either by a model name / local path (loaded with
``from_pretrained``) or by a transformers config object (random init, for tests and the demo).
Everything else (resampler, cross-attention, freezing) is a plain field with a paper default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase

FROZEN_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
"""Accepted ``FlamingoConfig.frozen_dtype`` names -> torch dtype attribute."""

TIMM_PREFIX = "timm:"
"""A vision encoder spec ``"timm:<model name>"`` builds a timm model (optional ``timm`` extra)."""


@dataclass(kw_only=True)
class FlamingoConfig:
    """Architecture and freezing of a Flamingo model (paper / OpenFlamingo defaults)."""

    language_model: str | PretrainedConfig
    """Frozen causal LM: a model name or local path (``from_pretrained``), or a transformers config
    (random init). Supported families: GPT-2, Llama, Qwen2, OPT (others whose decoder layers sit in
    one ModuleList usually work too)."""

    vision_encoder: str | PretrainedConfig
    """Frozen vision tower giving patch features: a model name or local path of a CLIP / SigLIP
    (full or vision-only) checkpoint, a CLIPVisionConfig / SiglipVisionConfig (random init), or
    ``"timm:<name>"`` for a timm model (e.g. ``"timm:dm_nfnet_f0"``; needs the ``timm`` extra)."""

    tokenizer: str | PreTrainedTokenizerBase | None = None
    """Tokenizer name/path or object; None uses ``language_model`` when that is a name/path.
    <image>, <EOC> (and <pad> when it has no pad token) are added when missing."""

    vision_pretrained: bool = True
    """For ``timm:`` encoders only: load pretrained timm weights (False: random init)."""

    cross_attn_every: int = 4
    """Insert a gated XATTN-Dense block before decoder layer i when (i + 1) % cross_attn_every == 0."""

    resampler_depth: int = 6
    """Perceiver Resampler layers."""

    resampler_heads: int = 8
    """Perceiver Resampler attention heads."""

    resampler_head_dim: int = 64
    """Perceiver Resampler dimension per head."""

    num_latents: int = 64
    """Learned latents = visual tokens per medium."""

    max_frames: int = 8
    """Most frames per medium (size of the learned time embedding)."""

    xattn_heads: int = 8
    """Heads of each gated cross-attention block."""

    xattn_head_dim: int = 64
    """Dimension per head of each gated cross-attention block."""

    xattn_ff_mult: int = 4
    """FFN width multiplier in the XATTN-Dense blocks (and the resampler)."""

    only_attend_immediate_media: bool = True
    """A text token attends only to the latest image at or before it (paper). False: to all
    previous images of its document (the paper's ablation)."""

    relative_media: bool = False
    """Not in the paper. True adds a second visual stream: each medium's patch features minus
    their mean over its document's media (zero for a document's only medium) go through their own
    Perceiver Resampler and, in every XATTN-Dense block, their own masked cross-attention with its
    own tanh gate (0 at init: a fresh model still computes what the frozen LM computes). For weak
    vision towers (tiny, random) in which a page's images share most of their features: that shared
    part hides what tells the page's objects apart, which in-context naming needs, while captions
    need the absolute features the paper's stream keeps (README, "In-context learning at CPU
    scale"). The mean takes all of a document's media, so a medium's relative tokens depend on the
    media after it (never on text): fine for few-shot prompts, whose images are all given up front."""

    relative_gate_init: float = 0.0
    """Where the relative stream's tanh gates start (``relative_media``). 0: a fresh model computes
    exactly what the frozen LM computes. Open a little (0.3 in trainer/configs/icl.yaml), the
    stream's writes reach the LM from the first step, and the in-context binding forms in every
    run of the CPU-scale experiment instead of in about half."""

    freeze_lm: bool = True
    """Keep the language model frozen (only the new tokens' embedding rows train)."""

    freeze_vision: bool = True
    """Keep the vision tower frozen (eval mode, under no_grad)."""

    image_size: int | None = None
    """Input resolution for ``image_transform``; None takes the tower's (config ``image_size``)."""

    image_mean: tuple[float, float, float] | None = None
    """Normalisation mean; None takes the tower family's (CLIP, SigLIP, timm pretrained_cfg)."""

    image_std: tuple[float, float, float] | None = None
    """Normalisation std; None as ``image_mean``."""

    init_seed: int = 0
    """Seed for every random initialisation (random towers, resampler, xattn)."""

    frozen_dtype: Literal["bf16", "fp16", "fp32"] | None = None
    """dtype of the frozen towers' weights (LM and vision); None: bf16 when CUDA is available,
    else fp32. Trainable weights (resampler, xattn, new token rows) always stay fp32; unfrozen
    towers too."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata kept with the config (e.g. how a tiny model was made)."""

    def __post_init__(self) -> None:
        if not isinstance(self.language_model, str | PretrainedConfig):
            raise TypeError(
                f"FlamingoConfig.language_model must be a name/path or a transformers config, got "
                f"{type(self.language_model).__name__}"
            )
        if not isinstance(self.vision_encoder, str | PretrainedConfig):
            raise TypeError(
                f"FlamingoConfig.vision_encoder must be a name/path, 'timm:<name>' or a transformers "
                f"config, got {type(self.vision_encoder).__name__}"
            )
        for name in (
            "cross_attn_every",
            "resampler_depth",
            "resampler_heads",
            "resampler_head_dim",
            "num_latents",
            "max_frames",
            "xattn_heads",
            "xattn_head_dim",
            "xattn_ff_mult",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FlamingoConfig.{name} must be a positive int, got {value!r}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 3:
                    raise ValueError(f"FlamingoConfig.{name} must have 3 values (RGB), got {value!r}")
                setattr(self, name, tuple(float(v) for v in value))
        if self.frozen_dtype not in (None, *FROZEN_DTYPES):
            raise ValueError(
                f"FlamingoConfig.frozen_dtype must be one of {sorted(FROZEN_DTYPES)} or None, got {self.frozen_dtype!r}"
            )
        if not isinstance(self.relative_gate_init, int | float) or not math.isfinite(self.relative_gate_init):
            raise ValueError(f"FlamingoConfig.relative_gate_init must be a finite number, got {self.relative_gate_init!r}")
        if self.relative_gate_init != 0 and not self.relative_media:
            raise ValueError("FlamingoConfig.relative_gate_init is the relative stream's: set relative_media=True")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"FlamingoConfig.image_size must be positive, got {self.image_size}")

    def torch_dtype(self, *, frozen: bool = True) -> Any:
        """The torch dtype of a tower's weights: ``frozen_dtype`` (None: bf16 with CUDA, else
        fp32) when it is frozen, fp32 when it trains."""
        import torch

        if not frozen:
            return torch.float32
        name = self.frozen_dtype or ("bf16" if torch.cuda.is_available() else "fp32")
        return getattr(torch, FROZEN_DTYPES[name])

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; transformers configs become ``{"config": {...}}``, names stay strings.
        A tokenizer object is not serialised (``save_pretrained`` writes its files)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("language_model", "vision_encoder"):
                out[f.name] = {"config": value.to_dict()} if isinstance(value, PretrainedConfig) else value
            elif f.name == "tokenizer":
                out[f.name] = value if isinstance(value, str) or value is None else None
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlamingoConfig:
        """Inverse of ``to_dict``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"FlamingoConfig.from_dict: unknown keys {sorted(unknown)}")
        kwargs = dict(data)
        for name in ("language_model", "vision_encoder"):
            value = kwargs.get(name)
            if isinstance(value, dict):
                kwargs[name] = config_from_dict(value["config"])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> FlamingoConfig:
        """A copy with some fields changed."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return FlamingoConfig(**current)

    def __repr__(self) -> str:  # short: transformers configs print pages
        def short(value: Any) -> str:
            if isinstance(value, PretrainedConfig):
                return f"<{type(value).__name__}>"
            if isinstance(value, PreTrainedTokenizerBase):
                return f"<{type(value).__name__} len={len(value)}>"
            return repr(value)

        body = ", ".join(f"{f.name}={short(getattr(self, f.name))}" for f in fields(self))
        return f"FlamingoConfig({body})"


def config_from_dict(data: dict[str, Any]) -> PretrainedConfig:
    """Rebuild a transformers config saved with ``PretrainedConfig.to_dict`` (needs ``model_type``)."""
    data = dict(data)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ValueError(f"saved transformers config has no model_type: keys {sorted(data)[:8]}...")
    return AutoConfig.for_model(model_type, **data)


__all__ = ["FlamingoConfig", "TIMM_PREFIX", "config_from_dict"]
