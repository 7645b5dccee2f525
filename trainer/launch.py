"""Launching a run: prepare the run folder on the driver, then run the per-worker loop under Ray
Train's TorchTrainer (DDP/FSDP over gloo or NCCL, checkpoints through ``ray.train.report``,
automatic restarts from the latest checkpoint) or, with ``ray.enabled=false``, in this process.

Ray joins an existing cluster when ``ray.address`` or ``RAY_ADDRESS`` is set and otherwise starts
a local instance. Checkpoints live in ``<run_dir>/ray/`` (Ray's storage); running the same config
again resumes from the latest complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from flamboyance.trainer.build import prepare_run
from flamboyance.trainer.checkpoint import META_NAME
from flamboyance.trainer.config import TrainConfig
from flamboyance.trainer.loop import train_loop

RAY_STORAGE_DIR = "ray"
RAY_RUN_NAME = "train"


class RayContext:
    """The loop's view of a Ray Train worker.

    Ray registers a reported checkpoint when its controller next polls the workers (every couple
    of seconds); a worker dying in between loses that registration although the files are all
    persisted. So after every report (and a barrier: each rank's upload has returned) rank 0 marks
    the persisted folder ``COMMITTED``, and a (re)started worker resumes from the newer of Ray's
    latest checkpoint and the newest committed folder in the run's storage.
    """

    def __init__(self, storage_dir: Path) -> None:
        import ray.train

        self._train = ray.train
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.storage_dir = storage_dir

    def device(self, use_gpu: bool) -> torch.device:
        if not use_gpu:
            return torch.device("cpu")
        from ray.train.torch import get_device

        return get_device()

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        committed = _newest_committed(self.storage_dir)
        checkpoint = self._train.get_checkpoint()
        if checkpoint is None:
            yield committed
            return
        with checkpoint.as_directory() as directory:
            directory = Path(directory)
            if committed is not None and _checkpoint_step(committed) > _checkpoint_step(directory):
                yield committed
            else:
                yield directory

    def new_checkpoint_dir(self, step: int) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"flamboyance-step{step}-rank{self.rank}-"))

    def report(self, metrics: dict[str, Any], *, step: int, checkpoint_dir: Path | None) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = self._train.Checkpoint.from_directory(str(checkpoint_dir))
        name = f"step_{step:08d}"
        # every rank reports; Ray merges the ranks' files into one persisted folder
        self._train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        if checkpoint_dir is None:
            return
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's upload has returned
        persisted = self.storage_dir / name
        if self.rank == 0 and (persisted / META_NAME).exists():
            (persisted / COMMITTED_NAME).write_text(f"{step}\n")


COMMITTED_NAME = "COMMITTED"


def _checkpoint_step(directory: Path) -> int:
    return int(json.loads((directory / META_NAME).read_text())["step"])


def _newest_committed(storage_dir: Path) -> Path | None:
    """The newest checkpoint folder under Ray's storage that rank 0 marked committed."""
    if not storage_dir.is_dir():
        return None
    done = [p for p in storage_dir.glob("step_*") if (p / COMMITTED_NAME).exists() and (p / META_NAME).exists()]
    return max(done, key=_checkpoint_step, default=None)


def ray_storage_dir(cfg: TrainConfig) -> Path:
    """Where Ray persists this run's checkpoints: ``<run_dir>/ray/train``."""
    return Path(cfg.run_dir) / RAY_STORAGE_DIR / RAY_RUN_NAME


def ray_worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``."""
    cfg = TrainConfig.from_dict(config)
    train_loop(cfg, context=RayContext(ray_storage_dir(cfg)))


def _init_ray(cfg: TrainConfig) -> bool:
    """Connect to / start Ray unless already connected; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(
            num_cpus=cfg.ray.num_cpus,
            object_store_memory=cfg.ray.object_store_memory,
            include_dashboard=False,
        )
    return True


def fit_with_ray(cfg: TrainConfig) -> Any:
    """Run ``cfg`` (already resolved and prepared) with a TorchTrainer; returns Ray's Result."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    started = _init_ray(cfg)
    try:
        trainer = TorchTrainer(
            ray_worker_loop,
            train_loop_config=cfg.to_dict(),
            torch_config=TorchConfig(backend="nccl" if cfg.parallel.use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.parallel.num_workers,
                use_gpu=cfg.parallel.use_gpu,
                resources_per_worker={"CPU": cfg.parallel.cpus_per_worker},
            ),
            run_config=ray.train.RunConfig(
                name=RAY_RUN_NAME,
                storage_path=str(Path(cfg.run_dir) / RAY_STORAGE_DIR),
                failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            ),
        )
        return trainer.fit()
    finally:
        if started:
            ray.shutdown()


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a training job end to end: resolve paths, write ``init/``, train (Ray or in-process),
    leave ``final/``, metrics.jsonl, TensorBoard events and gates.png in the run folder.
    Returns the last step's metrics."""
    cfg = cfg.resolved()
    prepare_run(cfg)
    if not cfg.ray.enabled:
        return train_loop(cfg)
    result = fit_with_ray(cfg)
    return dict(result.metrics or {})


__all__ = ["RayContext", "fit_with_ray", "ray_storage_dir", "ray_worker_loop", "train"]
