"""Atomic, deterministic shard writers over fsspec URLs.

Every file is written under a temporary name (`.{name}.tmp-{pid}-{random}`) and renamed once
complete, so a crash never leaves a partial file under its final name. Bytes depend only on the
input: tar headers have fixed mtime/uid/gid/uname/mode, JSON keys are sorted, parquet rows are
sorted by key and carry no timestamps. The per-shard `_stats.json` is written last; it embeds the
shard's manifest entry, so a shard is complete once its stats file exists (as in img2dataset)
and `completed_shards` / a rerun can rebuild the manifest without redoing finished shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .formats import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PARQUET_SCHEMAS,
    SAMPLE_TYPES,
    SUCCESS,
    Sample,
    check_key,
    check_kind,
    json_bytes,
    sample_members,
    shard_name,
    success_row,
)

_TAR_FORMAT = tarfile.GNU_FORMAT


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardInfo:
    """One shard's manifest entry."""

    shard_index: int
    """The `{shard:05d}` number."""
    tar: str
    """Tar file name relative to the dataset root (`00000.tar`)."""
    samples: int
    """Samples (key groups) in the tar."""
    rows: int
    """Parquet rows: samples plus failed inputs."""
    failures: int
    """Parquet rows whose status is not `success`."""
    bytes: int
    """Size of the tar in bytes."""
    sha256: str
    """Hex sha256 of the tar."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardInfo:
        return cls(**{k: data[k] for k in ("shard_index", "tar", "samples", "rows", "failures", "bytes",
                                           "sha256")})


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/") or path


class _HashingSink(io.RawIOBase):
    """Write-through file wrapper that hashes and counts (tarfile needs write and tell)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.raw is not None:
            self.raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def member_bytes(name: str, size: int) -> int:
    """Bytes one member takes in our tars (header + data padded to 512), for size-based rollover."""
    header = len(_tarinfo(name, size).tobuf(_TAR_FORMAT, "utf-8", "surrogateescape"))
    return header + (size + 511) // 512 * 512


