"""shards: every on-disk format (m3w, image_text, video_text webdataset shards with parquet
metadata and a manifest): atomic writers, streaming readers and statistics/reports.

Writers and sample types import light; the reader (torch) and stats (matplotlib, rich) load on
first use, so `flamboyance stats` and the Beam workers do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .formats import (
    FORMAT_VERSION,
    KINDS,
    ImageTextSample,
    M3WSample,
    VideoTextSample,
    check_key,
)
from .writer import (
    ShardInfo,
    ShardWriter,
    ShardWriterConfig,
    completed_shards,
    read_manifest,
    write_manifest,
    write_shard,
)

_LAZY = {
    "open_dataset": "reader", "locate": "source", "ShardDataset": "reader", "M3WRecord": "reader",
    "ImageTextRecord": "reader", "VideoTextRecord": "reader", "ShardDataWarning": "source",
    "decode_image": "source", "worker_positions": "reader", "dataloader_state": "reader",
    "compute_stats": "stats", "verify": "stats", "VerifyResult": "stats",
    "write_report": "report",
    "sample_video_frames": "video", "make_video_sample": "video", "FrameSamplingConfig": "video",
}

__all__ = [
    "FORMAT_VERSION", "KINDS", "ImageTextSample", "M3WSample", "VideoTextSample", "check_key", "ShardInfo",
    "ShardWriter", "ShardWriterConfig", "completed_shards", "read_manifest", "write_manifest", "write_shard",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
