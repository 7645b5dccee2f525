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

import functools
import hashlib
import re
import threading
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
_DIGIT_RE = re.compile(r"\d")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _digest(data: str | bytes, size: int = 16) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=size).hexdigest()


@functools.lru_cache(maxsize=1 << 12)
def normalize_url(url: str) -> str:
    """Canonical form of an absolute URL for "same URL" dedup.

    Lower-cases scheme and host (IDNA hosts are kept as given), drops userinfo-free default ports,
    the fragment and tracking parameters (`utm_*`, `fbclid`, `gclid`, ... see `TRACKING_PARAMS`),
    sorts the remaining query parameters (raw `key=value` pairs, their encoding kept), and turns an
    empty path into "/". Other schemes (`data:`, `mailto:`) only lose their fragment.
    Raises ValueError naming the URL if it is not absolute or its port is invalid.

    Memoised (the last 4096 URLs): a page's image URLs are normalised by the filters, by
    `content_hash`, by `image_set_key` and for the image counts; failures are not memoised.
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


@functools.lru_cache(maxsize=1 << 11)
def _normalized_text(text: str) -> str:
    """`normalize_text`, memoised for the last texts (`paragraph_key` and `content_hash` both
    normalise every text node of a document)."""
    return normalize_text(text)


def content_hash(doc: Document) -> str:
    """Exact-duplicate key (32 hex chars): the document's nodes in order, text normalised by
    `normalize_text` and media URLs by `normalize_url`. Same key <=> same content and layout."""
    parts: list[str] = []
    for node in doc.nodes:
        if isinstance(node, TextNode):
            text = _normalized_text(node.text)
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
    norm = _DIGIT_RE.sub("0", _normalized_text(text))
    return _digest(norm, 8) if norm else ""


_SHIFT30, _SHIFT27, _SHIFT31 = np.uint64(30), np.uint64(27), np.uint64(31)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (a bijection; wraps modulo 2**64)."""
    x = x ^ (x >> _SHIFT30)
    x = x * _MIX1
    x = x ^ (x >> _SHIFT27)
    x = x * _MIX2
    return x ^ (x >> _SHIFT31)


def _xorshift(x: np.ndarray, shift: np.uint64, scratch: np.ndarray) -> np.ndarray:
    """x ^= x >> shift, in place."""
    np.right_shift(x, shift, out=scratch)
    x ^= scratch
    return x


def _mix_tail(x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """splitmix64 after its first xor-shift, in place: multiply, xor-shift, multiply, xor-shift."""
    x *= _MIX1
    _xorshift(x, _SHIFT27, scratch)
    x *= _MIX2
    return _xorshift(x, _SHIFT31, scratch)


class _WordHashes(dict):
    """Word (UTF-8 bytes) -> 64-bit BLAKE2b hash, computed on first lookup (`__missing__`), so
    looking up a document's words is one `map` over a dict in C and only new words cost a
    Python call."""

    def __missing__(self, word: bytes) -> int:
        value = self[word] = int.from_bytes(hashlib.blake2b(word, digest_size=8).digest(), "little")
        return value


_WORD_HASH_CACHE = _WordHashes()
_WORD_HASH_CACHE_SIZE = 1 << 17
"""Words hashed so far in this process (word frequencies are Zipfian: most words of a document
were seen in earlier ones); cleared when it reaches this many entries, so memory stays bounded."""


def _word_hashes(words: list[bytes]) -> np.ndarray:
    cache = _WORD_HASH_CACHE
    if len(cache) > _WORD_HASH_CACHE_SIZE:
        cache.clear()
    return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))


_ASCII_SEPARATORS = (bytes(b if chr(b).isalnum() or b == ord("_") else ord(" ") for b in range(128))
                     + bytes(range(128, 256)))
r"""`bytes.translate` table turning every ASCII byte that is not `\w` into a space (other bytes,
including every byte of a multi-byte UTF-8 character, stay)."""
_MAX_SEPARATORS = 64
"""At most this many distinct non-ASCII separators are replaced one by one (`_words`)."""


