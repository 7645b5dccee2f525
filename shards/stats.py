"""Dataset statistics and integrity checks for all three kinds and plain img2dataset output.

`compute_stats` reads the per-shard parquet files (fast path: only the needed columns) and scans
the tars of shards that have none. `verify` re-hashes every tar and recounts its samples against
the manifest (or, for img2dataset output, against `_stats.json`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq

from .formats import SUCCESS
from .source import DatasetLocation, ShardRef, iter_shard, iter_tar, locate, split_member_name

_PARQUET_COLUMNS = {
    "image_text": ["key", "status", "error_message", "caption", "width", "height"],
    "m3w": ["key", "status", "error_message", "num_images", "num_words", "image_widths", "image_heights",
            "language"],
    "video_text": ["key", "status", "error_message", "caption", "duration", "num_frames", "frame_width",
                   "frame_height"],
}
# Distributions collected per kind (name -> description used in tables and plots).
DISTRIBUTIONS = {
    "images_per_document": "images per document",
    "tokens_per_document": "text tokens per document",
    "image_width": "image width (px)",
    "image_height": "image height (px)",
    "caption_length": "caption length (tokens)",
    "video_duration": "video duration (s)",
    "frames_per_video": "frames per video",
    "bytes_per_shard": "bytes per shard",
}


@dataclass
class _Collected:
    """Raw values gathered over a dataset (summarised by `compute_stats`, plotted by the report)."""

    kind: str
    shards: int = 0
    rows: int = 0
    samples: int = 0
    images: int = 0
    tokens: int = 0
    failures: Counter = field(default_factory=Counter)
    failures_by_status: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)
    unreadable: Counter = field(default_factory=Counter)
    values: dict[str, list[float]] = field(default_factory=dict)
    methods: Counter = field(default_factory=Counter)
    size_mismatches: dict[str, dict[str, int | None]] = field(default_factory=dict)
    """Shards whose size on disk is not the manifest's (a truncated or replaced tar)."""

    def add(self, name: str, values: Iterable[Any]) -> None:
        self.values.setdefault(name, []).extend(float(v) for v in values if v is not None)


def _token_counter(tokenizer: str | Any | None) -> tuple[str, Callable[[str], int]]:
    if tokenizer is None:
        return "words", lambda text: len(text.split())
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(tokenizer)
        except Exception as err:  # noqa: BLE001 - the hub/loader raise many types
            raise ValueError(f"cannot load tokenizer {tokenizer!r} ({err}); pass a local tokenizer "
                             f"directory or leave it out to count words") from err
        name = tokenizer
    else:
        tok, name = tokenizer, getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    return name, lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _listing(location: DatasetLocation) -> dict[str, int | None]:
    """Names present next to the shards with their sizes (one listing per directory, so http
    roots cost nothing)."""
    names: dict[str, int | None] = {}
    for root in {r.url.rsplit("/", 1)[0] for r in location.shards}:
        try:
            fs, path = fsspec.core.url_to_fs(root)
            for entry in fs.ls(path, detail=True):
                name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
                names[f"{root}/{name}"] = entry.get("size")
        except (FileNotFoundError, NotImplementedError, OSError, ValueError):
            continue
    return names


def _exists(url: str, listing: dict[str, int | None]) -> bool:
    if listing:
        return url in listing
    fs, path = fsspec.core.url_to_fs(url)
    try:
        return fs.exists(path)
    except OSError:
        return False


def _shard_bytes(ref: ShardRef, manifest_sizes: dict[str, int]) -> int | None:
    if ref.url in manifest_sizes:
        return manifest_sizes[ref.url]
    try:
        fs, path = fsspec.core.url_to_fs(ref.url)
        return int(fs.size(path))
    except (FileNotFoundError, OSError, TypeError):
        return None


def _try_parquet(out: _Collected, url: str, counter: Callable[[str], int], count_tokens: bool) -> bool:
    """Collect from the shard's parquet; a corrupt one is counted (`unreadable["corrupt_parquet"]`)
    and the tar is scanned instead. The parquet is read whole before anything is added."""
    try:
        _collect_parquet(out, url, counter if count_tokens else None)
    except (OSError, ValueError):  # pyarrow: ArrowInvalid is a ValueError, its IO errors OSErrors
        out.unreadable["corrupt_parquet"] += 1
        return False
    return True


