"""Building a Flamingo without its weights, and reading single weights (or slices of them) from
the safetensors files they live in, so that a caller can materialise only part of a model
(a data-parallel shard) and never hold the whole of it.

Plain torch + safetensors: which parts a process keeps is the caller's business (the trainer's
FSDP loading, ``trainer/parallel.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn


@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Inside, every parameter a module registers moves to the meta device right away (one
    parameter at a time is ever real); buffers (rotary frequencies, position ids) stay real, so a
    model built here needs only its parameters loaded."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            meta = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
            module._parameters[name] = meta

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def safetensors_files(source: str | Path) -> list[Path]:
    """The safetensors weight files of a model folder, or of a hub model (from the local cache,
    downloading when missing)."""
    path = Path(source)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(source), allow_patterns=["*.safetensors", "*.json"]))
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{source}: no *.safetensors weight files to load from")
    return files


class WeightFiles:
    """Where each named weight sits in a set of safetensors files, keyed by module prefix.

    ``sources`` maps a parameter-name prefix of the model (``"lm."``, ``"vision.tower."``, ``""``)
    to files whose keys are the names below that prefix. A name not found as is may match a file
    key by its unique dotted suffix (checkpoints of a full model loaded into one of its towers,
    or key layouts that changed between transformers versions)."""

    def __init__(self, sources: dict[str, list[Path]]) -> None:
        # longest prefix first, so "lm." wins over "" for LM weights
        self.sources = sorted(((p, self._index(files)) for p, files in sources.items()), key=lambda x: -len(x[0]))

    @staticmethod
    def _index(files: list[Path]) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    index[key] = file
        return index

    def locate(self, name: str) -> tuple[Path, str]:
        """(file, key) of the model weight ``name``."""
        for prefix, index in self.sources:
            if not name.startswith(prefix):
                continue
            key = name[len(prefix) :]
            if key in index:
                return index[key], key
            matches = [k for k in index if k.endswith("." + key) or key.endswith("." + k)]
            if len(matches) == 1:
                return index[matches[0]], matches[0]
            raise KeyError(f"weight {name!r}: no key {key!r} in {sorted({str(f) for f in index.values()})}")
        raise KeyError(f"weight {name!r}: no weight files for it (prefixes {[p for p, _ in self.sources]})")

    def read(self, name: str, *, offset: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
        """The block ``[offset : offset + shape]`` of weight ``name``, reading only those bytes (the
        file is opened for this read alone, so no mapping of it outlives the call)."""
        file, key = self.locate(name)
        with safe_open(str(file), framework="pt") as handle:
            if not shape:
                return handle.get_tensor(key)
            return handle.get_slice(key)[tuple(slice(o, o + s) for o, s in zip(offset, shape))]


__all__ = ["WeightFiles", "empty_parameters", "safetensors_files"]
