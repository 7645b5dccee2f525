"""Small building blocks shared by the resampler and the cross-attention blocks."""

from __future__ import annotations

import torch
from torch import nn


class SquaredReLU(nn.Module):
    """relu(x)^2, the activation of the Flamingo paper's FFNs (from Primer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) ** 2


class FeedForward(nn.Sequential):
    """Pre-norm FFN: LayerNorm -> Linear(dim, dim * mult) -> squared ReLU -> Linear back."""

    def __init__(self, *, dim: int, mult: int = 4) -> None:
        inner = dim * mult
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, inner, bias=False),
            SquaredReLU(),
            nn.Linear(inner, dim, bias=False),
        )
