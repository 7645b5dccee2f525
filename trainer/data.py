"""Per-source streams of batches for one training worker, resumable to the exact batch.

Each source on each rank is split into ``S = max(1, data.num_workers)`` independent *streams*: a
resampled, shuffle-buffered record stream from ``flamboyance.shards.open_dataset`` with its own
seed. The torch DataLoader delivers batch j from loader process j mod S, so batch j is built from
stream j mod S. A stream's position is the reader's count of records taken out of its shuffle
buffer; the reader fast-forwards to a position without decoding.

After a resume at N delivered batches, DataLoader process w serves stream (w + N) mod S, so the
next batch again comes from stream N mod S and every batch of the uninterrupted run is rebuilt.
Per-record randomness (M3W window, image placement) is seeded by (seed, source, rank, stream,
position), so it does not depend on where a run was resumed.
"""

from __future__ import annotations

import queue
import random
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from flamboyance.trainer.collate import Rejected, pad_batch
from flamboyance.trainer.config import DataConfig, SourceConfig
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def stream_seed(seed: int, source: str, stream: int) -> int:
    """The reader seed of one stream of one source (the rank is mixed in by the reader)."""
    return zlib.crc32(f"{seed}/{source}/{stream}".encode())


def default_open_dataset(urls: list[str], **kwargs: Any) -> Any:
    """``flamboyance.shards.open_dataset`` (imported lazily: loader processes import it once)."""
    from flamboyance.shards import open_dataset

    return open_dataset(urls, **kwargs)


class SourceStream(IterableDataset):
    """Batches of one source for one rank; inside a DataLoader each process serves one stream.

    Yields dicts: ``batch`` (see ``collate.pad_batch``), ``stream``, ``position`` (records of that
    stream consumed so far), ``counts`` (records dropped since the previous batch, by reason:
    ``dropped/<reason>`` from collation, ``skipped/<reason>`` from the shard reader), ``samples`` and
    ``tokens`` (non-padding tokens).
    """

    def __init__(
        self,
        *,
        name: str,
        source: SourceConfig,
        collator: Callable[[Any, random.Random], Any],
        pad_id: int,
        seed: int,
        rank: int,
        world_size: int,
        num_streams: int,
        stream_offset: int = 0,
        positions: dict[int, int] | None = None,
        open_fn: Callable[..., Any] = default_open_dataset,
    ) -> None:
        super().__init__()
        self.name = name
        self.source = source
        self.collator = collator
        self.pad_id = pad_id
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_streams = num_streams
        self.stream_offset = stream_offset
        self.positions = dict(positions or {})
        self.open_fn = open_fn

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        stream = (worker + self.stream_offset) % self.num_streams
        dataset = self.open_fn(
            list(self.source.urls),
            kind=self.name,
            shuffle=self.source.shuffle_buffer,
            resampled=True,
            seed=stream_seed(self.seed, self.name, stream),
            rank=self.rank,
            world_size=self.world_size,
            split_by_worker=False,
            start_index=self.positions.get(stream, 0),
        )
        reported_skips: Counter = Counter()
        counts: Counter = Counter()
        samples = []
        for record in dataset:
            position = dataset.position
            rng = random.Random(f"{self.seed}/{self.name}/{self.rank}/{stream}/{position}")
            try:
                sample = self.collator(record, rng)
            except Rejected as rejected:
                counts[f"dropped/{rejected.reason}"] += 1
                continue
            if sample is None:  # a packing collator is still filling its pack
                continue
            samples.append(sample)
            if len(samples) < self.source.batch_size:
                continue
            skipped = Counter(getattr(dataset, "skipped", {}))
            for reason, n in (skipped - reported_skips).items():
                counts[f"skipped/{reason}"] += n
            reported_skips = skipped
            batch = pad_batch(samples, pad_id=self.pad_id)
            yield {
                "batch": batch,
                "stream": stream,
                "position": position,
                "counts": dict(counts),
                "samples": len(samples),
                "tokens": int(batch["attention_mask"].sum()),
            }
            samples, counts = [], Counter()
        raise RuntimeError(
            f"source {self.name!r} ({self.source.urls}) ended although it is resampled: no usable records?"
        )


