"""Streaming readers: one way to open m3w, image_text and video_text shards over fsspec URLs.

`open_dataset(urls)` returns a torch `IterableDataset` of decoded records. Order of one stream
(one rank x one DataLoader worker):

    shard sequence (split by rank, then by worker; or resampled with a per-stream RNG)
      -> tar members grouped by key, validated (bad samples skipped and counted)
      -> shuffle buffer (seeded)          <- the stream position counts samples leaving here
      -> decode (undecodable images skipped and counted) -> records

Bad data never stops the stream: every skipped sample is counted in `dataset.skipped[reason]`,
shard-level problems in `dataset.shard_errors[reason]`, with one warning per shard. Sample counts
are checked against the manifest (or img2dataset's `_stats.json`), so a truncated shard is
reported with the exact number of samples lost.

Resume: the position is the number of samples taken out of the shuffle buffer by one stream,
including any later dropped by decoding. `state_dict()` / `load_state_dict()` (or
`start_index=`) fast-forward a stream to a position without decoding, reproducing the same order
for the same seed, epoch, rank and worker. `dataloader_state(batches, batch_size=, num_workers=)`
gives the state that resumes a multi-worker DataLoader exactly.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .formats import ImageTextSample, M3WSample, VideoTextSample
from .source import (
    DatasetLocation,
    DecodeError,
    RawSample,
    ShardDataWarning,
    ShardRef,
    ShardReport,
    decode_image,
    iter_shard,
    locate,
)

__all__ = ["M3WRecord", "ImageTextRecord", "VideoTextRecord", "ShardDataset", "open_dataset", "locate",
           "decode_image", "ShardDataWarning", "ShardRef", "DatasetLocation", "worker_positions",
           "dataloader_state"]


# --- records ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class M3WRecord:
    """A decoded interleaved document: `images[i]` is the i-th non-null `document["images"]` entry."""

    key: str
    document: dict[str, Any]
    images: list[Image.Image]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageTextRecord:
    """A decoded image-caption pair."""

    key: str
    image: Image.Image
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoTextRecord:
    """Decoded video frames (time order) with caption; metadata has duration/fps/timestamps/url."""

    key: str
    frames: list[Image.Image]
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)


Record = M3WRecord | ImageTextRecord | VideoTextRecord


def _to_sample(kind: str, raw: RawSample) -> M3WSample | ImageTextSample | VideoTextSample:
    p = raw.parsed
    if kind == "m3w":
        return M3WSample(key=raw.key, document=p["document"], images=p["images"])
    if kind == "image_text":
        return ImageTextSample(key=raw.key, image=p["image"], caption=p["caption"], metadata=p["metadata"])
    return VideoTextSample(key=raw.key, frames=p["frames"], caption=p["caption"], metadata=p["metadata"],
                           video=p["video"])


def _to_record(kind: str, raw: RawSample, max_pixels: int | None) -> Record:
    p = raw.parsed
    if kind == "m3w":
        return M3WRecord(key=raw.key, document=p["document"],
                         images=[decode_image(b, max_pixels=max_pixels) for b in p["images"]])
    if kind == "image_text":
        return ImageTextRecord(key=raw.key, image=decode_image(p["image"], max_pixels=max_pixels),
                               caption=p["caption"], metadata=p["metadata"])
    return VideoTextRecord(key=raw.key, frames=[decode_image(b, max_pixels=max_pixels) for b in p["frames"]],
                           caption=p["caption"], metadata=p["metadata"])


# --- the dataset -----------------------------------------------------------------------------

def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def worker_positions(batches_consumed: int, *, batch_size: int, num_workers: int) -> dict[int, int]:
    """Per-worker stream positions after a DataLoader (IterableDataset, `num_workers` workers,
    `batch_size`) delivered `batches_consumed` batches: batch j comes from worker j % num_workers.
    Holds for infinite (resampled) streams; a finite worker stream that ran out breaks the
    round-robin. Prefer `dataloader_state`, which also restores which worker goes next."""
    if num_workers <= 0:
        return {0: batches_consumed * batch_size}
    return {w: len(range(w, batches_consumed, num_workers)) * batch_size for w in range(num_workers)}


def dataloader_state(batches_consumed: int, *, batch_size: int, num_workers: int, seed: int = 0,
                     epoch: int = 0) -> dict[str, Any]:
    """The stream state to `load_state_dict` into a fresh dataset so that a DataLoader with the
    same `batch_size`/`num_workers` continues exactly after `batches_consumed` batches.

    The DataLoader always asks worker 0 first, so the next batch's stream is rotated onto worker 0
    (`worker_offset`)."""
    return {"seed": seed, "epoch": epoch,
            "position": worker_positions(batches_consumed, batch_size=batch_size, num_workers=num_workers),
            "worker_offset": batches_consumed % num_workers if num_workers > 0 else 0}


class ShardDataset(torch.utils.data.IterableDataset):
    """Iterable over decoded records of one kind; see the module docstring for order and resume."""

    def __init__(self, location: DatasetLocation, *, shuffle: int = 0, resampled: bool = False, seed: int = 0,
                 split_by_node: bool = True, split_by_worker: bool = True, decode: bool = True,
                 start_index: int | dict[int, int] = 0, epoch: int = 0, rank: int | None = None,
                 world_size: int | None = None, max_image_pixels: int | None = None,
                 shuffle_shards: bool | None = None, worker_offset: int = 0) -> None:
        super().__init__()
        if shuffle < 0:
            raise ValueError(f"shuffle buffer size must be >= 0, got {shuffle}")
        if not location.shards:
            raise ValueError("open_dataset: the inputs name no shards")
        self.location = location
        self.kind = location.kind
        self.shuffle = shuffle
        self.resampled = resampled
        self.seed = seed
        self.split_by_node = split_by_node
        self.split_by_worker = split_by_worker
        self.decode = decode
        self.epoch = epoch
        self.rank, self.world_size = rank, world_size
        self.max_image_pixels = max_image_pixels
        self.shuffle_shards = shuffle > 0 if shuffle_shards is None else shuffle_shards
        self._start = start_index
        self.worker_offset = worker_offset
        self.position = 0
        self.skipped: Counter = Counter()
        self.shard_errors: Counter = Counter()
        self._reports: dict[str, ShardReport] = {}

    @property
    def shards(self) -> list[str]:
        return [s.url for s in self.location.shards]

    def set_epoch(self, epoch: int) -> None:
        """Select the shard/shuffle order of `epoch` for the next iteration."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """Stream position of this (single-process) stream: restore with `load_state_dict`."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position, "worker_offset": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue from `state` (position: int, or {worker_id: int})."""
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"stream state was saved with seed {state['seed']}, this dataset has {self.seed}")
        self.epoch = int(state.get("epoch", self.epoch))
        position = state.get("position", 0)
        # JSON checkpoints turn int keys into strings
        self._start = {int(k): int(v) for k, v in position.items()} if isinstance(position, dict) else int(position)
        self.worker_offset = int(state.get("worker_offset", 0))

    def _stream_ids(self) -> tuple[int, int, int, int]:
        rank, world = _rank_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        worker, workers = _worker()
        if not self.split_by_node:
            rank, world = 0, 1
        if not self.split_by_worker:
            worker, workers = 0, 1
        # a resumed DataLoader rotates streams so the stream due next is served by worker 0 first
        return rank, world, (worker + self.worker_offset) % workers, workers

    def _shard_sequence(self, rank: int, world: int, worker: int, workers: int) -> Iterator[ShardRef]:
        shards = list(self.location.shards)
        if self.resampled:
            # independent infinite stream per (rank, worker): never starves, even with 1 shard
            rng = random.Random(f"shards-{self.seed}-{self.epoch}-{rank}-{worker}")
            while True:
                yield shards[rng.randrange(len(shards))]
        if self.shuffle_shards:
            random.Random(f"shards-{self.seed}-{self.epoch}").shuffle(shards)
        mine = shards[rank::world][worker::workers]
        if not mine and worker == 0:
            warnings.warn(f"rank {rank} of {world} gets no shard of {len(shards)}: use resampled=True or more "
                          f"shards (a rank without data desynchronises data-parallel training)",
                          ShardDataWarning, stacklevel=2)
        yield from mine

    def _samples(self, rank: int, world: int, worker: int, workers: int) -> Iterator[RawSample]:
        # A resampled stream over shards that hold nothing usable would spin forever: stop it
        # (with a warning) after many consecutive shard reads without a single sample.
        limit = max(10, 3 * len(self.location.shards))
        barren = 0
        for ref in self._shard_sequence(rank, world, worker, workers):
            found = False
            for raw in iter_shard(ref, kind=self.kind, skipped=self.skipped, shard_errors=self.shard_errors,
                                  reports=self._reports):
                found = True
                yield raw
            barren = 0 if found else barren + 1
            if self.resampled and barren >= limit:
                warnings.warn(f"resampled stream stopped: {barren} shard reads in a row gave no usable sample "
                              f"(of {len(self.location.shards)} shards, e.g. {ref.url}); see .skipped "
                              f"{dict(self.skipped)}", ShardDataWarning, stacklevel=2)
                return

    def raw_stream(self, *, rank: int = 0, world: int = 1, worker: int = 0, workers: int = 1
                   ) -> Iterator[RawSample]:
        """Validated raw samples in stream order (after the shuffle buffer), without decoding."""
        samples = self._samples(rank, world, worker, workers)
        if self.shuffle <= 1:
            yield from samples
            return
        rng = random.Random(f"buffer-{self.seed}-{self.epoch}-{rank}-{worker}")
        buffer: list[RawSample] = []
        for raw in samples:
            if len(buffer) < self.shuffle:
                buffer.append(raw)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], raw = raw, buffer[j]
            yield raw
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[Any]:
        rank, world, worker, workers = self._stream_ids()
        start = self._start.get(worker, 0) if isinstance(self._start, dict) else int(self._start)
        self._start = 0  # a restored position applies to the next pass only
        self.position = 0
        for raw in self.raw_stream(rank=rank, world=world, worker=worker, workers=workers):
            self.position += 1
            if self.position <= start:
                continue  # fast-forward: same order, no decoding
            if not self.decode:
                yield _to_sample(self.kind, raw)
                continue
            try:
                record = _to_record(self.kind, raw, self.max_image_pixels)
            except DecodeError as err:
                report = self._reports.get(raw.shard) or ShardReport(raw.shard, self.skipped, self.shard_errors)
                report.skip(err.reason, detail=f"key {raw.key!r}")
                continue
            yield record


