"""One optimizer step over several sources (FL): for every source m, forward and backward of
lambda_m * loss_m, gradients accumulated (``no_sync`` on all but the last backward), clipped
once, ONE AdamW step, one scheduler step.

A batch without any target is refused before its forward, and a non-finite loss or gradient
norm before the optimizer step (the norm is of the all-reduced gradients, so every rank sees the
same value and stops together): the weights a checkpoint could save are never corrupted."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from flamboyance.trainer.collate import IGNORE_INDEX
from flamboyance.trainer.config import OptimConfig
from flamboyance.trainer.parallel import clean_name, no_sync
from torch import nn


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step measured (losses unweighted, detached)."""

    losses: dict[str, torch.Tensor]
    grad_norm: float
    lr: float
    """The learning rate this step applied (of the first parameter group)."""


def check_targets(name: str, batch: dict[str, torch.Tensor]) -> None:
    """Raise when no label of ``batch`` is a target (its mean loss would be NaN). The collators
    reject such samples, so this only fires on a batch built elsewhere."""
    labels = batch["labels"]  # (B, T); the first position is never a target
    if not bool((labels[:, 1:] != IGNORE_INDEX).any()):
        raise ValueError(
            f"source {name!r}: every label of the batch is ignored ({tuple(labels.shape)}); reject such "
            f"samples in the data (trainer.collate rejects them as 'no_labels')"
        )


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
    for name, batch in batches.items():
        check_targets(name, batch)
    optimizer.zero_grad(set_to_none=True)
    losses = accumulate_gradients(model, batches, weights, autocast=autocast)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = clip_gradients(parameters, grad_clip)
    if not math.isfinite(grad_norm) or not all(bool(torch.isfinite(v)) for v in losses.values()):
        optimizer.zero_grad(set_to_none=True)
        raise FloatingPointError(
            f"non-finite loss or gradient norm before the optimizer step (losses "
            f"{ {k: float(v) for k, v in losses.items()} }, grad norm {grad_norm}); no weight was changed"
        )
    lr = float(optimizer.param_groups[0]["lr"])  # what this step applies; the scheduler moves on next
    optimizer.step()
    scheduler.step()
    return StepResult(losses=losses, grad_norm=grad_norm, lr=lr)


def build_optimizer(
    model: nn.Module, trainable: set[str], cfg: OptimConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and a linear-warmup-then-constant schedule.

    Weight decay only on weight matrices (``nn.Linear`` weights) inside the modules named by
    ``cfg.decay_patterns`` (xattn blocks and resampler); never on tanh gates, norms, biases,
    latents, time embeddings or token embedding rows (decay would pull the gates back to 0)."""
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    decay, no_decay = [], []
    found = set()
    for name, param in model.named_parameters():
        name = clean_name(name)
        name = name.removeprefix("module.")
        if name not in trainable:
            continue
        found.add(name)
        decayed = id(param) in matrices and any(p in name for p in cfg.decay_patterns)
        (decay if decayed else no_decay).append(param)
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


__all__ = [
    "StepResult",
    "accumulate_gradients",
    "build_optimizer",
    "check_targets",
    "clip_gradients",
    "forward_loss",
    "train_step",
]
