"""Launching a run: prepare the run folder on the driver, then run the per-worker loop under Ray
Train's TorchTrainer (DDP/FSDP over gloo or NCCL, checkpoints through ``ray.train.report``,
automatic restarts from the latest checkpoint) or, with ``ray.enabled=false``, in this process.

Ray joins an existing cluster when ``ray.address`` or ``RAY_ADDRESS`` is set and otherwise starts
a local instance. Checkpoints live in ``<run_dir>/ray/`` (Ray's storage); running the same config
again resumes from the latest complete one. ``run_dir`` may be on object storage
(``s3://bucket/run``): Ray persists checkpoints there directly (``storage_filesystem``), the
workers copy init/ from it and rank 0 copies its logs and final/ back (``trainer.storage``).
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
from flamboyance.trainer.storage import RunStore, is_remote

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

    def __init__(self, store: RunStore) -> None:
        import ray.train

        self._train = ray.train
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.store = store

    def device(self, use_gpu: bool) -> torch.device:
        if not use_gpu:
            return torch.device("cpu")
        from ray.train.torch import get_device

        return get_device()

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        committed = _newest_committed(self.store)
        checkpoint = self._train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                directory = Path(directory)
                if committed is None or committed[0] <= _checkpoint_step(directory):
                    yield directory
                    return
        if committed is None:
            yield None
            return
        relative = f"{RAY_CHECKPOINTS}/{committed[1]}"
        self.store.pull(relative)  # a no-op for a local run_dir
        yield self.store.local / relative

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
        persisted = f"{RAY_CHECKPOINTS}/{name}"
        if self.rank == 0 and self.store.exists(f"{persisted}/{META_NAME}"):
            self.store.write_text(f"{persisted}/{COMMITTED_NAME}", f"{step}\n")


COMMITTED_NAME = "COMMITTED"
RAY_CHECKPOINTS = f"{RAY_STORAGE_DIR}/{RAY_RUN_NAME}"
"""Ray's checkpoint folders, relative to the run folder."""


def _checkpoint_step(directory: Path) -> int:
    return int(json.loads((directory / META_NAME).read_text())["step"])


def _newest_committed(store: RunStore) -> tuple[int, str] | None:
    """(step, folder name) of the newest checkpoint under Ray's storage that rank 0 marked
    committed."""
    done = []
    for name in store.folders(RAY_CHECKPOINTS):
        folder = f"{RAY_CHECKPOINTS}/{name}"
        if name.startswith("step_") and store.exists(f"{folder}/{COMMITTED_NAME}") and store.exists(
            f"{folder}/{META_NAME}"
        ):
            done.append((int(json.loads(store.read_text(f"{folder}/{META_NAME}"))["step"]), name))
    return max(done, default=None)


def ray_storage_dir(cfg: TrainConfig) -> Path:
    """Where Ray persists this run's checkpoints: ``<run_dir>/ray/train`` (a local run_dir)."""
    return Path(cfg.run_dir) / RAY_STORAGE_DIR / RAY_RUN_NAME


def ray_worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``."""
    cfg = TrainConfig.from_dict(config)
    store = RunStore(cfg.run_dir, cfg.storage)
    try:
        train_loop(cfg, context=RayContext(store))
    finally:
        store.close()


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
    store = RunStore(cfg.run_dir, cfg.storage)
    store.close()  # the driver needs only the filesystem
    storage = {"storage_path": str(Path(cfg.run_dir) / RAY_STORAGE_DIR)}
    if store.remote:
        storage = {"storage_path": store.path(RAY_STORAGE_DIR), "storage_filesystem": store.filesystem}
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
                **storage,
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
    if is_remote(cfg.run_dir) and not cfg.ray.enabled:
        raise ValueError(f"run_dir={cfg.run_dir} is on object storage: it needs ray.enabled=true "
                         f"(Ray Train persists the checkpoints there)")
    prepare_run(cfg)
    if not cfg.ray.enabled:
        return train_loop(cfg)
    result = fit_with_ray(cfg)
    return dict(result.metrics or {})


__all__ = ["RayContext", "fit_with_ray", "ray_storage_dir", "ray_worker_loop", "train"]
