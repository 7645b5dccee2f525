"""Dedup keys: URL normalisation, exact content hashes, MinHash/LSH near-duplicate keys, image-set
keys and paragraph keys for within-domain boilerplate counting.

All hashes are deterministic across processes, machines and `PYTHONHASHSEED` (BLAKE2b and a
splitmix64 mixer; Python's `hash()` is never used), so keys computed by different Beam workers agree.

MinHash (datatrove defaults): words are lower-cased `\\w+` runs of the NFKC-normalised text;
shingles are word 5-grams (a text with fewer words is one shingle); each shingle gets a 64-bit hash;
permutation i is `splitmix64(h XOR a_i)`, a bijection of the 64-bit space, with `a_i` derived from
`seed`; the signature is the per-permutation minimum (uint64, shape `(num_perm,)`). LSH splits the
signature into 14 bands x 8 rows; two texts with Jaccard similarity s share at least one band key
with probability 1 - (1 - s^8)^14 (0.92 at s = 0.8, 0.03 at s = 0.5).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import numpy as np

from .document import Document, ImageNode, TextNode, VideoNode

DEFAULT_NUM_PERM = 112
DEFAULT_BANDS = 14
DEFAULT_ROWS = 8
DEFAULT_NGRAM = 5
DEFAULT_SEED = 1

TRACKING_PARAMS = frozenset({"fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid",
                             "mc_cid", "mc_eid", "igshid", "_ga", "_gl"})
"""Query parameters dropped by `normalize_url` (besides every `utm_*`)."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ws": 80, "wss": 443}
_WORD_RE = re.compile(r"\w+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _digest(data: str | bytes, size: int = 16) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=size).hexdigest()


def normalize_url(url: str) -> str:
    """Canonical form of an absolute URL for "same URL" dedup.

    Lower-cases scheme and host (IDNA hosts are kept as given), drops userinfo-free default ports,
    the fragment and tracking parameters (`utm_*`, `fbclid`, `gclid`, ... see `TRACKING_PARAMS`),
    sorts the remaining query parameters (raw `key=value` pairs, their encoding kept), and turns an
    empty path into "/". Other schemes (`data:`, `mailto:`) only lose their fragment.
    Raises ValueError naming the URL if it is not absolute or its port is invalid.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"cannot normalise URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise ValueError(f"cannot normalise URL {url!r}: not absolute (no scheme)")
    if scheme not in _DEFAULT_PORTS:
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    if not parts.hostname:
        raise ValueError(f"cannot normalise URL {url!r}: no host")
    host = parts.hostname.rstrip(".")  # .hostname is lower-cased
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        host = f"{userinfo}@{host}"
    pairs = [p for p in parts.query.split("&") if p]
    kept = []
    for pair in pairs:
        key = unquote(pair.split("=", 1)[0]).lower()
        if key.startswith("utm_") or key in TRACKING_PARAMS:
            continue
        kept.append(pair)
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~") or "/"
    return urlunsplit((scheme, host, path, "&".join(sorted(kept)), ""))


def _safe_normalize(url: str) -> str:
    try:
        return normalize_url(url)
    except ValueError:
        return url.strip()


def normalize_text(text: str) -> str:
    """NFKC, lower-case, whitespace collapsed to single spaces: the text form behind all text keys."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def content_hash(doc: Document) -> str:
    """Exact-duplicate key (32 hex chars): the document's nodes in order, text normalised by
    `normalize_text` and media URLs by `normalize_url`. Same key <=> same content and layout."""
    parts: list[str] = []
    for node in doc.nodes:
        if isinstance(node, TextNode):
            text = normalize_text(node.text)
            if text:
                parts.append("T" + text)
        elif isinstance(node, ImageNode):
            parts.append("I" + _safe_normalize(node.url))
        elif isinstance(node, VideoNode) and node.sources:
            parts.append("V" + _safe_normalize(node.sources[0]))
    return _digest("\x1e".join(parts))


def image_set_key(doc: Document) -> str:
    """Key of the *set* of normalised image URLs (32 hex chars), "" for a document without images.

    Pages with the same image set are captures of the same page (OB keeps the newest)."""
    urls = sorted({_safe_normalize(image.url) for image in doc.images})
    return _digest("\n".join(urls)) if urls else ""


def domain_of(url: str) -> str:
    """The host of `url`, lower-cased, without port and without a leading "www." ("" if none).

    This is the host, not the registrable domain (no public-suffix list): blog.example.com and
    example.com count as different domains for paragraph boilerplate."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    return host[4:] if host.startswith("www.") else host


def paragraph_key(text: str) -> str:
    """Key (16 hex chars) of a paragraph for counting repeats within a domain; digits are folded to
    "0" so "© 2023" and "© 2024" footers count as the same paragraph. "" for blank text."""
    norm = re.sub(r"\d", "0", normalize_text(text))
    return _digest(norm, 8) if norm else ""


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (a bijection; wraps modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_WORD_HASH_CACHE: dict[str, int] = {}
_WORD_HASH_CACHE_SIZE = 1 << 17
"""Words hashed so far in this process (word frequencies are Zipfian: most words of a document
were seen in earlier ones); cleared when it reaches this many entries, so memory stays bounded."""


def _word_hashes(words: list[str]) -> np.ndarray:
    cache = _WORD_HASH_CACHE
    if len(cache) > _WORD_HASH_CACHE_SIZE:
        cache.clear()
    for word in set(words).difference(cache):
        cache[word] = int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"),
                                                     digest_size=8).digest(), "little")
    return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))


def shingle_hashes(text: str, *, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """Unique 64-bit hashes of the word `ngram`-grams of `text` (sorted uint64; empty for no words)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    words = _WORD_RE.findall(unicodedata.normalize("NFKC", text).lower())
    if not words:
        return np.empty(0, dtype=np.uint64)
    hashes = _word_hashes(words)
    n = max(len(words) - ngram + 1, 1)
    acc = np.zeros(n, dtype=np.uint64)
    for k in range(min(ngram, len(words))):
        # order-sensitive combination: mix(acc ^ w_k) at every position
        acc = _splitmix64(acc ^ hashes[k:k + n])
    return np.unique(acc)


def _permutation_keys(num_perm: int, seed: int) -> np.ndarray:
    base = np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    return _splitmix64(np.arange(1, num_perm + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base)


def minhash_signature(text: str, *, num_perm: int = DEFAULT_NUM_PERM, ngram: int = DEFAULT_NGRAM,
                      seed: int = DEFAULT_SEED) -> np.ndarray:
    """MinHash signature (uint64 array of shape `(num_perm,)`) of the word `ngram`-gram set of `text`.

    A text without words gets the all-ones signature (2**64 - 1 everywhere): all such texts collide,
    which is harmless because the word-count filter has already dropped them.
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    shingles = shingle_hashes(text, ngram=ngram)
    keys = _permutation_keys(num_perm, seed)
    signature = np.full(num_perm, _MASK64, dtype=np.uint64)
    chunk = max(1, 2**20 // num_perm)  # bound the (num_perm, chunk) scratch array to ~8 MiB
    for start in range(0, len(shingles), chunk):
        block = _splitmix64(shingles[None, start:start + chunk] ^ keys[:, None])  # (num_perm, chunk)
        np.minimum(signature, block.min(axis=1), out=signature)
    return signature


def lsh_band_keys(signature: np.ndarray, *, bands: int = DEFAULT_BANDS, rows: int = DEFAULT_ROWS) -> list[str]:
    """One key per LSH band: `"{band:02d}:{16 hex chars}"`. Documents sharing any key are
    near-duplicate candidates. Needs `len(signature) >= bands * rows`."""
    sig = np.asarray(signature, dtype=np.uint64)
    if sig.ndim != 1 or sig.shape[0] < bands * rows:
        raise ValueError(f"signature of shape {sig.shape} is too short for {bands} bands x {rows} rows")
    le = sig.astype("<u8")
    return [f"{band:02d}:{hashlib.blake2b(le[band * rows:(band + 1) * rows].tobytes(), digest_size=8).hexdigest()}"
            for band in range(bands)]


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two MinHash signatures: the fraction of equal slots."""
    a, b = np.asarray(sig_a), np.asarray(sig_b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"signatures must be 1-D of equal non-zero length, got {a.shape} and {b.shape}")
    return float(np.count_nonzero(a == b)) / a.size
