"""Parallelism applied from outside the model (torchtitan style): activation checkpointing,
FSDP2 sharding or DDP, bf16 autocast, and the ``no_sync`` of gradient accumulation.

Under FSDP a worker never holds the whole model: it builds it with every parameter on the meta
device, shards it, allocates only its own shard and reads just those rows from the weight files
(``load_model``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

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


def shard(model: nn.Module, cfg: ParallelConfig) -> nn.Module:
    """FSDP2 ``fully_shard`` on every module whose class is in ``cfg.fsdp_classes`` (innermost
    first), then on the root; with bf16 precision, parameters are all-gathered in bf16 and
    gradients reduced in fp32. Works on a model whose parameters are on the meta device."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if cfg.precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    names = set(cfg.fsdp_classes)
    for module in reversed(list(model.modules())):
        if type(module).__name__ in names:
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def parallelize(
    model: nn.Module, cfg: ParallelConfig, *, device: torch.device, world_size: int
) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it for ``world_size`` data-parallel workers.

    fsdp: ``shard`` (a model that fits one worker; ``load_model`` never builds it whole);
    ddp: ``DistributedDataParallel`` when world_size > 1; one worker: unchanged.
    """
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model, cfg.checkpoint_classes)
    model.to(device)
    if cfg.strategy == "fsdp":
        return shard(model, cfg)
    if world_size > 1:
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
        )
    return model


def load_model(
    directory: str | os.PathLike, cfg: ParallelConfig, *, device: torch.device, world_size: int
) -> tuple[nn.Module, nn.Module]:
    """The ``Flamingo.save_pretrained`` model in ``directory``, ready for this worker:
    ``(parallel model, the Flamingo inside)``.

    fsdp: built with its parameters on the meta device, sharded, then only this rank's shard of
    every weight is allocated on ``device`` and read from the weight files (one weight's shard at a
    time), so a worker holds its shard plus at most one weight block, never the whole model.
    ddp / one worker: loaded whole and wrapped (``parallelize``).
    """
    from flamboyance.model import Flamingo

    if cfg.strategy != "fsdp":
        model = Flamingo.from_pretrained(directory).train()
        return parallelize(model, cfg, device=device, world_size=world_size), model
    model = Flamingo.from_pretrained(directory, empty=True).train()
    on_meta = {clean_name(n) for n, p in model.named_parameters() if p.is_meta}
    buffers = {n: b for n, b in model.named_buffers()}  # real (built on CPU); to_empty drops them
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model, cfg.checkpoint_classes)
    shard(model, cfg)
    real = {clean_name(n): p.detach().clone() for n, p in model.named_parameters() if not p.is_meta}
    model.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[clean_name(name)])
        load_shards(model, Flamingo.weight_files(Path(directory)), on_meta, real)
    return model, model


def load_shards(
    model: nn.Module, files: object, on_meta: set[str], real: dict[str, torch.Tensor]
) -> int:
    """Fill each (sharded) parameter with this rank's block of its weight: read from ``files``
    (a ``model.loading.WeightFiles``) for the names in ``on_meta``, else copied from ``real``
    (weights built whole, sharded copies). Returns the elements read."""
    from torch.distributed.tensor import DTensor

    read = 0
    for name, param in model.named_parameters():
        name = clean_name(name)
        local = param.to_local() if isinstance(param, DTensor) else param
        if local.numel() == 0:
            continue
        offset = (0,) * param.dim()
        if isinstance(param, DTensor):
            from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

            _, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
        if name in on_meta:
            block = files.read(name, offset=tuple(offset), shape=tuple(local.shape))
            read += block.numel()
        else:
            index = tuple(slice(o, o + s) for o, s in zip(offset, local.shape))
            block = real[name][index] if index else real[name]
        local.copy_(block.to(local.dtype))
    return read


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


__all__ = [
    "apply_activation_checkpointing",
    "autocast",
    "clean_name",
    "load_model",
    "load_shards",
    "no_sync",
    "parallelize",
    "shard",
    "unwrap",
]
