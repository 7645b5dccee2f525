"""Perceiver Resampler: a variable number of patch features -> a fixed number of visual tokens.

Learned latents cross-attend to [media features ; latents] (FL eq. in appendix A.1.1); a learned
time embedding per frame is added before the frames are flattened, so video works the same way.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from flamboyance.model.layers import FeedForward
from torch import nn


class PerceiverAttention(nn.Module):
    """Latents attend to the concatenation of media features and themselves."""

    def __init__(self, *, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = head_dim**-0.5
        inner = heads * head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(
        self,
        features: torch.Tensor,  # (batch, tokens, dim)
        latents: torch.Tensor,  # (batch, latents, dim)
    ) -> torch.Tensor:  # (batch, latents, dim)
        features = self.norm_media(features)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        out = rearrange(attn @ v, "b h n d -> b n (h d)")
        return self.to_out(out)


class PerceiverResampler(nn.Module):
    """(batch, frames, patches, dim) features -> (batch, num_latents, dim) visual tokens."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int = 6,
        heads: int = 8,
        head_dim: int = 64,
        num_latents: int = 64,
        max_frames: int = 8,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.frame_embeddings = nn.Parameter(torch.randn(max_frames, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(dim=dim, heads=heads, head_dim=head_dim),
                    FeedForward(dim=dim, mult=ff_mult),
                ]
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def max_frames(self) -> int:
        return self.frame_embeddings.shape[0]

    def forward(
        self,
        features: torch.Tensor,  # (batch, frames, patches, dim)
    ) -> torch.Tensor:  # (batch, num_latents, dim)
        batch, frames = features.shape[:2]
        if frames > self.max_frames:
            raise ValueError(
                f"PerceiverResampler got {frames} frames per medium but max_frames is {self.max_frames}; "
                "raise FlamingoConfig.max_frames or sample fewer frames"
            )
        features = features + self.frame_embeddings[:frames, None, :].to(features.dtype)
        features = rearrange(features, "b f p d -> b (f p) d")
        latents = repeat(self.latents, "n d -> b n d", b=batch).to(features.dtype)
        for attn, ff in self.layers:
            latents = latents + attn(features, latents)
            latents = latents + ff(latents)
        return self.norm(latents)
