"""The per-worker training loop: a plain function that runs under Ray Train (one call per
worker) or in a single process (``LocalContext``: no Ray, for debugging and exactness tests).

Everything that differs between the two (rank, device, where checkpoints go, how they are
reported) sits behind a small ``WorkerContext``; the loop itself is the same code.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from flamboyance.trainer.build import FINAL_DIR, INIT_DIR
from flamboyance.trainer.checkpoint import (
    latest_local_checkpoint,
    load_checkpoint,
    prune_local_checkpoints,
    save_checkpoint,
    trainable_state_dict,
)
from flamboyance.trainer.collate import build_collator
from flamboyance.trainer.config import FaultConfig, TrainConfig
from flamboyance.trainer.data import SourceLoader, move_batch, start_loaders
from flamboyance.trainer.metrics import (
    EVENTS_NAME,
    GATES_PLOT_NAME,
    METRICS_NAME,
    TENSORBOARD_DIR,
    RunLogger,
    gate_values,
    plot_gates,
)
from flamboyance.trainer.parallel import autocast, clean_name, load_model
from flamboyance.trainer.step import build_optimizer, train_step
from flamboyance.trainer.storage import RunStore

CHECKPOINTS_DIR = "checkpoints"
LOG_FILES = (METRICS_NAME, EVENTS_NAME, TENSORBOARD_DIR)
"""What rank 0 logs into the run folder (pushed to a remote run_dir at every checkpoint)."""


class WorkerContext(Protocol):
    """What the loop needs from its launcher."""

    rank: int
    world_size: int

    def device(self, use_gpu: bool) -> torch.device: ...

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[Path | None]: ...

    def new_checkpoint_dir(self, step: int) -> Path: ...

    def report(self, metrics: dict[str, Any], *, step: int, checkpoint_dir: Path | None) -> None: ...


class LocalContext:
    """One process, no Ray: checkpoints are ``<run_dir>/checkpoints/step_NNNNNNNN`` folders, written
    under a temporary name and renamed when complete."""

    rank = 0
    world_size = 1

    def __init__(self, cfg: TrainConfig) -> None:
        self.root = Path(cfg.run_dir) / CHECKPOINTS_DIR
        self.keep = cfg.checkpoint.keep

    def device(self, use_gpu: bool) -> torch.device:
        return torch.device("cuda" if use_gpu else "cpu")

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        yield latest_local_checkpoint(self.root)

    def new_checkpoint_dir(self, step: int) -> Path:
        tmp = self.root / f".tmp_step_{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def report(self, metrics: dict[str, Any], *, step: int, checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is None:
            return
        final = self.root / f"step_{step:08d}"
        shutil.rmtree(final, ignore_errors=True)
        checkpoint_dir.rename(final)
        prune_local_checkpoints(self.root, self.keep)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def maybe_kill(faults: FaultConfig, *, step: int, rank: int) -> None:
    """Fault injection: SIGKILL this worker before ``faults.kill_at_step`` unless the marker exists."""
    if faults.kill_at_step != step or faults.kill_rank != rank or faults.marker_file is None:
        return
    marker = Path(faults.marker_file)
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"killed rank {rank} before step {step}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _reduce(values: list[float], world_size: int, device: torch.device) -> list[float]:
    """Sum a few floats over all workers (one small all-reduce)."""
    if world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def train_loop(config: TrainConfig | dict[str, Any], *, context: WorkerContext | None = None) -> dict[str, Any]:
    """Train one worker's share of a run from ``<run_dir>/init`` (written by ``prepare_run``),
    resuming from the context's latest checkpoint. Returns the last step's metrics."""

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    context = context or LocalContext(cfg)
    rank, world_size = context.rank, context.world_size
    device = context.device(cfg.parallel.use_gpu)
    _seed_everything(cfg.seed * 1000 + rank)
    own_store = getattr(context, "store", None) is None  # a launcher may share its RunStore
    store = RunStore(cfg.run_dir, cfg.storage) if own_store else context.store
    run_dir = store.local  # the run folder, or this worker's working copy of a remote one
    if not store.pull(INIT_DIR):
        raise FileNotFoundError(f"{cfg.run_dir}: no {INIT_DIR}/ (prepare_run writes it before training)")
    if rank == 0:
        for name in LOG_FILES:  # a restarted attempt continues the run's logs
            store.pull(name)

    model, flamingo = load_model(run_dir / INIT_DIR, cfg.parallel, device=device, world_size=world_size)
    trainable = {clean_name(n) for n, p in flamingo.named_parameters() if p.requires_grad}
    tokenizer, image_transform = flamingo.tokenizer, flamingo.image_transform
    optimizer, scheduler = build_optimizer(model, trainable, cfg.optim)

    start_step, data_state = 0, {}
    with context.latest_checkpoint() as checkpoint:
        if checkpoint is not None:
            start_step, data_state = load_checkpoint(
                checkpoint,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                trainable=trainable,
                rank=rank,
                world_size=world_size,
            )

    sources = cfg.data.sources()
    loaders = {
        name: SourceLoader(
            name=name,
            source=source,
            data=cfg.data,
            collator=build_collator(name, tokenizer=tokenizer, image_transform=image_transform, source=source),
            pad_id=tokenizer.pad_token_id,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
            state=data_state.get(name),
        )
        for name, source in sources.items()
    }
    weights = {name: source.weight for name, source in sources.items()}
    order = list(sources)
    logger = None
    if rank == 0:
        logger = RunLogger(
            run_dir,
            start_step=start_step,
            max_steps=cfg.max_steps,
            tensorboard=cfg.logging.tensorboard,
            progress=cfg.logging.progress,
        )
        logger.event("start", step=start_step, world_size=world_size, max_steps=cfg.max_steps)

    def amp() -> contextlib.AbstractContextManager:
        return autocast(cfg.parallel, device)

    metrics: dict[str, Any] = {}
    try:
        if start_step < cfg.max_steps:
            start_loaders(list(loaders.values()))
        for step in range(start_step + 1, cfg.max_steps + 1):
            maybe_kill(cfg.faults, step=step, rank=rank)
            started = time.perf_counter()
            active = order if cfg.mode == "accumulate" else [order[(step - 1) % len(order)]]
            batches, waited, tokens, samples = {}, 0.0, 0, 0
            for name in active:
                before = time.perf_counter()
                item = loaders[name].next()
                waited += time.perf_counter() - before
                batches[name] = move_batch(item["batch"], device)
                tokens += item["tokens"]
                samples += item["samples"]
            result = train_step(
                model, optimizer, scheduler, batches, weights, grad_clip=cfg.optim.grad_clip, autocast=amp
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - started
            summed = _reduce(
                [float(result.losses[n]) for n in active] + [tokens, samples, waited, elapsed], world_size, device
            )
            losses = {n: summed[i] / world_size for i, n in enumerate(active)}
            tokens_all, samples_all, waited_all, elapsed_all = summed[len(active) :]
            mean_elapsed = elapsed_all / world_size
            metrics = {
                **{f"loss/{n}": v for n, v in losses.items()},
                "loss/weighted": sum(weights[n] * v for n, v in losses.items()),
                "lr": result.lr,  # applied by this step (get_last_lr() is already the next one)
                "grad_norm": result.grad_norm,
                "tokens_per_s": tokens_all / mean_elapsed,
                "samples_per_s": samples_all / mean_elapsed,
                "data_wait_fraction": waited_all / elapsed_all,
                "step_time_s": mean_elapsed,
            }
            if step % cfg.logging.every == 0 or step == cfg.max_steps:
                metrics.update(gate_values(model))
                if logger is not None:
                    counts = {}
                    for name, loader in loaders.items():
                        counts.update({f"{k}/{name}": v for k, v in loader.counts.items()})
                    logger.log(step, {**metrics, **counts})
            if logger is not None:
                logger.advance()
            if step % cfg.checkpoint.every == 0 or step == cfg.max_steps:
                directory = context.new_checkpoint_dir(step)
                save_checkpoint(
                    directory,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    trainable=trainable,
                    step=step,
                    rank=rank,
                    world_size=world_size,
                    data_state={name: loader.state_dict() for name, loader in loaders.items()},
                )
                if logger is not None:
                    logger.flush()
                    for name in LOG_FILES:
                        store.push(name)
                context.report({"step": step, **metrics}, step=step, checkpoint_dir=directory)
        weights_final = trainable_state_dict(model, trainable)  # collective under FSDP
        if rank == 0:
            save_final(run_dir, weights_final)
            plot_gates(run_dir / METRICS_NAME, run_dir / GATES_PLOT_NAME)
            if logger is not None:
                logger.event("end", step=cfg.max_steps)
                logger.close()
                logger = None
            for name in (*LOG_FILES, FINAL_DIR, GATES_PLOT_NAME):
                store.push(name)
    finally:
        for loader in loaders.values():
            loader.close()
        if logger is not None:
            logger.close()
        if own_store:
            store.close()
    return {"step": cfg.max_steps, **metrics}


def save_final(run_dir: Path, weights: dict[str, torch.Tensor]) -> Path:
    """Write the trained model to ``<run_dir>/final`` (save_pretrained of the init model with the
    trained weights; atomic rename)."""
    from flamboyance.model import Flamingo

    model = Flamingo.from_pretrained(run_dir / INIT_DIR)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise KeyError(f"trained weights not in the model: {unexpected[:5]}")
    tmp = run_dir / f".{FINAL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    final = run_dir / FINAL_DIR
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


__all__ = ["CHECKPOINTS_DIR", "LocalContext", "WorkerContext", "maybe_kill", "save_final", "train_loop"]
