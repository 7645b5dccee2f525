"""The frozen vision tower: HF CLIP / SigLIP (or any HF vision model with patch features) and,
as an optional extra, timm models (NFNet is the paper's family), plus the matching image transform.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flamboyance.model.config import TIMM_PREFIX
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def _hf_vision_from_config(config: PretrainedConfig) -> nn.Module:
    from transformers import CLIPVisionModel, SiglipVisionModel

    if hasattr(config, "vision_config") and not isinstance(config, dict):
        config = config.vision_config  # full CLIP / SigLIP config: keep the vision half
    classes = {"clip_vision_model": CLIPVisionModel, "siglip_vision_model": SiglipVisionModel}
    cls = classes.get(config.model_type)
    if cls is not None:
        return cls(config)
    return AutoModel.from_config(config)


def _hf_vision_from_pretrained(name: str, *, dtype: torch.dtype | None = None) -> nn.Module:
    from transformers import CLIPVisionModel, SiglipVisionModel

    model_type = AutoConfig.from_pretrained(name).model_type
    classes = {
        "clip": CLIPVisionModel,
        "clip_vision_model": CLIPVisionModel,
        "siglip": SiglipVisionModel,
        "siglip_vision_model": SiglipVisionModel,
    }
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if model_type in classes:
        return classes[model_type].from_pretrained(name, **kwargs)
    model = AutoModel.from_pretrained(name, **kwargs)
    return getattr(model, "vision_model", model)


def _timm_create(name: str, *, pretrained: bool) -> nn.Module:
    try:
        import timm
    except ImportError as err:  # optional extra
        raise ImportError(
            f"vision encoder {TIMM_PREFIX}{name} needs timm: pip install 'flamboyance[timm]'"
        ) from err
    return timm.create_model(name, pretrained=pretrained, num_classes=0)


class VisionEncoder(nn.Module):
    """Pixels (N, C, H, W) -> patch features (N, patches, dim); frozen, eval mode, no_grad."""

    def __init__(self, *, tower: nn.Module, kind: str, frozen: bool = True) -> None:
        super().__init__()
        if kind not in ("hf", "timm"):
            raise ValueError(f"VisionEncoder kind must be 'hf' or 'timm', got {kind!r}")
        self.tower = tower
        self.kind = kind
        self.frozen = frozen
        if frozen:
            self.tower.requires_grad_(False)
            self.tower.eval()

    @classmethod
    def build(
        cls,
        spec: str | PretrainedConfig,
        *,
        pretrained: bool = True,
        frozen: bool = True,
        dtype: torch.dtype | None = None,
        weights: bool = True,
    ) -> VisionEncoder:
        """From a name/path, a transformers config (random init) or ``"timm:<name>"``, with its
        weights in ``dtype`` (None: as built). ``weights=False`` (HF towers): only the architecture,
        read from the name/path's config (the caller loads the weights)."""
        if isinstance(spec, str) and spec.startswith(TIMM_PREFIX):
            tower = _timm_create(spec[len(TIMM_PREFIX) :], pretrained=pretrained)
            return cls(tower=tower.to(dtype) if dtype is not None else tower, kind="timm", frozen=frozen)
        if isinstance(spec, PretrainedConfig) or not weights:
            config = spec if isinstance(spec, PretrainedConfig) else AutoConfig.from_pretrained(spec)
            tower = _hf_vision_from_config(config)
            return cls(tower=tower.to(dtype) if dtype is not None else tower, kind="hf", frozen=frozen)
        return cls(tower=_hf_vision_from_pretrained(spec, dtype=dtype), kind="hf", frozen=frozen)

    def train(self, mode: bool = True) -> VisionEncoder:
        super().train(mode)
        if self.frozen:
            self.tower.eval()  # a frozen tower never runs dropout / batch-norm updates
        return self

    @property
    def dim(self) -> int:
        """Feature dimension of the patch features."""
        if self.kind == "timm":
            return int(self.tower.num_features)
        return int(self.tower.config.hidden_size)

    @property
    def image_size(self) -> int:
        """Input resolution the tower expects."""
        if self.kind == "timm":
            return int(self.tower.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        return int(self.tower.config.image_size)

    def default_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The normalisation the tower family was trained with."""
        if self.kind == "timm":
            cfg = self.tower.pretrained_cfg
            return tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))
        if "siglip" in self.tower.config.model_type:
            return SIGLIP_MEAN, SIGLIP_STD
        return CLIP_MEAN, CLIP_STD

    def _features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch features (N, P, D), pooled (N, D))."""
        dtype = next(self.tower.parameters()).dtype
        pixels = pixels.to(dtype)
        if self.kind == "timm":
            feats = self.tower.forward_features(pixels)
            if feats.dim() == 4:  # conv nets (NFNet): (N, C, h, w) -> (N, h*w, C)
                feats = feats.flatten(2).transpose(1, 2)
            return feats, feats.mean(dim=1)
        out = self.tower(pixel_values=pixels)
        feats = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        return feats, pooled if pooled is not None else feats.mean(dim=1)

    def forward(
        self,
        pixels: torch.Tensor,  # (N, C, H, W)
    ) -> torch.Tensor:  # (N, patches, dim)
        if self.frozen:
            with torch.no_grad():
                return self._features(pixels)[0].detach()
        return self._features(pixels)[0]

    @torch.no_grad()
    def pooled(
        self,
        pixels: torch.Tensor,  # (N, C, H, W)
    ) -> torch.Tensor:  # (N, dim)
        """One pooled feature vector per image (CLIP/SigLIP pooler output, else mean of patches)."""
        return self._features(pixels)[1]


class ImageTransform:
    """PIL image -> normalised float tensor (C, H, W): resize the shorter side to ``size`` (bicubic),
    centre-crop to size x size, scale to [0, 1], subtract mean, divide by std. Plain PIL + numpy."""

    def __init__(self, *, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:  # (3, size, size) float32
        if not isinstance(image, Image.Image):
            raise TypeError(f"image_transform expects a PIL.Image, got {type(image).__name__}")
        image = image.convert("RGB")
        width, height = image.size
        scale = self.size / min(width, height)
        new_w, new_h = max(self.size, round(width * scale)), max(self.size, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
        tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        return (tensor - self.mean) / self.std

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.size}, mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def state_dict_any(module: nn.Module) -> dict[str, Any]:
    """Contiguous CPU copies of a module's tensors, safe for safetensors (no shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