def _words(text: str) -> list[bytes]:
    r"""The MinHash words of `text`: the `\w+` runs of its NFKC-normalised, lower-cased form, as
    UTF-8 bytes (the bytes their hashes are taken of).

    Equivalent to `_WORD_RE.findall`, at a fraction of its cost (the regex engine asks the
    Unicode database about every character): the few distinct non-ASCII characters that are not
    `\w` (curly quotes, dashes, ...) are replaced by spaces, then the UTF-8 bytes are split with
    every ASCII non-word byte translated to a space."""
    norm = unicodedata.normalize("NFKC", text).lower()
    if not norm.isascii():
        codes = np.frombuffer(norm.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        wide = _sorted_unique(codes[codes > 127]).tolist()
        separators = [ch for ch in map(chr, wide) if not _WORD_RE.match(ch)]
        if len(separators) > _MAX_SEPARATORS:
            return [word.encode("utf-8") for word in _WORD_RE.findall(norm)]
        for ch in separators:
            norm = norm.replace(ch, " ")
    return norm.encode("utf-8", "surrogatepass").translate(_ASCII_SEPARATORS).split()


def shingle_hashes(text: str, *, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """Unique 64-bit hashes of the word `ngram`-grams of `text` (sorted uint64; empty for no words)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    words = _words(text)
    if not words:
        return np.empty(0, dtype=np.uint64)
    hashes = _word_hashes(words)
    # acc = mix(acc ^ w_k) at every position (order-sensitive). splitmix64's first step, the
    # xor-shift by 30, is linear over xor: it is applied to acc and to the words apart.
    hashes ^= hashes >> _SHIFT30
    n = max(len(words) - ngram + 1, 1)
    acc = np.zeros(n, dtype=np.uint64)
    scratch = np.empty(n, dtype=np.uint64)
    for k in range(min(ngram, len(words))):
        if k:
            _xorshift(acc, _SHIFT30, scratch)
        acc ^= hashes[k:k + n]
        _mix_tail(acc, scratch)
    return _sorted_unique(acc)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)` (sorted distinct values) by one sort: numpy 2's `np.unique` goes
    through a hash table first and is an order of magnitude slower on small uint64 arrays."""
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _permutation_keys(num_perm: int, seed: int) -> np.ndarray:
    base = np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    return _splitmix64(np.arange(1, num_perm + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base)


@functools.lru_cache(maxsize=8)
def _permutation_keys_mixed(num_perm: int, seed: int) -> np.ndarray:
    """`a ^ (a >> 30)` of the permutation keys `a`, as a (num_perm, 1) column (read-only)."""
    keys = _permutation_keys(num_perm, seed)
    mixed = (keys ^ (keys >> _SHIFT30))[:, None]
    mixed.flags.writeable = False
    return mixed


_MINHASH_BLOCK = 1 << 16
"""Elements of the (num_perm, shingles) scratch arrays of `minhash_signature` (512 KiB each):
small enough to stay in the CPU's L2 cache, large enough that numpy's per-call cost is small."""

_SCRATCH = threading.local()


def _scratch(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 buffers of at least `size` elements, kept per thread and reused by every call:
    fresh arrays of this size are fresh pages from the kernel, and faulting them in costs more
    than the arithmetic done in them."""
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None or len(buffers[0]) < size:
        buffers = _SCRATCH.buffers = (np.empty(size, dtype=np.uint64), np.empty(size, dtype=np.uint64))
    return buffers


def minhash_signature(text: str, *, num_perm: int = DEFAULT_NUM_PERM, ngram: int = DEFAULT_NGRAM,
                      seed: int = DEFAULT_SEED) -> np.ndarray:
    """MinHash signature (uint64 array of shape `(num_perm,)`) of the word `ngram`-gram set of `text`.

    A text without words gets the all-ones signature (2**64 - 1 everywhere): all such texts collide,
    which is harmless because the word-count filter has already dropped them.

    Permutation i of shingle s is `splitmix64(s ^ a_i)`, whose first step is the xor-shift
    `y ^= y >> 30` of `y = s ^ a_i`. That step is linear over xor, so it equals
    `(s ^ (s >> 30)) ^ (a_i ^ (a_i >> 30))`: it is applied once per shingle and once per key
    instead of once per (permutation, shingle) pair, and the rest of splitmix64 runs in place on
    cache-sized blocks of shingles, in buffers reused across calls (`_scratch`).
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    shingles = shingle_hashes(text, ngram=ngram)
    signature = np.full(num_perm, _MASK64, dtype=np.uint64)
    if not len(shingles):
        return signature
    keys = _permutation_keys_mixed(num_perm, seed)
    shingles = shingles ^ (shingles >> _SHIFT30)
    chunk = min(len(shingles), max(1, _MINHASH_BLOCK // num_perm))
    block, scratch = _scratch(num_perm * chunk)
    for start in range(0, len(shingles), chunk):
        part = shingles[start:start + chunk]
        size = num_perm * len(part)  # contiguous (num_perm, len(part)) views of the buffers
        x, tmp = block[:size].reshape(num_perm, len(part)), scratch[:size].reshape(num_perm, len(part))
        np.bitwise_xor(part[None, :], keys, out=x)
        np.minimum(signature, _mix_tail(x, tmp).min(axis=1), out=signature)
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