def _collect_parquet(out: _Collected, url: str, count_tokens: Callable[[str], int] | None) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as handle:
        pf = pq.ParquetFile(handle)
        names = set(pf.schema_arrow.names)
        wanted = [c for c in _PARQUET_COLUMNS[out.kind] if c in names]
        text_column = {"m3w": "text", "image_text": "caption", "video_text": "caption"}[out.kind]
        if count_tokens is not None and text_column in names and text_column not in wanted:
            wanted.append(text_column)
        data = pf.read(columns=wanted).to_pydict()
    n = len(data.get("status") or data.get("key") or [])
    status = data.get("status") or [SUCCESS] * n
    errors = data.get("error_message") or [None] * n
    ok = [i for i in range(n) if status[i] == SUCCESS]
    out.rows += n
    out.samples += len(ok)
    for i in range(n):
        if status[i] != SUCCESS:
            out.failures[errors[i] or status[i] or "unknown"] += 1
            out.failures_by_status[status[i] or "unknown"] += 1

    def col(name: str) -> list[Any]:
        values = data.get(name)
        return [values[i] for i in ok] if values is not None else []

    if out.kind == "image_text":
        out.images += len(ok)
        out.add("image_width", col("width"))
        out.add("image_height", col("height"))
        lengths = [count_tokens(c) if count_tokens else len(c.split()) for c in col("caption") if c is not None]
        out.add("caption_length", lengths)
        out.tokens += sum(lengths)
    elif out.kind == "m3w":
        num_images = col("num_images")
        out.images += int(sum(v or 0 for v in num_images))
        out.add("images_per_document", num_images)
        if count_tokens is not None and "text" in data:
            tokens = [count_tokens(t or "") for t in col("text")]
        else:
            tokens = [v or 0 for v in col("num_words")]
        out.add("tokens_per_document", tokens)
        out.tokens += int(sum(tokens))
        out.add("image_width", [w for ws in col("image_widths") for w in ws or []])
        out.add("image_height", [h for hs in col("image_heights") for h in hs or []])
        out.languages.update(lang or "unknown" for lang in col("language"))
    else:
        frames = col("num_frames")
        out.images += int(sum(v or 0 for v in frames))
        out.add("frames_per_video", frames)
        out.add("video_duration", col("duration"))
        out.add("image_width", col("frame_width"))
        out.add("image_height", col("frame_height"))
        lengths = [count_tokens(c) if count_tokens else len(c.split()) for c in col("caption") if c is not None]
        out.add("caption_length", lengths)
        out.tokens += sum(lengths)


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width, img.height
    except Exception:  # noqa: BLE001 - an unreadable header just has no size
        return None, None


