"""Locating shards and iterating their tars: the torch-free half of reading (stats use it too).

`locate` resolves URLs to shards and the dataset kind; `iter_shard` yields validated key groups
of one tar, counting and warning (once per shard) about everything it skips; `decode_image`
decodes one image member, refusing decompression bombs.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
from braceexpand import braceexpand
from PIL import Image

from .formats import IMAGE_EXTENSIONS, MANIFEST_NAME, check_kind


class ShardDataWarning(UserWarning):
    """Bad data was skipped while reading a shard (issued at most once per shard and pass)."""

# --- locating shards -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ShardRef:
    """One tar to read and the sample count it should hold (None if nothing records it)."""

    url: str
    expected: int | None = None


@dataclass(frozen=True, slots=True)
class DatasetLocation:
    """The resolved input of `open_dataset`: the kind and the shards in order."""

    kind: str
    shards: tuple[ShardRef, ...]
    manifests: dict[str, dict[str, Any]]


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def _parent(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0] if "/" in url.rstrip("/") else "."


def _read_json(url: str) -> Any | None:
    """JSON at `url`, or None if it does not exist (any other error names the URL)."""
    try:
        with fsspec.open(url, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _strip_protocol_listing(fs: fsspec.AbstractFileSystem, root: str, names: list[str]) -> list[str]:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return names
    return [n if "://" in n else f"{protocol}://{n}" for n in names]


def locate(urls: str | list[str], *, kind: str | None = None) -> DatasetLocation:
    """Resolve dataset roots, tar URLs and brace patterns to the shard list and kind.

    A URL ending in `.tar` is one shard; anything else is a dataset root, read through its
    `manifest.json` or, without one (plain img2dataset output), by listing `*.tar` in it.
    The kind comes from the manifest(s); without a manifest it is `kind`, else `image_text`.
    """
    items = [urls] if isinstance(urls, str) else list(urls)
    expanded = [u for item in items for u in braceexpand(item)]
    if not expanded:
        raise ValueError("open_dataset: no URLs given")
    manifests: dict[str, dict[str, Any] | None] = {}

    def manifest_of(root: str) -> dict[str, Any] | None:
        if root not in manifests:
            manifests[root] = _read_json(_join(root, MANIFEST_NAME))
        return manifests[root]

    refs: list[ShardRef] = []
    for url in expanded:
        if url.endswith(".tar"):
            root = _parent(url)
            manifest = manifest_of(root)
            counts = {e["tar"]: e["samples"] for e in (manifest or {}).get("shards", [])}
            refs.append(ShardRef(url, counts.get(posixpath.basename(url))))
            continue
        root = url.rstrip("/")
        manifest = manifest_of(root)
        if manifest is not None:
            refs += [ShardRef(_join(root, e["tar"]), e["samples"]) for e in manifest.get("shards", [])]
            continue
        fs, path = fsspec.core.url_to_fs(root)
        try:
            names = sorted(fs.glob(_join(path, "*.tar")))
        except (FileNotFoundError, NotImplementedError, OSError) as err:
            raise FileNotFoundError(f"{url}: no manifest.json and cannot list *.tar there ({err}); pass "
                                    f"the shard URLs (brace patterns work) instead") from err
        if not names:
            raise FileNotFoundError(f"{url}: neither a manifest.json nor any *.tar shard found")
        refs += [ShardRef(n) for n in _strip_protocol_listing(fs, root, names)]
    kinds = {m["kind"] for m in manifests.values() if m is not None and "kind" in m}
    if len(kinds) > 1:
        raise ValueError(f"open_dataset: the inputs mix kinds {sorted(kinds)}; open each kind separately")
    detected = kinds.pop() if kinds else None
    if kind is not None and detected is not None and kind != detected:
        raise ValueError(f"open_dataset: kind={kind!r} but the manifest says {detected!r}")
    resolved = check_kind(kind or detected or "image_text")
    return DatasetLocation(resolved, tuple(refs), {k: v for k, v in manifests.items() if v is not None})


# --- raw tar iteration -----------------------------------------------------------------------

@dataclass(slots=True)
class RawSample:
    """One key group from a tar, validated for its kind; `parsed` holds the decoded JSON/text."""

    key: str
    members: dict[str, bytes]
    shard: str
    parsed: dict[str, Any] = field(default_factory=dict)


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith("/") or ".." in parts or ":" in parts[0]


def split_member_name(name: str) -> tuple[str, str]:
    """(key, suffix) of a tar member name: the key is everything up to the first dot of the base name."""
    directory, base = posixpath.split(name)
    stem, _, suffix = base.partition(".")
    return (posixpath.join(directory, stem) if directory else stem), suffix


def _ordered_images(members: dict[str, bytes]) -> list[bytes] | None:
    """Members named `NNN.ext` in index order, or None if the indices are not 0..n-1."""
    indexed: dict[int, bytes] = {}
    for suffix, data in members.items():
        number, _, ext = suffix.partition(".")
        if number.isdigit() and ext.lower() in IMAGE_EXTENSIONS:
            indexed[int(number)] = data
    if sorted(indexed) != list(range(len(indexed))):
        return None
    return [indexed[i] for i in range(len(indexed))]


def _validate(kind: str, sample: RawSample) -> str | None:
    """Fill `sample.parsed`; return the skip reason if the sample lacks what its kind needs."""
    members = sample.members
    try:
        meta = json.loads(members["json"]) if "json" in members else None
        caption = members["txt"].decode("utf-8") if "txt" in members else None
    except (ValueError, UnicodeDecodeError):
        return "bad_json_or_text"
    if meta is not None and not isinstance(meta, dict):
        return "bad_json_or_text"
    if kind == "image_text":
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if image_ext is None or caption is None:
            return "missing_member"
        sample.parsed = {"image": members[image_ext], "caption": caption, "metadata": meta or {}}
        return None
    if meta is None:
        return "missing_member"
    images = _ordered_images(members)
    if images is None:
        return "missing_member"
    if kind == "m3w":
        expected = sum(1 for i in meta.get("images") or [] if i is not None)
        if len(images) != expected:
            return "missing_member"
        sample.parsed = {"document": meta, "images": images}
        return None
    timestamps = meta.get("timestamps")
    if caption is None or not images or (isinstance(timestamps, list) and len(images) != len(timestamps)):
        return "missing_member"
    sample.parsed = {"frames": images, "caption": caption, "metadata": meta, "video": members.get("mp4")}
    return None


class ShardReport:
    """Per-shard counting and the once-per-shard warning."""

    def __init__(self, url: str, skipped: Counter, shard_errors: Counter) -> None:
        self.url, self.skipped, self.shard_errors = url, skipped, shard_errors
        self.warned = False

    def skip(self, reason: str, n: int = 1, detail: str = "") -> None:
        if n <= 0:
            return
        self.skipped[reason] += n
        if not self.warned:
            self.warned = True
            warnings.warn(f"{self.url}: skipped {n} sample(s): {reason}{' (' + detail + ')' if detail else ''}; "
                          f"further problems in this shard are only counted", ShardDataWarning, stacklevel=3)

    def shard_error(self, reason: str, detail: str) -> None:
        self.shard_errors[reason] += 1
        if not self.warned:
            self.warned = True
            warnings.warn(f"{self.url}: {reason}: {detail}", ShardDataWarning, stacklevel=3)


def _expected_from_stats(url: str) -> int | None:
    stats = _read_json(url[: -len(".tar")] + "_stats.json")
    if isinstance(stats, dict):
        entry = stats.get("shard")
        if isinstance(entry, dict) and isinstance(entry.get("samples"), int):
            return entry["samples"]
        if isinstance(stats.get("successes"), int):
            return stats["successes"]
    return None


# --- tar parsing -------------------------------------------------------------------------------

class TarFormatError(tarfile.ReadError):
    """The bytes are not a (complete) tar archive; the message says where it broke."""


_BLOCK = 512
_FILE_TYPES = (b"0", b"\x00", b"7")


def _read_exact(stream: Any, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise TarFormatError(f"unexpected end of data: wanted {n} bytes, got {len(data)}")
    return data


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large numbers
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as err:
        raise TarFormatError(f"bad {what} field {field!r} in tar header") from err


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        record = data[space + 1: pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def iter_tar(stream: Any) -> Iterator[tuple[str, str, bytes]]:
    """(name, type, data) of every member of a tar read sequentially from `stream`.

    type is "file", "dir" or "other" (links, devices: their data is empty). Handles ustar,
    GNU long names and pax headers; raises TarFormatError on a bad checksum or truncation.
    A small hand-written parser: tarfile's header decoding dominated read time.
    """
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = stream.read(_BLOCK)
        if header == bytes(_BLOCK):
            return  # end-of-archive marker
        if not header:
            raise TarFormatError("archive ends without the end-of-archive marker (truncated)")
        if len(header) != _BLOCK:
            raise TarFormatError(f"unexpected end of data inside a header ({len(header)} bytes)")
        stored = _octal(header[148:156], "checksum")
        if stored != sum(header) - sum(header[148:156]) + 256:
            raise TarFormatError("bad tar header checksum (not a tar, or corrupt)")
        size = _octal(header[124:136], "size")
        kind = header[156:157]
        if "size" in pax:
            size = int(pax["size"])
        data = _read_exact(stream, size) if size else b""
        if size % _BLOCK:
            _read_exact(stream, _BLOCK - size % _BLOCK)
        if kind in (b"L", b"x", b"g", b"K"):
            if kind == b"L":
                long_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
            elif kind == b"x":
                pax = _pax_records(data)
            continue  # global pax / GNU long link names are not needed
        name = header[:100].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        if header[257:263] == b"ustar\x00" and header[345:500].strip(b"\x00"):
            prefix = header[345:500].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
            name = f"{prefix}/{name}"
        name = pax.get("path", long_name or name)
        long_name, pax = None, {}
        if kind in _FILE_TYPES:
            yield name, "file", data
        elif kind == b"5":
            yield name, "dir", b""
        else:
            yield name, "other", b""


def open_tar_stream(handle: Any) -> Any:
    """A buffered byte stream of the tar in `handle`, transparently gunzipped (`.tar.gz`)."""
    import gzip

    stream = io.BufferedReader(handle, buffer_size=1 << 20) if not isinstance(handle, io.BufferedReader) else handle
    if stream.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    return stream



def iter_shard(ref: ShardRef, *, kind: str, skipped: Counter, shard_errors: Counter,
               check_counts: bool = True, reports: dict[str, ShardReport] | None = None) -> Iterator[RawSample]:
    """Valid key groups of one tar, in tar order. Never raises on bad data: it counts and warns
    (once per shard; `reports` keeps the shard's reporter for later stages such as decoding)."""
    report = ShardReport(ref.url, skipped, shard_errors)
    if reports is not None:
        reports[ref.url] = report
    groups = 0  # complete key groups seen (valid or not)
    error: str | None = None
    current_key: str | None = None
    members: dict[str, bytes] = {}
    bad_reason: str | None = None

    def finish_group() -> RawSample | None:
        nonlocal groups
        groups += 1
        if bad_reason is not None:
            report.skip(bad_reason, detail=f"key {current_key!r}")
            return None
        sample = RawSample(current_key or "", members, ref.url)
        reason = _validate(kind, sample)
        if reason is not None:
            report.skip(reason, detail=f"key {current_key!r} has members {sorted(members)}")
            return None
        return sample

    try:
        with fsspec.open(ref.url, "rb") as handle:
            for name, member_type, data in iter_tar(open_tar_stream(handle)):
                if member_type == "dir":
                    continue
                key, suffix = split_member_name(name)
                if key != current_key:
                    if current_key is not None and (done := finish_group()) is not None:
                        yield done
                    current_key, members, bad_reason = key, {}, None
                if _unsafe(name):
                    bad_reason = "unsafe_member_name"
                elif member_type != "file":
                    bad_reason = "unsafe_member_type"
                elif suffix in members:
                    bad_reason = bad_reason or "duplicate_member"
                else:
                    members[suffix] = data
            if current_key is not None and (done := finish_group()) is not None:
                yield done
    except FileNotFoundError as err:
        error = "missing_shard"
        report.shard_error(error, str(err))
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as err:
        # nothing readable at all: corrupt; an error after some members: truncated
        error = "corrupt_shard" if current_key is None else "truncated_shard"
        report.shard_error(error, f"{type(err).__name__}: {err}")
    if error is not None and current_key is not None and bad_reason is None:
        # The break came after the last complete member: the group in progress is kept if it
        # already has everything its kind needs; otherwise it counts as lost with the tail.
        last = RawSample(current_key, members, ref.url)
        if _validate(kind, last) is None:
            groups += 1
            yield last
    if not check_counts:
        return
    expected = ref.expected if ref.expected is not None else _expected_from_stats(ref.url)
    if expected is None:
        if error == "truncated_shard":
            report.skip(error, 1, "sample count unknown: no manifest or _stats.json")
        return
    if groups < expected:
        report.skip(error or "missing_samples", expected - groups, f"{groups} of {expected} samples present")
    elif groups > expected:
        report.shard_error("extra_samples", f"{groups} samples, manifest says {expected}")

# --- decoding --------------------------------------------------------------------------------

class DecodeError(ValueError):
    """An image member could not be decoded (`.reason`: undecodable_image / decompression_bomb)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def decode_image(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode and fully load an image as RGB. Decompression bombs (over `max_pixels`, default
    Pillow's `Image.MAX_IMAGE_PIXELS`) and truncated/corrupt data raise DecodeError."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if limit is not None and img.width * img.height > limit:
                raise DecodeError("decompression_bomb", f"{img.width}x{img.height} exceeds {limit} pixels")
            img.load()
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecodeError("decompression_bomb", str(err)) from err
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad bytes
        raise DecodeError("undecodable_image", f"{type(err).__name__}: {err}") from err
    return img if img.mode == "RGB" else img.convert("RGB")
