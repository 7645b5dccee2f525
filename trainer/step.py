"""One optimizer step over several sources (FL): for every source m, forward and backward of
lambda_m * loss_m, gradients accumulated (``no_sync`` on all but the last backward), clipped
once, ONE AdamW step, one scheduler step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from flamboyance.trainer.config import OptimConfig
from flamboyance.trainer.parallel import clean_name, no_sync
from torch import nn


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step measured (losses unweighted, detached)."""

    losses: dict[str, torch.Tensor]
    grad_norm: float


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean next-token loss of one batch (labels -100 ignored)."""
    out = model(
        input_ids=batch["input_ids"],  # (B, T) int64
        attention_mask=batch["attention_mask"],  # (B, T)
        media=batch["media"],  # (B, M, F, C, H, W)
        labels=batch["labels"],  # (B, T)
    )
    return out.loss


def accumulate_gradients(
    model: nn.Module,
    batches: dict[str, dict[str, torch.Tensor]],
    weights: dict[str, float],
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    """Backward of ``weights[m] * loss_m`` for every source in order, summing into ``.grad``; the
    gradient all-reduce runs only with the last backward. Returns the unweighted losses."""
    losses: dict[str, torch.Tensor] = {}
    names = list(batches)
    for i, name in enumerate(names):
        sync = contextlib.nullcontext() if i == len(names) - 1 else no_sync(model)
        with sync:
            with autocast():
                loss = forward_loss(model, batches[name])
            (loss * weights[name]).backward()
        losses[name] = loss.detach().float()
    return losses


def clip_gradients(parameters: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm once (max_norm <= 0: only measure it); returns the norm
    before clipping."""
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # DTensor under FSDP
        norm = norm.full_tensor()
    return float(norm)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: dict[str, dict[str, torch.Tensor]],
    weights: dict[str, float],
    *,
    grad_clip: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> StepResult:
    """Accumulate every source's weighted gradient, clip once, then one optimizer and scheduler step."""
    optimizer.zero_grad(set_to_none=True)
    losses = accumulate_gradients(model, batches, weights, autocast=autocast)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = clip_gradients(parameters, grad_clip)
    optimizer.step()
    scheduler.step()
    return StepResult(losses=losses, grad_norm=grad_norm)


def build_optimizer(
    model: nn.Module, trainable: set[str], cfg: OptimConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters (weight decay only where the name matches
    ``cfg.decay_patterns``, i.e. the xattn blocks) and a linear-warmup-then-constant schedule."""
    decay, no_decay = [], []
    found = set()
    for name, param in model.named_parameters():
        name = clean_name(name)
        name = name.removeprefix("module.")
        if name not in trainable:
            continue
        found.add(name)
        (decay if any(p in name for p in cfg.decay_patterns) else no_decay).append(param)
    missing = trainable - found
    if missing:
        raise ValueError(f"trainable parameters not found in the wrapped model: {sorted(missing)[:5]}")
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps
    )
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:  # step = optimizer steps taken so far
        return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


__all__ = ["StepResult", "accumulate_gradients", "build_optimizer", "clip_gradients", "forward_loss", "train_step"]