def open_dataset(urls: str | list[str], *, kind: str | None = None, shuffle: int = 0, resampled: bool = False,
                 seed: int = 0, split_by_node: bool = True, split_by_worker: bool = True, decode: bool = True,
                 start_index: int | dict[int, int] = 0, epoch: int = 0, rank: int | None = None,
                 world_size: int | None = None, max_image_pixels: int | None = None,
                 shuffle_shards: bool | None = None, worker_offset: int = 0) -> ShardDataset:
    """Open shards of any kind as a torch IterableDataset of records.

    `urls`: a dataset root (with `manifest.json`, or plain img2dataset output), tar URLs, brace
    patterns (`s3://b/{00000..00099}.tar`), or a list of these, over any fsspec protocol.
    `shuffle`: shuffle buffer size (0 = tar order); shard order is shuffled per epoch too unless
    `shuffle_shards=False`. `resampled`: infinite stream drawing shards with replacement per
    (rank, worker). Splitting uses torch.distributed's rank/world (override with `rank`/
    `world_size`) and the DataLoader worker info. `decode=False` yields the writer's sample types
    (bytes) instead of PIL records. `start_index` resumes a stream position (see module doc).
    """
    location = locate(urls, kind=kind)
    return ShardDataset(location, shuffle=shuffle, resampled=resampled, seed=seed, split_by_node=split_by_node,
                        split_by_worker=split_by_worker, decode=decode, start_index=start_index, epoch=epoch,
                        rank=rank, world_size=world_size, max_image_pixels=max_image_pixels,
                        shuffle_shards=shuffle_shards, worker_offset=worker_offset)
