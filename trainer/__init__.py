"""trainer: Ray-orchestrated multi-source training (one optimizer step over gradients
accumulated across m3w, image_text and video_text), checkpoints, resume, logging.

Public API: ``load_config`` / ``TrainConfig`` (config.py), ``train`` (launch.py: prepare the run
folder, then Ray Train or one process), ``train_loop`` (loop.py: the per-worker loop). torch and
Ray load on first use of ``train`` / ``train_loop``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import TrainConfig, load_config

_LAZY = {"train": "launch", "train_loop": "loop", "LocalContext": "loop", "train_step": "step"}

__all__ = ["TrainConfig", "load_config", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
