"""Low-level HTML helpers for extraction: decoding page bytes and normalising text.

Decoding order (the HTML standard's, simplified): byte-order mark, the HTTP `Content-Type`
charset, a `<meta charset>` / `<meta http-equiv>` declaration in the first bytes, strict UTF-8,
then bs4's `UnicodeDammit` detector as the last resort (it is slow, so it runs only when the
cheap ways fail).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
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
    """Python codec name for a declared charset, or None when unknown."""
    if not name:
        return None
    try:
        codec = codecs.lookup(name.strip().lower()).name
    except LookupError:
        return None
    # The HTML standard maps these labels to supersets; decoding with the subset would fail on
    # the many pages that use the superset's extra characters.
    return {"ascii": "cp1252", "latin-1": "cp1252", "iso8859-1": "cp1252", "iso8859-9": "cp1254",
            "gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949", "shift_jis": "cp932",
            "utf-16": "utf-8"}.get(codec, codec)


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
            except UnicodeDecodeError:
                # A wrong declaration is common (pages saved as UTF-8 still saying latin-1):
                # fall through to UTF-8 and the detector rather than trusting it.
                break
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from bs4 import UnicodeDammit  # slow detector: only for pages the cheap ways cannot decode

    dammit = UnicodeDammit(data[:1 << 20], is_html=True)
    encoding = _lookup(dammit.original_encoding) or "cp1252"
    return data.decode(encoding, "replace"), encoding


def strip_invisible(text: str) -> str:
    """Drop zero-width characters, soft hyphens and control characters (keeps tab/newline)."""
    return _INVISIBLE.sub("", text)


def normalize_text(text: str) -> str:
    """NFC, invisible characters removed, every whitespace run collapsed to one space, stripped."""
    text = " ".join(_INVISIBLE.sub("", text).split())
    return text if text.isascii() else unicodedata.normalize("NFC", text)