def _collect_scan(out: _Collected, ref: ShardRef, count_tokens: Callable[[str], int], use_tokenizer: bool) -> None:
    """Fallback without parquet: read the tar (no failure rows are known then)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shard_errors: Counter = Counter()
        for raw in iter_shard(ref, kind=out.kind, skipped=out.unreadable, shard_errors=shard_errors):
            p = raw.parsed
            out.rows += 1
            out.samples += 1
            if out.kind == "image_text":
                out.images += 1
                w, h = _image_size(p["image"])
                out.add("image_width", [w])
                out.add("image_height", [h])
                n = count_tokens(p["caption"])
                out.add("caption_length", [n])
                out.tokens += n
            elif out.kind == "m3w":
                doc = p["document"]
                out.images += len(p["images"])
                out.add("images_per_document", [len(p["images"])])
                # as the writer's num_words: words of the text nodes; a tokenizer sees the M3W sequence
                texts = [t for t in doc.get("texts") or [] if t]
                n = (count_tokens(doc["text"]) if use_tokenizer and doc.get("text")
                     else sum(len(t.split()) for t in texts))
                out.add("tokens_per_document", [n])
                out.tokens += n
                sizes = [_image_size(b) for b in p["images"]]
                out.add("image_width", [s[0] for s in sizes])
                out.add("image_height", [s[1] for s in sizes])
                general = doc.get("general_metadata") or {}
                out.languages[doc.get("language") or general.get("language") or "unknown"] += 1
            else:
                meta = p["metadata"]
                out.images += len(p["frames"])
                out.add("frames_per_video", [len(p["frames"])])
                out.add("video_duration", [meta.get("duration")])
                w, h = _image_size(p["frames"][0])
                out.add("image_width", [w])
                out.add("image_height", [h])
                n = count_tokens(p["caption"])
                out.add("caption_length", [n])
                out.tokens += n
        for reason, n in shard_errors.items():
            out.unreadable[f"shard:{reason}"] += n


def collect(url: str | list[str], *, tokenizer: str | Any | None = None, scan: bool = False,
            progress: bool | None = None) -> tuple[_Collected, str]:
    """Gather raw per-sample values (parquet first, tar scan for shards without parquet)."""
    location = locate(url)
    unit, counter = _token_counter(tokenizer)
    out = _Collected(kind=location.kind)
    listing = _listing(location)
    manifest_sizes: dict[str, int] = {}
    for root, manifest in location.manifests.items():
        for entry in manifest.get("shards", []):
            manifest_sizes[f"{root.rstrip('/')}/{entry['tar']}"] = entry["bytes"]
    shards = location.shards
    show = progress if progress is not None else len(shards) > 50
    iterator: Iterable[ShardRef] = shards
    if show:
        from tqdm import tqdm

        iterator = tqdm(shards, desc="stats", unit="shard")
    sizes = []
    for ref in iterator:
        out.shards += 1
        parquet = ref.url[: -len(".tar")] + ".parquet"
        if not scan and _exists(parquet, listing) and _try_parquet(out, parquet, counter, tokenizer is not None):
            out.methods["parquet"] += 1
        else:
            _collect_scan(out, ref, counter, tokenizer is not None)
            out.methods["tar scan"] += 1
        sizes.append(_shard_bytes(ref, manifest_sizes))
        expected = manifest_sizes.get(ref.url)
        if expected is not None and listing:  # the cheap check: sizes come with the listing
            actual = listing.get(ref.url)
            if actual != expected:
                out.size_mismatches[ref.url] = {"manifest": expected, "actual": actual}
    out.add("bytes_per_shard", sizes)
    return out, unit


def summarize(values: list[float]) -> dict[str, float]:
    """count / mean / min / p50 / p90 / max of a distribution (empty -> count 0)."""
    if not values:
        return {"count": 0}
    arr = np.asarray(values, dtype=float)
    return {"count": int(arr.size), "mean": round(float(arr.mean()), 3), "min": float(arr.min()),
            "p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)), "max": float(arr.max())}


def compute_stats(url: str | list[str], *, tokenizer: str | Any | None = None, scan: bool = False,
                  progress: bool | None = None) -> dict[str, Any]:
    """Statistics of a dataset of any kind (or plain img2dataset output) as a JSON-able dict.

    Keys: kind, shards, rows (inputs incl. failures), samples, images (frames for video; also
    `frames`), text_tokens and token_unit (a named tokenizer, else words), failures (reason ->
    count, from the parquet status/error_message columns), failures_by_status, bytes, languages,
    distributions (name -> summary), method (how each shard was read), unreadable (scan skips).
    `scan=True` ignores the parquet files and reads every tar.
    """
    out, unit = collect(url, tokenizer=tokenizer, scan=scan, progress=progress)
    return stats_of(out, unit)


def stats_of(out: _Collected, unit: str) -> dict[str, Any]:
    """The JSON-able summary of collected values (see `compute_stats`)."""
    stats: dict[str, Any] = {
        "kind": out.kind, "shards": out.shards, "rows": out.rows, "samples": out.samples, "images": out.images,
        "text_tokens": out.tokens, "token_unit": unit,
        "failures": dict(out.failures.most_common()), "failures_by_status": dict(out.failures_by_status),
        "bytes": int(sum(out.values.get("bytes_per_shard", []))),
        "languages": dict(out.languages.most_common()),
        "distributions": {name: summarize(vals) for name, vals in sorted(out.values.items())},
        "method": dict(out.methods), "unreadable": dict(out.unreadable),
        "size_mismatches": dict(out.size_mismatches),
    }
    if out.kind == "video_text":
        stats["frames"] = out.images
    return stats


def print_stats(stats: dict[str, Any], *, title: str = "") -> None:
    """Print the stats as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    main = Table(title=f"flamboyance stats {title}".strip())
    main.add_column("metric")
    main.add_column("value", justify="right")
    for key in ("kind", "shards", "rows", "samples", "images", "frames", "text_tokens", "token_unit", "bytes"):
        if key in stats:
            value = stats[key]
            main.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    main.add_row("method", ", ".join(f"{k}: {v}" for k, v in stats["method"].items()))
    console.print(main)
    dist = Table(title="distributions")
    for col in ("name", "count", "mean", "min", "p50", "p90", "max"):
        dist.add_column(col, justify="left" if col == "name" else "right")
    for name, s in stats["distributions"].items():
        dist.add_row(DISTRIBUTIONS.get(name, name), *[f"{s[c]:,.6g}" if c in s else "-" for c in
                                                      ("count", "mean", "min", "p50", "p90", "max")])
    console.print(dist)
    for key, label in (("failures", "failure reasons"), ("languages", "languages"), ("unreadable", "skipped while scanning")):
        if stats.get(key):
            table = Table(title=label)
            table.add_column("reason" if key != "languages" else "language")
            table.add_column("count", justify="right")
            for reason, count in list(stats[key].items())[:20]:
                table.add_row(str(reason)[:100], f"{count:,}")
            console.print(table)