class SourceLoader:
    """The main-process side of one source: a DataLoader over ``SourceStream`` plus the stream
    positions of the batches actually consumed (what a checkpoint stores)."""

    def __init__(
        self,
        *,
        name: str,
        source: SourceConfig,
        data: DataConfig,
        collator: Callable[[Any, random.Random], Any],
        pad_id: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        state: dict[str, Any] | None = None,
        open_fn: Callable[..., Any] = default_open_dataset,
    ) -> None:
        state = state or {}
        self.name = name
        self.num_streams = max(1, data.num_workers)
        if state and state.get("num_streams", self.num_streams) != self.num_streams:
            raise ValueError(
                f"source {name!r}: the checkpoint was written with {state['num_streams']} loader streams, "
                f"this run has data.num_workers={data.num_workers}; resume with the same value"
            )
        self.batches = int(state.get("batches", 0))
        self.positions = {int(k): int(v) for k, v in state.get("positions", {}).items()}
        self.counts: Counter = Counter(state.get("counts", {}))
        self.dataset = SourceStream(
            name=name,
            source=source,
            collator=collator,
            pad_id=pad_id,
            seed=seed,
            rank=rank,
            world_size=world_size,
            num_streams=self.num_streams,
            stream_offset=self.batches % self.num_streams,
            positions=self.positions,
            open_fn=open_fn,
        )
        kwargs: dict[str, Any] = {}
        if data.num_workers > 0:
            kwargs = {
                "prefetch_factor": data.prefetch_factor,
                "multiprocessing_context": data.multiprocessing_context,
                "persistent_workers": False,
            }
        self.loader = DataLoader(self.dataset, batch_size=None, num_workers=data.num_workers, **kwargs)
        self.queue_size = data.prefetch_batches
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_processes(self) -> None:
        """Fork the loader processes (call for every source before any ``start_prefetch``: forking
        while a prefetch thread runs could copy a held lock into the child)."""
        if self._iterator is None:
            self._iterator = iter(self.loader)

    def start_prefetch(self) -> None:
        """Start the background receiving thread (after ``start_processes``)."""
        self.start_processes()
        if self.queue_size > 0 and self._thread is None:
            self._queue = queue.Queue(maxsize=self.queue_size)
            self._thread = threading.Thread(target=self._prefetch, name=f"prefetch-{self.name}", daemon=True)
            self._thread.start()

    def _prefetch(self) -> None:
        """Background thread: receive batches (IPC, unpickling) while the step computes."""
        assert self._iterator is not None and self._queue is not None
        while not self._stop.is_set():
            try:
                item: Any = next(self._iterator)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> dict[str, Any]:
        """The next item (see ``SourceStream``); updates the stream positions."""
        if self._iterator is None or (self.queue_size > 0 and self._thread is None):
            self.start_prefetch()
        if self._queue is not None:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
        else:
            assert self._iterator is not None
            item = next(self._iterator)
        self.batches += 1
        self.positions[int(item["stream"])] = int(item["position"])
        self.counts.update(item["counts"])
        return item

    def state_dict(self) -> dict[str, Any]:
        """Where this source's streams stand after the consumed batches."""
        return {
            "num_streams": self.num_streams,
            "batches": self.batches,
            "positions": dict(self.positions),
            "counts": dict(self.counts),
        }

    def close(self) -> None:
        """Stop the prefetch thread and the loader processes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread, self._queue, self._iterator = None, None, None


def start_loaders(loaders: list[SourceLoader]) -> None:
    """Fork every loader's processes, then start the prefetch threads."""
    for loader in loaders:
        loader.start_processes()
    for loader in loaders:
        loader.start_prefetch()


def move_batch(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors of a batch on ``device`` (ids stay int64)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


__all__ = ["SourceLoader", "SourceStream", "default_open_dataset", "move_batch", "start_loaders", "stream_seed"]
