"""Checkpoint contents: trainable weights, optimizer, scheduler, step, RNG states and every
source's stream position, written as one folder.

Layout: ``state/`` (torch.distributed.checkpoint: the trainable weights and their optimizer
state, each rank writing its own shards, nothing gathered; frozen weights are never part of a
checkpoint), ``train_state.pt`` (rank 0: scheduler, step), ``rank_00000.pt`` ... (each rank: RNG
states and its data positions) and ``meta.json`` (rank 0, written last). DCP reshards on load, so
the same files load under DDP, FSDP or one process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from flamboyance.trainer.parallel import clean_name
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

META_NAME = "meta.json"
TRAIN_STATE_NAME = "train_state.pt"
SHARDED_STATE_DIR = "state"


def rank_file(rank: int) -> str:
    """File name of one rank's RNG and data state."""
    return f"rank_{rank:05d}.pt"


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def trainable_state_dict(model: nn.Module, trainable: set[str]) -> dict[str, torch.Tensor]:
    """Full CPU copies of the trainable weights on rank 0 (other ranks get {}). Only trainable
    weights are gathered (one all-gather each under FSDP): a collective, call it on every rank."""
    from torch.distributed.tensor import DTensor

    rank = torch.distributed.get_rank() if _distributed() else 0
    out: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        name = clean_name(name).removeprefix("module.")
        if name not in trainable:
            continue
        tensor = param.detach()
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        if rank == 0:
            out[name] = tensor.cpu().clone()
    missing = trainable - set(out)
    if missing and rank == 0:
        raise KeyError(f"trainable weights missing from the model state: {sorted(missing)[:5]}")
    return out


def sharded_train_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, trainable: set[str]
) -> dict[str, Any]:
    """This rank's part of the trainable weights and the optimizer state, as they sit (FSDP:
    DTensor shards; DDP / one process: plain tensors), for torch.distributed.checkpoint. Nothing
    is gathered or copied; frozen weights are left out."""
    options = StateDictOptions(full_state_dict=False)
    weights = {
        k: v for k, v in get_model_state_dict(model, options=options).items() if clean_name(k) in trainable
    }
    return {"model": weights, "optimizer": get_optimizer_state_dict(model, optimizer, options=options)}


def state_elements(state: Any) -> int:
    """Tensor elements held by this rank in a (nested) state dict (DTensors: the local shard)."""
    from torch.distributed.tensor import DTensor

    if isinstance(state, dict):
        return sum(state_elements(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(state_elements(v) for v in state)
    if isinstance(state, DTensor):
        return state.to_local().numel()
    if isinstance(state, torch.Tensor):
        return state.numel()
    return 0


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainable: set[str],
    step: int,
    rank: int,
    world_size: int,
    data_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write this rank's part of a checkpoint into ``directory`` (every rank must call it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dcp.save(sharded_train_state(model, optimizer, trainable), checkpoint_id=directory / SHARDED_STATE_DIR)
    torch.save({"rng": rng_state(), "data": data_state}, directory / rank_file(rank))
    if rank == 0:
        torch.save({"scheduler": scheduler.state_dict(), "step": step}, directory / TRAIN_STATE_NAME)
        meta = {"step": step, "world_size": world_size, **(extra or {})}
        (directory / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainable: set[str],
    rank: int,
    world_size: int,
) -> tuple[int, dict[str, Any]]:
    """Restore weights, optimizer, scheduler and this rank's RNG; returns (step, data_state)."""
    directory = Path(directory)
    meta_path = directory / META_NAME
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no {META_NAME})")
    meta = json.loads(meta_path.read_text())
    if meta["world_size"] != world_size:
        raise ValueError(
            f"checkpoint {directory} was written by {meta['world_size']} workers, this run has {world_size}: "
            f"the data order can only be continued with the same number of workers"
        )
    sharded = sharded_train_state(model, optimizer, trainable)
    dcp.load(sharded, checkpoint_id=directory / SHARDED_STATE_DIR)  # in place, each rank its shards
    set_model_state_dict(model, sharded["model"], options=StateDictOptions(strict=False))
    set_optimizer_state_dict(model, optimizer, sharded["optimizer"])
    state = torch.load(directory / TRAIN_STATE_NAME, map_location="cpu", weights_only=False)
    scheduler.load_state_dict(state["scheduler"])
    own = torch.load(directory / rank_file(rank), map_location="cpu", weights_only=False)
    set_rng_state(own["rng"])
    return int(state["step"]), own["data"]


def latest_local_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder ``root/step_NNNNNNNN`` (has meta.json), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if (p / META_NAME).exists() and p.name[5:].isdigit()]
    return max(done, key=lambda p: int(p.name[5:]), default=None)


def prune_local_checkpoints(root: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints under ``root`` and stale temp folders."""
    root = Path(root)
    done = sorted(
        (p for p in root.glob("step_*") if (p / META_NAME).exists() and p.name[5:].isdigit()),
        key=lambda p: int(p.name[5:]),
    )
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "latest_local_checkpoint",
    "load_checkpoint",
    "prune_local_checkpoints",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "sharded_train_state",
    "state_elements",
    "trainable_state_dict",
]
