"""Parallelism applied from outside the model (torchtitan style): activation checkpointing,
FSDP2 sharding or DDP, bf16 autocast, and the ``no_sync`` of gradient accumulation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from flamboyance.trainer.config import ParallelConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

CHECKPOINT_WRAPPER_PREFIX = "_checkpoint_wrapped_module."


def apply_activation_checkpointing(model: nn.Module, class_names: list[str]) -> int:
    """Wrap every submodule whose class name is listed so its activations are recomputed in the
    backward (non-reentrant checkpointing); returns how many were wrapped.

    Only modules called through their parent's ``forward`` are affected: the LM decoder layers
    (the gated blocks run inside their layer's pre-hook, so they are recomputed with it).
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        checkpoint_wrapper,
    )
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing as _apply,
    )

    names = set(class_names)
    wrapped = [m for m in model.modules() if type(m).__name__ in names]
    _apply(
        model,
        checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: type(m).__name__ in names,
    )
    return len(wrapped)


def parallelize(
    model: nn.Module, cfg: ParallelConfig, *, device: torch.device, world_size: int
) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it for ``world_size`` data-parallel workers.

    fsdp: ``fully_shard`` on every module whose class is in ``cfg.fsdp_classes`` (innermost first),
    then on the root; ddp: ``DistributedDataParallel`` when world_size > 1; one worker: unchanged.
    """
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model, cfg.checkpoint_classes)
    model.to(device)
    if cfg.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        names = set(cfg.fsdp_classes)
        for module in reversed(list(model.modules())):
            if type(module).__name__ in names:
                fully_shard(module)
        fully_shard(model)
        return model
    if world_size > 1:
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
        )
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user model inside a DDP wrapper (FSDP2 keeps the module itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def clean_name(name: str) -> str:
    """A parameter name without wrapper prefixes (DDP ``module.``, checkpoint wrappers)."""
    name = name.replace(CHECKPOINT_WRAPPER_PREFIX, "")
    return name


@contextlib.contextmanager
def no_sync(model: nn.Module) -> Iterator[None]:
    """Skip the gradient all-reduce of the backward inside (DDP ``no_sync``; FSDP2
    ``set_requires_gradient_sync(False)``); a no-op for a single worker."""
    if isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
        return
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
        return
    yield


def autocast(cfg: ParallelConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``cfg.precision == 'bf16'``; otherwise nothing."""
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["apply_activation_checkpointing", "autocast", "clean_name", "no_sync", "parallelize", "unwrap"]
