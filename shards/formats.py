"""The three shard kinds: sample types, member naming and parquet schemas, defined once.

Every kind is a webdataset tar `{shard:05d}.tar` plus `{shard:05d}.parquet` (one row per input,
with `status` / `error_message`), `{shard:05d}_stats.json` and a dataset-level `manifest.json`.
See FORMATS.md for the layout of each kind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

Kind = Literal["m3w", "image_text", "video_text"]
KINDS: tuple[str, ...] = ("m3w", "image_text", "video_text")
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
SUCCESS = "success"

# A key is what webdataset groups members by: the name up to the first dot, so no dots and no
# path separators; we also keep it to a portable character set.
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def check_key(key: str) -> str:
    """Return `key` if it is a valid sample key (no dots, no slashes), else raise ValueError."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"invalid sample key {key!r}: keys are non-empty [A-Za-z0-9_-] (no dots, no '/')")
    return key


def shard_name(shard_index: int) -> str:
    """`{shard:05d}`, the stem of every file of one shard."""
    if shard_index < 0:
        raise ValueError(f"shard index must be >= 0, got {shard_index}")
    return f"{shard_index:05d}"


def image_extension(data: bytes) -> str:
    """The member extension for encoded image bytes, from their magic number (jpg if unknown)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"


def indexed_member(index: int, ext: str) -> str:
    """The suffix of the index-th ordered image/frame member: `000.jpg` (zero-padded: sorts in order)."""
    if not 0 <= index < 1000:
        raise ValueError(f"at most 1000 images/frames per sample are supported, got index {index}")
    return f"{index:03d}.{ext}"


def json_bytes(obj: Any, *, indent: int | None = None) -> bytes:
    """Deterministic JSON: sorted keys, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=indent, allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class M3WSample:
    """One interleaved web document: JSON document plus its images' encoded bytes in page order.

    `document` holds the OBELICS layout (`url`, `texts`, `images`, `metadata`, `general_metadata`)
    plus `text` (the M3W sequence), `image_sizes` ([[w, h], ...]), the WARC location, language and
    filter scores. `images[i]` is the i-th non-null entry of `document["images"]`.
    """

    key: str
    document: dict[str, Any]
    images: list[bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageTextSample:
    """One image-caption pair (img2dataset layout); `metadata` is the `{key}.json` member."""

    key: str
    image: bytes
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoTextSample:
    """One video clip: frames sampled at `metadata["fps"]` (encoded bytes, in time order), caption.

    `metadata` holds `duration`, `fps`, `timestamps` (seconds, one per frame) and `url`;
    `video` is the original mp4, kept only when the writer was asked to.
    """

    key: str
    frames: list[bytes]
    caption: str
    metadata: dict[str, Any] = field(default_factory=dict)
    video: bytes | None = None


Sample = M3WSample | ImageTextSample | VideoTextSample
SAMPLE_TYPES: dict[str, type] = {"m3w": M3WSample, "image_text": ImageTextSample, "video_text": VideoTextSample}


def check_kind(kind: str) -> str:
    """Return `kind` if it is one of KINDS, else raise ValueError naming the choices."""
    if kind not in KINDS:
        raise ValueError(f"unknown shard kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


# --- parquet: one row per input sample -------------------------------------------------------

# image_text follows img2dataset's column order (its input columns url/caption, then the
# downloader's own columns) so stats read both the same way.
PARQUET_SCHEMAS: dict[str, pa.Schema] = {
    "image_text": pa.schema([
        ("url", pa.string()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
        ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("original_width", pa.int32()), ("original_height", pa.int32()), ("sha256", pa.string()),
    ]),
    "m3w": pa.schema([
        ("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()), ("url", pa.string()),
        ("warc_filename", pa.string()), ("warc_offset", pa.int64()), ("language", pa.string()),
        ("num_images", pa.int32()), ("num_texts", pa.int32()), ("num_words", pa.int32()),
        ("image_widths", pa.list_(pa.int32())), ("image_heights", pa.list_(pa.int32())),
        ("text", pa.string()),
    ]),
    "video_text": pa.schema([
        ("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()), ("url", pa.string()),
        ("caption", pa.string()), ("duration", pa.float64()), ("fps", pa.float64()),
        ("num_frames", pa.int32()), ("frame_width", pa.int32()), ("frame_height", pa.int32()),
        ("has_video", pa.bool_()),
    ]),
}


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    """(width, height) from the image header only (no pixel decode); (None, None) if unreadable."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.width), int(img.height)
    except Exception:  # noqa: BLE001 - any header failure means "size unknown", the reader judges it
        return None, None


def success_row(sample: Sample) -> dict[str, Any]:
    """The parquet row describing a successfully written sample."""
    if isinstance(sample, ImageTextSample):
        meta = sample.metadata
        width, height = _image_size(sample.image)
        import hashlib

        return {"url": meta.get("url"), "caption": sample.caption, "key": sample.key, "status": SUCCESS,
                "error_message": None, "width": width, "height": height,
                "original_width": meta.get("original_width", width),
                "original_height": meta.get("original_height", height),
                "sha256": hashlib.sha256(sample.image).hexdigest()}
    if isinstance(sample, M3WSample):
        doc = sample.document
        general = doc.get("general_metadata") or {}
        sizes = doc.get("image_sizes") or [list(_image_size(b)) for b in sample.images]
        texts = [t for t in doc.get("texts") or [] if t is not None]
        return {"key": sample.key, "status": SUCCESS, "error_message": None,
                "url": doc.get("url") or general.get("url"),
                "warc_filename": doc.get("warc_filename", general.get("warc_filename")),
                "warc_offset": doc.get("warc_offset", general.get("warc_offset")),
                "language": doc.get("language", general.get("language")),
                "num_images": len(sample.images), "num_texts": len(texts),
                "num_words": sum(len(t.split()) for t in texts),
                "image_widths": [s[0] for s in sizes], "image_heights": [s[1] for s in sizes],
                "text": doc.get("text")}
    if isinstance(sample, VideoTextSample):
        meta = sample.metadata
        width, height = _image_size(sample.frames[0]) if sample.frames else (None, None)
        return {"key": sample.key, "status": SUCCESS, "error_message": None, "url": meta.get("url"),
                "caption": sample.caption, "duration": meta.get("duration"), "fps": meta.get("fps"),
                "num_frames": len(sample.frames), "frame_width": width, "frame_height": height,
                "has_video": sample.video is not None}
    raise TypeError(f"not a shard sample: {type(sample).__name__}")


def sample_members(sample: Sample) -> list[tuple[str, bytes]]:
    """The tar members (name, bytes) of one sample, in the order they are written."""
    key = check_key(sample.key)
    if isinstance(sample, ImageTextSample):
        # img2dataset writes {key}.jpg/.png, {key}.txt, {key}.json (json.dumps(meta, indent=4))
        meta = {**sample.metadata, "key": key}
        return [(f"{key}.{image_extension(sample.image)}", sample.image),
                (f"{key}.txt", sample.caption.encode("utf-8")),
                (f"{key}.json", json_bytes(meta, indent=4))]
    if isinstance(sample, M3WSample):
        n_doc_images = sum(1 for i in sample.document.get("images") or [] if i is not None)
        if n_doc_images != len(sample.images):
            raise ValueError(f"m3w sample {key!r}: document lists {n_doc_images} images but "
                             f"{len(sample.images)} image payloads were given")
        document = sample.document
        if "image_sizes" not in document:  # per-image width/height belong in the document
            document = {**document, "image_sizes": [list(_image_size(b)) for b in sample.images]}
        members = [(f"{key}.json", json_bytes(document))]
        members += [(f"{key}.{indexed_member(i, image_extension(b))}", b) for i, b in enumerate(sample.images)]
        return members
    if isinstance(sample, VideoTextSample):
        timestamps = sample.metadata.get("timestamps")
        if timestamps is not None and len(timestamps) != len(sample.frames):
            raise ValueError(f"video_text sample {key!r}: {len(timestamps)} timestamps for "
                             f"{len(sample.frames)} frames")
        members = [(f"{key}.json", json_bytes(sample.metadata)),
                   (f"{key}.txt", sample.caption.encode("utf-8"))]
        members += [(f"{key}.{indexed_member(i, image_extension(b))}", b) for i, b in enumerate(sample.frames)]
        if sample.video is not None:
            members.append((f"{key}.mp4", sample.video))
        return members
    raise TypeError(f"not a shard sample: {type(sample).__name__}")
