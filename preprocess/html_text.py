"""Low-level HTML helpers for extraction: decoding page bytes and normalising text.

Decoding order (the HTML standard's, simplified): byte-order mark, the HTTP `Content-Type`
charset, a `<meta charset>` / `<meta http-equiv>` declaration in the first bytes, strict UTF-8,
UTF-8 with a few replaced bytes when the page is evidently UTF-8, then the detector of bs4's
`UnicodeDammit` (`EncodingDetector`, chardet-backed) as the last resort: it is slow, so it runs
only when the cheap ways fail, and only on the first 64 KiB.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
import warnings
from collections.abc import Mapping

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_CHARSET_RE = re.compile(rb"""charset\s*=\s*["']?\s*([A-Za-z0-9_:.+-]+)""", re.I)
_HEADER_CHARSET_RE = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_:.+-]+)""", re.I)
_META_RE = re.compile(rb"<meta\b[^>]*>", re.I)
# How far into the page a <meta charset> declaration is looked for (the standard says 1024 bytes;
# real pages put long <head>s first, so look further).
_META_SCAN_BYTES = 8192

# Characters that carry no visible text: zero-width spaces/joiners, BOM, soft hyphen, and the C0/C1
# controls other than tab/newline/carriage return. Removed before whitespace is collapsed.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff\u180e\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _lookup(name: str | None) -> str | None:
    """Python codec name for a declared charset, or None when unknown or not a text encoding
    a page can be written in (`base64`, `rot13`, `zlib`, `undefined`, `punycode`, a label with a
    NUL byte ...: a page's label is attacker-controlled and must never reach a bytes transform)."""
    if not name:
        return None
    try:
        codec = codecs.lookup(name.strip().lower()).name
    except (LookupError, ValueError):  # unknown label; ValueError: embedded NUL byte
        return None
    if not _is_page_encoding(codec):
        return None
    # The HTML standard maps these labels to supersets; decoding with the subset would fail on
    # the many pages that use the superset's extra characters.
    return {"ascii": "cp1252", "latin-1": "cp1252", "iso8859-1": "cp1252", "iso8859-9": "cp1254",
            "gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949", "shift_jis": "cp932",
            "utf-16": "utf-8"}.get(codec, codec)


# Printable ASCII plus the escape syntaxes of codecs that are text encodings to Python but not
# page encodings (unicode_escape's backslashes, UTF-7's `+...-`, IDNA's `xn--` labels).
_ASCII_PROBE = bytes(range(0x20, 0x7F)) + b"\r\n\t\\x41\\u00e9 +AGE- .xn--nxa. ~{"
_UNICODE_PROBE = "a\u00e9\u20ac\u4e2d\U0001d11e"


@functools.lru_cache(maxsize=256)
def _is_page_encoding(codec: str) -> bool:
    """A rule, not a list: a text codec (bytes <-> str) that either reads ASCII as ASCII, as
    every encoding a `<meta charset>` can be found in does, or is a UTF-16/32 form (NUL bytes in
    ASCII, every code point round-trips)."""
    info = codecs.lookup(codec)
    if not getattr(info, "_is_text_encoding", True):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unicode_escape warns about the probe's backslashes
        return _decodes_ascii(codec) or _is_utf16_or_32(codec)


def _decodes_ascii(codec: str) -> bool:
    try:
        return _ASCII_PROBE.decode(codec) == _ASCII_PROBE.decode("ascii")
    except (UnicodeError, LookupError, ValueError, TypeError):  # "undefined" raises on any use
        return False


def _is_utf16_or_32(codec: str) -> bool:
    try:
        return b"\0" in "a".encode(codec) and _UNICODE_PROBE.encode(codec).decode(codec) == _UNICODE_PROBE
    except (UnicodeError, LookupError, ValueError, TypeError):
        return False


def header_charset(headers: Mapping[str, str] | None) -> str | None:
    """The charset named by a `Content-Type` header (any header-name case), if any."""
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "content-type" and value:
            match = _HEADER_CHARSET_RE.search(value)
            return match.group(1) if match else None
    return None


def meta_charset(head: bytes) -> str | None:
    """The charset declared by a `<meta>` tag in the first bytes of a page, if any."""
    for match in _META_RE.finditer(head[:_META_SCAN_BYTES]):
        charset = _CHARSET_RE.search(match.group(0))
        if charset:
            return charset.group(1).decode("ascii", "replace")
    return None


def decode_html(data: bytes, headers: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Decode page bytes; returns (text, encoding used). Never raises on bad bytes."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, "replace"), encoding
    for declared in (header_charset(headers), meta_charset(data)):
        encoding = _lookup(declared)
        if encoding:
            try:
                return data.decode(encoding), encoding
            except (UnicodeError, LookupError, ValueError):
                # A wrong declaration is common (pages saved as UTF-8 still saying latin-1):
                # fall through to UTF-8 and the detector rather than trusting it.
                break
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Crawled pages are often UTF-8 with a few broken bytes (a truncated record, one pasted
    # legacy character): keep UTF-8 when the damage is tiny rather than guessing a legacy codec.
    if _looks_utf8(data):
        return data.decode("utf-8", "replace"), "utf-8"
    return _detect(data)


def _looks_utf8(data: bytes) -> bool:
    """Most non-ASCII bytes form valid UTF-8 sequences (rather than single legacy-codec bytes)."""
    sequences = _UTF8_MULTIBYTE.findall(data)
    stray = len(_HIGH_BYTE.findall(data)) - sum(len(m) for m in sequences)
    return bool(sequences) and stray * 10 <= len(sequences)


_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")
# The detector looks at this much of the page: enough to tell encodings apart, and it is slow.
_DETECT_BYTES = 1 << 16


def _detect(data: bytes) -> tuple[str, str]:
    """Guess the encoding with bs4's detector (UnicodeDammit's, chardet-backed): the first
    candidate that decodes a sample of the page strictly wins; cp1252 decodes anything."""
    from bs4.dammit import EncodingDetector  # slow import and slow detector: fallback only

    sample = data[:_DETECT_BYTES]
    for candidate in EncodingDetector(sample, is_html=True).encodings:
        encoding = _lookup(candidate)
        if encoding is None:
            continue
        try:
            # Incremental: a multi-byte character cut at the sample's end is not an error.
            codecs.getincrementaldecoder(encoding)().decode(sample, final=len(data) <= _DETECT_BYTES)
        except (UnicodeError, LookupError, ValueError):
            continue
        return data.decode(encoding, "replace"), encoding
    return data.decode("cp1252", "replace"), "cp1252"


def strip_invisible(text: str) -> str:
    """Drop zero-width characters, soft hyphens and control characters (keeps tab/newline)."""
    return _INVISIBLE.sub("", text)


def normalize_text(text: str) -> str:
    """NFC, invisible characters removed, every whitespace run collapsed to one space, stripped."""
    text = " ".join(_INVISIBLE.sub("", text).split())
    return text if text.isascii() else unicodedata.normalize("NFC", text)