class _AtomicFile:
    """Context manager: open a temp file next to `path`, rename it onto `path` on success only."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs, self.path = fs, path
        directory, name = posixpath.split(path)
        self.tmp = posixpath.join(directory, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Any:
        self.handle = self.fs.open(self.tmp, "wb")
        return self.handle

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # No temp file outlives a failed write: an error while writing, or a full disk, which often
        # shows only when the last buffer is flushed on close.
        try:
            self.handle.close()
        except BaseException:
            self._discard()
            raise
        if exc_type is not None:
            self._discard()
            return
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        try:
            if "file" in protocols or "local" in protocols:
                os.replace(self.tmp, self.path)  # atomic on POSIX
            else:
                self.fs.mv(self.tmp, self.path)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        try:
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)
        except OSError:
            pass


def _write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    with _AtomicFile(fs, path) as handle:
        handle.write(data)


def _remove_stale_temps(fs: fsspec.AbstractFileSystem, root: str, stem: str) -> None:
    """Remove temp files a killed writer left for this shard (never touches final names)."""
    try:
        names = fs.ls(root, detail=False)
    except FileNotFoundError:
        return
    for full in names:
        base = posixpath.basename(full.rstrip("/"))
        if base.startswith(f".{stem}") and ".tmp-" in base:
            try:
                fs.rm(full)
            except OSError:
                pass


def _parquet_bytes(kind: str, rows: list[dict[str, Any]]) -> bytes:
    schema = PARQUET_SCHEMAS[kind]
    extra = sorted({k for row in rows for k in row} - set(schema.names))
    if extra:
        # Keep caller columns (e.g. source metadata) as strings so the schema stays predictable.
        for name in extra:
            schema = schema.append(pa.field(name, pa.string()))
        rows = [{**r, **{k: (None if r.get(k) is None else
                             (r[k] if isinstance(r[k], str) else json.dumps(r[k], sort_keys=True)))
                         for k in extra}} for r in rows]
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    sink = io.BytesIO()
    # no statistics timestamps, fixed writer options: identical input -> identical bytes
    pq.write_table(table, sink, compression="zstd", write_statistics=True, store_schema=True)
    return sink.getvalue()


def _merge_rows(kind: str, sample_rows: list[dict[str, Any]], rows: Iterable[dict[str, Any]] | None,
                output_url: str) -> list[dict[str, Any]]:
    by_key: dict[str, dict[str, Any]] = {r["key"]: r for r in sample_rows}
    for row in rows or ():
        if "key" not in row:
            raise ValueError(f"{output_url}: parquet row without a 'key': {row!r}")
        key = check_key(row["key"])
        if key in by_key:
            # caller rows add columns to the row of a written sample (status stays success)
            by_key[key] = {**row, **{k: v for k, v in by_key[key].items() if v is not None}}
        else:
            if not row.get("status") or row["status"] == SUCCESS:
                raise ValueError(f"{output_url}: row {key!r} has no sample in the shard, so its status "
                                 f"must name the failure (got {row.get('status')!r})")
            by_key[key] = dict(row)
    return [by_key[k] for k in sorted(by_key)]


class _ShardFile:
    """One shard being written: the tar streams to a temp file; parquet and stats follow on close."""

    def __init__(self, output_url: str, *, kind: str, shard_index: int) -> None:
        self.output_url, self.kind, self.shard_index = output_url, check_kind(kind), shard_index
        self.fs, self.root = _fs(output_url)
        self.fs.makedirs(self.root, exist_ok=True)
        self.stem = shard_name(shard_index)
        _remove_stale_temps(self.fs, self.root, self.stem)
        self.sample_type = SAMPLE_TYPES[kind]
        self.sample_rows: list[dict[str, Any]] = []
        self.extra_rows: list[dict[str, Any]] = []
        self.size = 1024  # the two end-of-archive blocks
        self._key_set: set[str] = set()
        self._atomic = _AtomicFile(self.fs, posixpath.join(self.root, f"{self.stem}.tar"))
        self._sink = _HashingSink(self._atomic.__enter__())
        self._tar = tarfile.open(fileobj=self._sink, mode="w", format=_TAR_FORMAT)  # type: ignore[arg-type]

    def add(self, sample: Sample, members: list[tuple[str, bytes]] | None = None) -> None:
        if not isinstance(sample, self.sample_type):
            raise TypeError(f"{self.output_url} shard {self.stem}: kind {self.kind!r} takes "
                            f"{self.sample_type.__name__}, got {type(sample).__name__}")
        if sample.key in self._key_set:
            raise ValueError(f"{self.output_url} shard {self.stem}: duplicate sample key {sample.key!r}")
        for name, data in members if members is not None else sample_members(sample):
            self._tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
            self.size += member_bytes(name, len(data))
        self.sample_rows.append(success_row(sample))
        self._key_set.add(sample.key)

    def add_row(self, row: dict[str, Any]) -> None:
        self.extra_rows.append(row)

    def abort(self) -> None:
        """Drop the temp tar (nothing reaches a final name)."""
        try:
            self._tar.close()
        finally:
            self._atomic.__exit__(RuntimeError, None, None)

    def close(self) -> ShardInfo:
        self._tar.close()
        self._atomic.__exit__(None, None, None)
        fs, root, stem = self.fs, self.root, self.stem
        all_rows = _merge_rows(self.kind, self.sample_rows, self.extra_rows, self.output_url)
        _write_bytes_atomic(fs, posixpath.join(root, f"{stem}.parquet"), _parquet_bytes(self.kind, all_rows))
        n_samples = len(self.sample_rows)
        failures = Counter(r.get("error_message") or r.get("status") for r in all_rows
                           if r.get("status") != SUCCESS)
        info = ShardInfo(shard_index=self.shard_index, tar=f"{stem}.tar", samples=n_samples,
                         rows=len(all_rows), failures=sum(failures.values()), bytes=self._sink.size,
                         sha256=self._sink.sha.hexdigest())
        by_status = Counter(r.get("status") for r in all_rows)
        status_dict = ({SUCCESS: n_samples} if n_samples else {}) | dict(failures)
        # img2dataset's _stats.json fields (times fixed at 0 so reruns are byte-identical) + our entry
        stats = {"count": len(all_rows), "successes": n_samples,
                 "failed_to_download": by_status.get("failed_to_download", 0),
                 "failed_to_resize": by_status.get("failed_to_resize", 0),
                 "images_failed_to_download": sum(int(r.get("images_failed") or 0) for r in all_rows),
                 "duration": 0.0, "start_time": 0.0, "end_time": 0.0, "status_dict": status_dict,
                 "kind": self.kind, "format_version": FORMAT_VERSION, "shard": info.to_dict()}
        _write_bytes_atomic(fs, posixpath.join(root, f"{stem}_stats.json"), json_bytes(stats, indent=4))
        return info


def write_shard(output_url: str, *, kind: str, shard_index: int, samples: Iterable[Sample],
                rows: Iterable[dict[str, Any]] | None = None) -> ShardInfo:
    """Write one shard (`{shard:05d}.tar`, `.parquet`, `_stats.json`) atomically under `output_url`.

    `samples` are streamed into the tar in the order given (keys must be unique). `rows` are
    parquet rows for inputs that produced no sample (each with `key`, `status` naming the failure
    and `error_message`); a row whose key matches a sample only adds columns. Each file is renamed
    into place when complete, the stats file last: its presence marks the shard complete. Any
    error leaves no file of this shard under a final name. Returns the manifest entry.
    """
    shard = _ShardFile(output_url, kind=kind, shard_index=shard_index)
    try:
        for sample in samples:
            shard.add(sample)
        for row in rows or ():
            shard.add_row(row)
    except BaseException:
        shard.abort()
        raise
    return shard.close()


def read_shard_info(output_url: str, shard_index: int) -> ShardInfo | None:
    """The manifest entry embedded in a shard's `_stats.json`, or None if absent/not ours."""
    fs, root = _fs(output_url)
    path = posixpath.join(root, f"{shard_name(shard_index)}_stats.json")
    try:
        with fs.open(path, "rb") as handle:
            stats = json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return None
    entry = stats.get("shard") if isinstance(stats, dict) else None
    return ShardInfo.from_dict(entry) if isinstance(entry, dict) else None