# --- verify ------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """Outcome of `verify`: `ok` iff every shard matched; `problems` name shard and mismatch."""

    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _HashingReader(io.RawIOBase):
    def __init__(self, raw: Any) -> None:
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _count_and_hash(url: str) -> tuple[int, int, str]:
    """(key groups, bytes, sha256) of a tar, in one streaming pass."""
    with fsspec.open(url, "rb") as handle:
        reader = _HashingReader(handle)
        stream = io.BufferedReader(reader, buffer_size=1 << 20)
        groups, last = 0, None
        for name, member_type, _ in iter_tar(stream):
            if member_type == "dir":
                continue
            key = split_member_name(name)[0]
            if key != last:
                groups, last = groups + 1, key
        while stream.read(1 << 20):
            pass
    return groups, reader.size, reader.sha.hexdigest()


def verify(url: str) -> VerifyResult:
    """Re-check every shard's sha256, size and sample count against `manifest.json` (for plain
    img2dataset output: sample counts against each `_stats.json`)."""
    location = locate(url)
    result = VerifyResult()
    entries: dict[str, dict[str, Any]] = {}
    for root, manifest in location.manifests.items():
        for entry in manifest.get("shards", []):
            entries[f"{root.rstrip('/')}/{entry['tar']}"] = entry
    for ref in location.shards:
        result.shards += 1
        entry = entries.get(ref.url)
        try:
            groups, size, sha = _count_and_hash(ref.url)
        except FileNotFoundError:
            result.problems.append(f"{ref.url}: missing")
            continue
        except (tarfile.TarError, OSError, EOFError) as err:
            result.problems.append(f"{ref.url}: unreadable tar ({type(err).__name__}: {err})")
            continue
        result.samples += groups
        if entry is None:
            stats_url = ref.url[: -len(".tar")] + "_stats.json"
            try:
                with fsspec.open(stats_url, "rb") as handle:
                    expected = json.loads(handle.read()).get("successes")
            except (FileNotFoundError, ValueError):
                result.problems.append(f"{ref.url}: no manifest entry and no _stats.json to check against")
                continue
            if expected != groups:
                result.problems.append(f"{ref.url}: {groups} samples, _stats.json says {expected}")
            continue
        if sha != entry["sha256"]:
            result.problems.append(f"{ref.url}: sha256 {sha[:12]}... != manifest {entry['sha256'][:12]}...")
        if size != entry["bytes"]:
            result.problems.append(f"{ref.url}: {size} bytes, manifest says {entry['bytes']}")
        if groups != entry["samples"]:
            result.problems.append(f"{ref.url}: {groups} samples, manifest says {entry['samples']}")
    return result
