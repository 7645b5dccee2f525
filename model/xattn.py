"""Gated XATTN-Dense blocks and the per-image causal mask that decides what each token sees.

A block runs *before* a frozen decoder layer: masked cross-attention from text to visual tokens,
then an FFN, each scaled by tanh(gate) with the gates initialised at 0, so a fresh model computes
exactly what the frozen LM computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from flamboyance.model.layers import FeedForward
from torch import nn


@dataclass(frozen=True)
class MediaContext:
    """What the cross-attention blocks of one forward call need, passed down explicitly."""

    visual_tokens: torch.Tensor  # (batch, media, latents, dim_visual); zeros in padded slots
    media_mask: torch.Tensor  # (batch, tokens, media) bool: token t may attend to medium m


def media_attention_mask(
    input_ids: torch.Tensor,  # (batch, tokens) int64
    *,
    image_token_id: int,
    num_media: int,
    attention_mask: torch.Tensor | None = None,  # (batch, tokens) 1 = real token
    segment_ids: torch.Tensor | None = None,  # (batch, tokens) document index within a packed row
    only_attend_immediate_media: bool = True,
) -> torch.Tensor:  # (batch, tokens, media) bool
    """Which media slot each text token may attend to.

    The k-th ``<image>`` token of a row stands for media slot k. A token sees the latest image at or
    before it (or, with ``only_attend_immediate_media=False``, every image at or before it) of its
    own document; tokens before the first image, padding tokens, and tokens whose image has no slot
    (more ``<image>`` tokens than media) see nothing. With ``segment_ids`` (packed rows), an image
    of another document is never visible.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    is_image = input_ids == image_token_id  # (b, t)
    image_index = is_image.long().cumsum(dim=1) - 1  # (b, t): index of the latest image, -1 none
    slots = torch.arange(num_media, device=input_ids.device)  # (m,)
    if only_attend_immediate_media:
        allowed = image_index[..., None] == slots  # (b, t, m)
    else:
        allowed = slots <= image_index[..., None]
    if segment_ids is not None:
        if segment_ids.shape != input_ids.shape:
            raise ValueError(
                f"segment_ids shape {tuple(segment_ids.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        # segment of the document each media slot's <image> token sits in (-1: no such token)
        image_segment = torch.full(
            (input_ids.shape[0], num_media + 1), -1, dtype=segment_ids.dtype, device=input_ids.device
        )
        slot_of_token = torch.where(is_image, image_index.clamp(max=num_media), num_media)
        image_segment.scatter_(1, slot_of_token, torch.where(is_image, segment_ids, -1))
        allowed = allowed & (image_segment[:, None, :num_media] == segment_ids[..., None])
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[..., None]
    return allowed


class MaskedCrossAttention(nn.Module):
    """Text queries attend to the visual tokens of the media their mask allows."""

    def __init__(self, *, dim: int, dim_visual: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = head_dim**-0.5
        inner = heads * head_dim
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # (batch, tokens, dim)
        visual_tokens: torch.Tensor,  # (batch, media, latents, dim_visual)
        media_mask: torch.Tensor,  # (batch, tokens, media) bool
    ) -> torch.Tensor:  # (batch, tokens, dim)
        latents = visual_tokens.shape[2]
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(rearrange(visual_tokens, "b m n d -> b (m n) d").to(q.dtype)).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        sim = q @ k.transpose(-1, -2) * self.scale  # (b, h, t, m*n)
        key_mask = repeat(media_mask, "b t m -> b 1 t (m n)", n=latents)
        # A finite fill (not -inf) keeps fully masked rows finite; their output is zeroed below,
        # because a uniform softmax over all images would leak them.
        sim = sim.masked_fill(~key_mask, torch.finfo(sim.dtype).min)
        attn = sim.softmax(dim=-1)
        out = rearrange(attn @ v, "b h t d -> b t (h d)")
        sees_media = media_mask.any(dim=-1, keepdim=True)  # (b, t, 1)
        return self.to_out(out) * sees_media.to(out.dtype)


class GatedCrossAttentionBlock(nn.Module):
    """x -> x + tanh(a) * xattn(x, media) -> x + tanh(b) * ffn(x), with a = b = 0 at init.

    With a relative stream (``add_relative_stream``; ``FlamingoConfig.relative_media``) the visual
    tokens hold two halves per medium, the paper's then the relative ones, and a second masked
    cross-attention with its own gate (0 at init) reads the second half:
    x -> x + tanh(a) * xattn(x, paper's) + tanh(r) * xattn_r(x, relative) -> FFN as above."""

    def __init__(self, *, dim: int, dim_visual: int, heads: int = 8, head_dim: int = 64, ff_mult: int = 4):
        super().__init__()
        self.attn = MaskedCrossAttention(dim=dim, dim_visual=dim_visual, heads=heads, head_dim=head_dim)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = FeedForward(dim=dim, mult=ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(1))
        self.relative_attn: MaskedCrossAttention | None = None
        self.relative_gate: nn.Parameter | None = None

    def add_relative_stream(self, *, gate: float = 0.0) -> None:
        """The second cross-attention (fresh weights) and its gate (pre-tanh ``gate``; at 0 a
        fresh block still computes exactly what it computed without it)."""
        first = self.attn
        self.relative_attn = MaskedCrossAttention(
            dim=first.to_q.in_features,
            dim_visual=first.to_kv.in_features,
            heads=first.heads,
            head_dim=first.to_q.out_features // first.heads,
        ).to(first.to_q.weight.device)
        self.relative_gate = nn.Parameter(torch.full((1,), float(gate), device=first.to_q.weight.device))

    def forward(
        self,
        x: torch.Tensor,  # (batch, tokens, dim)
        context: MediaContext,
    ) -> torch.Tensor:  # (batch, tokens, dim)
        visual = context.visual_tokens
        if self.relative_attn is not None:
            visual, relative = visual.chunk(2, dim=2)
            out = self.relative_attn(x, relative, context.media_mask) * self.relative_gate.tanh().to(x.dtype)
            x = x + self.attn(x, visual, context.media_mask) * self.attn_gate.tanh().to(x.dtype) + out
        else:
            x = x + self.attn(x, visual, context.media_mask) * self.attn_gate.tanh().to(x.dtype)
        x = x + self.ff(x) * self.ff_gate.tanh().to(x.dtype)
        return x
