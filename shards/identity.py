"""What makes two images the same image, shared by the ETL split (`pipelines/split.py`), the
evaluation's exclusion of a query's own image, and `flamboyance decontaminate`.

Before download an image is known by its normalised URL; after, by the sha256 of its bytes.
Keys are prefixed strings so the two kinds never collide in one set.
"""

from __future__ import annotations

import hashlib

from flamboyance.preprocess.dedup import normalize_url

__all__ = ["image_bytes_key", "image_url_key"]


def image_url_key(url: str) -> str:
    """`url:<normalised URL>` (host case, default port, tracking parameters and fragment folded;
    the stripped URL when it cannot be normalised, e.g. a relative one)."""
    try:
        return "url:" + normalize_url(url)
    except ValueError:
        return "url:" + url.strip()


def image_bytes_key(data: bytes) -> str:
    """`sha256:<hex digest of the encoded bytes>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