def read_manifest(output_url: str) -> dict[str, Any] | None:
    """The dataset's `manifest.json` as a dict, or None if there is none."""
    fs, root = _fs(output_url)
    try:
        with fs.open(posixpath.join(root, MANIFEST_NAME), "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise ValueError(f"{output_url}/{MANIFEST_NAME} is not valid JSON ({err}); delete it and rerun "
                         f"write_manifest to rebuild it from the shards' _stats.json") from err


def write_manifest(output_url: str, *, kind: str, shards: Iterable[ShardInfo] | None = None,
                   source: str | None = None) -> dict[str, Any]:
    """Write `manifest.json` atomically: format version, kind, source, one entry per shard.

    With `shards=None` the entries are collected from the `_stats.json` of every complete shard
    (what parallel writers leave behind). Returns the manifest dict.
    """
    check_kind(kind)
    fs, root = _fs(output_url)
    fs.makedirs(root, exist_ok=True)
    if shards is None:
        shards = [info for i in sorted(_stats_indices(fs, root))
                  if (info := read_shard_info(output_url, i)) is not None]
    entries = sorted(shards, key=lambda s: s.shard_index)
    indices = [s.shard_index for s in entries]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{output_url}: duplicate shard indices in manifest entries {indices}")
    manifest = {"format_version": FORMAT_VERSION, "kind": kind, "source": source or kind,
                "shards": [s.to_dict() for s in entries],
                "samples": sum(s.samples for s in entries), "bytes": sum(s.bytes for s in entries)}
    _write_bytes_atomic(fs, posixpath.join(root, MANIFEST_NAME), json_bytes(manifest, indent=1))
    return manifest


def _stats_indices(fs: fsspec.AbstractFileSystem, root: str) -> set[int]:
    try:
        names = fs.ls(root, detail=False)
    except FileNotFoundError:
        return set()
    out = set()
    for full in names:
        base = posixpath.basename(full.rstrip("/"))
        stem, sep, _ = base.partition("_stats.json")
        if sep and stem.isdigit() and base == f"{stem}_stats.json":
            out.add(int(stem))
    return out


def completed_shards(output_url: str) -> set[int]:
    """Indices of shards that are complete: stats file present with a manifest entry whose tar exists
    with the recorded size (and, if `manifest.json` lists the shard, the same entry)."""
    fs, root = _fs(output_url)
    manifest = read_manifest(output_url) or {}
    listed = {e["shard_index"]: e for e in manifest.get("shards", [])}
    done = set()
    for index in _stats_indices(fs, root):
        info = read_shard_info(output_url, index)
        if info is None:
            continue
        if index in listed and ShardInfo.from_dict(listed[index]) != info:
            continue
        try:
            if fs.size(posixpath.join(root, info.tar)) != info.bytes:
                continue
        except FileNotFoundError:
            continue
        done.add(index)
    return done


@dataclass(kw_only=True)
class ShardWriterConfig:
    """Rollover limits for `ShardWriter`."""

    max_samples: int = 1000
    """Start a new shard after this many samples."""
    max_bytes: int = 1 << 30
    """Start a new shard before the tar would exceed this many bytes (a single larger sample still
    gets its own shard)."""
    max_rows: int | None = None
    """Also roll over after this many parquet rows (samples + failures); None = no limit."""

    def __post_init__(self) -> None:
        if self.max_samples < 1 or self.max_bytes < 1 or (self.max_rows is not None and self.max_rows < 1):
            raise ValueError(f"shard limits must be >= 1: {self}")


class ShardWriter:
    """Write a stream of samples (and failure rows) into shards rolled over by count and size.

    Shard boundaries depend only on the input, so a rerun into the same output skips shards that
    `completed_shards` reports and redoes the rest, producing the same bytes. The manifest is
    rewritten after every shard (so it always describes the finished ones). Use as a context
    manager, or call `close()`; `infos` lists the shards of this dataset (written or skipped).
    """

    def __init__(self, output_url: str, *, kind: str, config: ShardWriterConfig | None = None,
                 start_shard: int = 0, source: str | None = None, skip_completed: bool = True) -> None:
        self.output_url = output_url
        self.kind = check_kind(kind)
        self.config = config or ShardWriterConfig()
        self.source = source
        self.shard_index = start_shard
        self.infos: list[ShardInfo] = []
        self.written: list[int] = []
        self.skipped: list[int] = []
        self._done = completed_shards(output_url) if skip_completed else set()
        self._file: _ShardFile | None = None
        self._skip_info: ShardInfo | None = None
        self._count = self._rows = self._size = 0
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self) -> None:
        """Start the next shard: a real file, or a counting-only one if it is already complete."""
        index = self.shard_index
        self.shard_index += 1
        self._count = self._rows = 0
        self._size = 1024
        self._skip_info = read_shard_info(self.output_url, index) if index in self._done else None
        self._file = None if self._skip_info is not None else _ShardFile(
            self.output_url, kind=self.kind, shard_index=index)

    def _roll_if_needed(self, adding_sample: bool, size: int) -> None:
        cfg = self.config
        if self._file is None and self._skip_info is None:
            self._open()
            return
        full = cfg.max_rows is not None and self._count + self._rows >= cfg.max_rows
        if adding_sample and self._count and (self._count >= cfg.max_samples or self._size + size > cfg.max_bytes):
            full = True
        if full:
            self._finish()
            self._open()

    def write(self, sample: Sample) -> None:
        """Add one sample to the current shard, rolling over first if a limit would be crossed."""
        members = sample_members(sample)
        size = sum(member_bytes(name, len(data)) for name, data in members)
        self._roll_if_needed(True, size)
        if self._file is not None:
            try:
                self._file.add(sample, members)
            except BaseException:
                self._file.abort()
                self._file = None
                raise
        self._count += 1
        self._size += size

    def write_failure(self, *, key: str, status: str, error_message: str, **columns: Any) -> None:
        """Record an input that produced no sample (one parquet row in the current shard)."""
        self._roll_if_needed(False, 0)
        if self._file is not None:
            self._file.add_row({"key": check_key(key), "status": status, "error_message": error_message,
                                **columns})
        self._rows += 1

    def _finish(self) -> None:
        if self._skip_info is not None:
            info = self._skip_info
            self.skipped.append(info.shard_index)
        elif self._file is not None:
            info = self._file.close()
            self.written.append(info.shard_index)
        else:
            return
        self._file = self._skip_info = None
        self.infos.append(info)
        write_manifest(self.output_url, kind=self.kind, shards=self._manifest_entries(), source=self.source)

    def _manifest_entries(self) -> list[ShardInfo]:
        mine = {i.shard_index: i for i in self.infos}
        # keep entries of other complete shards (e.g. written by another process with start_shard)
        others = [read_shard_info(self.output_url, i) for i in self._done if i not in mine]
        return sorted([*mine.values(), *[o for o in others if o is not None]], key=lambda s: s.shard_index)

    def close(self) -> list[ShardInfo]:
        """Finish the last shard and write the manifest; returns this writer's shard entries."""
        if not self._closed:
            self._finish()
            self._closed = True
            if not self.infos:
                write_manifest(self.output_url, kind=self.kind, shards=self._manifest_entries(),
                               source=self.source)
        return list(self.infos)

    def abort(self) -> None:
        """Drop the shard in progress (its temp file is removed; finished shards stay)."""
        if self._file is not None:
            self._file.abort()
        self._file = self._skip_info = None
        self._closed = True
