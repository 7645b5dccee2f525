"""Reading and writing WARC files (ISO 28500, WARC/1.0 and 1.1).

`read_warc` yields the HTML responses of a WARC, gzipped (one gzip member per record, the
Common Crawl convention) or not, over any fsspec URL. Bad input never stops the read: each
skipped record is counted by reason and reading goes on. After a damaged record (bad header, a
`Content-Length` that does not end at a record boundary) the reader resynchronises on the next
`WARC/1.` line; the records a corrupt or truncated gzip member still holds are read, then the
reader scans for the next gzip member that decompresses to a WARC record. Records Common Crawl
cut at its size cap (`WARC-Truncated`) are kept and marked `truncated`.

`WarcWriter` writes request/response records, one gzip member each, so crawled pages and
Common Crawl pages take the same path downstream.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import gzip
import hashlib
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import fsspec

__all__ = [
    "HTML_TYPES",
    "PageRecord",
    "WarcWriter",
    "decode_http_body",
    "parse_http_head",
    "read_warc",
    "sniff_html",
]

GZIP_MAGIC = b"\x1f\x8b\x08"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

_CHUNK = 1 << 16
_MAX_HEAD_BYTES = 64 << 10  # WARC or HTTP header block
_MAX_HEADERS = 200
# A gzip member decompresses into a spooled buffer: in memory up to this size, on disk beyond.
_SPOOL_MEMORY = 8 << 20
# Web pages (HTML, WARC headers) inflate 3-15x; a member past this ratio is a decompression bomb.
_MAX_INFLATION = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class PageRecord:
    """One HTML page as fetched: a WARC response record with its HTTP message parsed.

    `body` is the entity body with transfer- and content-encoding removed. `warc_offset` is the
    byte offset of the record's gzip member (or of the record, for uncompressed WARCs) in
    `warc_filename`, so a pipeline can point back into the archive.
    """

    url: str
    fetch_time: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    body: bytes = b""
    warc_filename: str = ""
    warc_offset: int = 0
    truncated: bool = False
    """The archive cut the body (`WARC-Truncated`, e.g. Common Crawl's 1 MiB cap): a prefix."""


class _Skip(Exception):
    """A record that is skipped; `reason` is the Counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# HTTP message helpers (shared with the crawler)


def parse_http_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Parse an HTTP/1.x response head (status line + headers, without the blank line).

    Returns (status, headers) with lower-case header names; repeated headers are joined with
    ", ". Raises ValueError naming the problem when the head is not an HTTP response.
    """
    lines = head.split(b"\n")
    status_line = lines[0].rstrip(b"\r").decode("latin-1")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    if len(lines) - 1 > _MAX_HEADERS:
        raise ValueError(f"more than {_MAX_HEADERS} HTTP headers")
    last = None
    for raw in lines[1:]:
        line = raw.rstrip(b"\r").decode("latin-1")
        if not line:
            continue
        if line[0] in " \t" and last is not None:  # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue  # tolerate junk lines like real-world crawlers do
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        last = name
    return int(parts[1]), headers


def mime_type(content_type: str | None) -> str:
    """`text/html; charset=UTF-8` -> `text/html`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def sniff_html(body: bytes) -> bool:
    """Whether a body without a Content-Type looks like an HTML document."""
    head = body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]


def _dechunk(data: bytes, max_bytes: int, cut: bool = False) -> bytes:
    """De-chunk a body; a `cut` one (the archive truncated it) keeps the chunks it has."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\n", pos)
        if eol < 0:
            if cut:
                return bytes(out)
            raise _Skip("bad_chunked_encoding")
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _Skip("bad_chunked_encoding") from None
        pos = eol + 1
        if size == 0:
            return bytes(out)
        if pos + size > len(data):
            if cut:
                return bytes(out + data[pos:])[:max_bytes]
            raise _Skip("bad_chunked_encoding")
        out += data[pos : pos + size]
        if len(out) > max_bytes:
            raise _Skip("body_too_large")
        pos += size
        if data[pos : pos + 2] == b"\r\n":
            pos += 2
        elif data[pos : pos + 1] == b"\n":
            pos += 1


def _inflate(data: bytes, wbits: int, max_bytes: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    out = decoder.decompress(data, max_bytes + 1)
    if len(out) > max_bytes:
        raise _Skip("body_too_large")
    return out


def decode_http_body(body: bytes, headers: dict[str, str], *, max_bytes: int) -> bytes:
    """Remove transfer-encoding (chunked) and content-encoding (gzip, deflate) from a body.

    Raises ValueError with a reason (`bad_chunked_encoding`, `bad_content_encoding`,
    `unsupported_content_encoding`, `body_too_large`) when it cannot.
    """
    try:
        return _decode_http_body(body, headers, max_bytes=max_bytes)
    except _Skip as exc:
        raise ValueError(exc.reason) from None


def _decode_http_body(body: bytes, headers: dict[str, str], *, max_bytes: int, cut: bool = False) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        # Common Crawl stores bodies de-chunked but keeps the header; only de-chunk real chunks.
        if _looks_chunked(body):
            body = _dechunk(body, max_bytes, cut)
    encodings = [e.strip().lower() for e in headers.get("content-encoding", "").split(",") if e.strip()]
    for encoding in reversed(encodings):
        if encoding in ("identity", "none"):
            continue
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise _Skip("unsupported_content_encoding")
        try:
            if encoding == "deflate":
                try:
                    body = _inflate(body, zlib.MAX_WBITS, max_bytes)  # zlib-wrapped, per RFC
                except zlib.error:
                    body = _inflate(body, -zlib.MAX_WBITS, max_bytes)  # raw, as some servers send
            else:
                body = _inflate(body, 16 + zlib.MAX_WBITS, max_bytes)
        except zlib.error:
            # Stored already decoded (Common Crawl does this for some records)?
            if not body[:2] == b"\x1f\x8b" and encoding != "deflate":
                continue
            raise _Skip("bad_content_encoding") from None
    if len(body) > max_bytes:
        raise _Skip("body_too_large")
    return body


def _looks_chunked(body: bytes) -> bool:
    eol = body.find(b"\n", 0, 100)
    if eol <= 0:
        return False
    size_text = body[:eol].split(b";", 1)[0].strip()
    try:
        int(size_text, 16)
    except ValueError:
        return False
    return bool(size_text)


# ---------------------------------------------------------------------------------------------
# Reading


class _Source:
    """A forward reader over a raw byte stream that remembers its absolute position."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._f = fileobj
        self._buf = b""
        self._buf_start = 0  # absolute offset of _buf[0]
        self.pos = 0
        self.head_start = 0  # where the record head being read began (for resynchronising)

    def _fill(self, need: int) -> None:
        while self._buf_start + len(self._buf) < self.pos + need:
            data = self._f.read(max(_CHUNK, need))
            if not data:
                return
            # drop consumed bytes before appending so the buffer stays bounded
            drop = self.pos - self._buf_start
            if drop > 0:
                self._buf = self._buf[drop:]
                self._buf_start = self.pos
            self._buf += data

    def peek(self, n: int) -> bytes:
        self._fill(n)
        start = self.pos - self._buf_start
        return self._buf[start : start + n]

    def read(self, n: int) -> bytes:
        out = self.peek(n)
        self.pos += len(out)
        return out

    def readline(self, limit: int) -> bytes:
        """Read up to and including the next newline, at most `limit` bytes."""
        while True:
            start = self.pos - self._buf_start
            eol = self._buf.find(b"\n", start, start + limit)
            if eol >= 0:
                return self.read(eol - start + 1)
            have = len(self._buf) - start
            if have >= limit:
                return self.read(limit)
            end_before = self._buf_start + len(self._buf)
            self._fill(have + _CHUNK)
            if self._buf_start + len(self._buf) == end_before:  # end of input
                return self.read(have)

    def seek(self, pos: int) -> None:
        """Move to an absolute position; within the buffer it is free, otherwise a real seek."""
        if self._buf_start <= pos <= self._buf_start + len(self._buf):
            self.pos = pos
            return
        self._f.seek(pos)
        self._buf, self._buf_start, self.pos = b"", pos, pos

    def find(self, needle: bytes, start: int, end: int | None = None) -> int:
        """Absolute offset of the next `needle` at or after `start` (and starting before `end`),
        or -1 at end of input."""
        self.seek(start)
        while True:
            rel = self.pos - self._buf_start
            hit = self._buf.find(needle, rel)
            if hit >= 0 and (end is None or self._buf_start + hit < end):
                return self._buf_start + hit
            if hit >= 0 or (end is not None and self._buf_start + len(self._buf) >= end + len(needle)):
                return -1
            # keep the last len(needle)-1 bytes in case the needle spans two reads
            keep_from = max(rel, len(self._buf) - len(needle) + 1)
            self.pos = self._buf_start + keep_from
            before_end = self._buf_start + len(self._buf)
            self._fill(len(self._buf) - keep_from + _CHUNK)
            if self._buf_start + len(self._buf) == before_end:
                return -1


def _inflate_member(source: _Source, start: int, limit: int) -> tuple[BinaryIO, int, str | None]:
    """Decompress the gzip member at `start` into a spooled buffer (CRC checked by zlib).

    Returns (buffer positioned at 0, member end offset, damage). Output beyond `limit` bytes,
    and beyond `_MAX_INFLATION` times the compressed bytes read, is decompressed (to find the
    member's end) but not kept. A corrupt or truncated member is not an error: `damage` says which
    ("corrupt_gzip", "truncated_gzip") and the buffer holds what decompressed before it.
    """
    source.seek(start)
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
    kept = 0
    consumed = 0
    damage = None
    try:
        while not decoder.eof:
            if decoder.unconsumed_tail:
                data = decoder.unconsumed_tail
            else:
                data = source.read(_CHUNK)
                consumed += len(data)
            # With no input left, zlib may still hold output it could not return before.
            chunk = decoder.decompress(data, _CHUNK * 4)
            # A member that inflates far more than web pages do is a bomb: keep only what an
            # oversize record needs to be recognised. A big whole-file gzip is kept whole.
            keep = max(limit, _MAX_INFLATION * consumed)
            if kept <= keep:
                out.write(chunk[: keep + 1 - kept])
                kept += len(chunk)
            if not data and not chunk and not decoder.eof:
                damage = "truncated_gzip"
                break
    except zlib.error:
        damage = "corrupt_gzip"
    end = start + consumed - len(decoder.unused_data)
    out.seek(0)
    return out, end, damage


@contextlib.contextmanager
def _open_raw(path_or_url: str) -> Iterator[BinaryIO]:
    # compression=None: we read the gzip members ourselves to know their offsets.
    try:
        handle = fsspec.open(path_or_url, "rb", compression=None).open()
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot open WARC {path_or_url!r}: {exc}") from exc
    with handle:
        if handle.seekable():
            yield handle
            return
        # Resynchronising after a corrupt member seeks back; spool unseekable streams.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
            while chunk := handle.read(_CHUNK * 16):
                spool.write(chunk)
            spool.seek(0)
            yield spool


def read_warc(
    path_or_url: str,
    *,
    skipped: collections.Counter | None = None,
    max_body_bytes: int = 5 * 2**20,
    only_ok: bool = True,
    skip_truncated: bool = False,
) -> Iterator[PageRecord]:
    """Yield the HTML response records of a WARC file as `PageRecord`s.

    `path_or_url` is any fsspec URL (local path, `s3://`, `http://`, ...), gzipped per record
    (`.warc.gz`, detected by its magic bytes) or plain. Records cut by the archive
    (`WARC-Truncated`) are returned with `truncated=True`, or skipped as `warc_truncated` when
    `skip_truncated`. Records that are not returned are counted into `skipped[reason]`:
    `not_response`, `warc_truncated`, `not_html`, `http_status` (non-2xx, when `only_ok`),
    `body_too_large` (over `max_body_bytes`), `corrupt_gzip` / `truncated_gzip` (the record a
    damaged member cut off), `invalid_record`, `bad_content_length` (a length that runs into the
    next record; reading resumes there), `truncated_record` (the input ends inside it),
    `bad_http`, `bad_chunked_encoding`, `bad_content_encoding`, `unsupported_content_encoding`.
    """
    skipped = collections.Counter() if skipped is None else skipped
    name = path_or_url.rstrip("/").rsplit("/", 1)[-1]
    options = _ReadOptions(max_body_bytes=max_body_bytes, only_ok=only_ok, skip_truncated=skip_truncated)
    with _open_raw(path_or_url) as raw:
        source = _Source(raw)
        if source.peek(3) == GZIP_MAGIC:
            yield from _read_gzipped(source, name, skipped, options)
        else:
            yield from _read_records(source, 0, name, skipped, options, per_member=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class _ReadOptions:
    max_body_bytes: int
    only_ok: bool
    skip_truncated: bool


def _read_gzipped(source: _Source, name: str, skipped: collections.Counter,
                  options: _ReadOptions) -> Iterator[PageRecord]:
    # A member whose decompressed size exceeds this can only hold an oversize record.
    limit = options.max_body_bytes + 4 * _MAX_HEAD_BYTES
    pos = 0
    while source.peek(1):
        if source.peek(3) != GZIP_MAGIC:
            if not source.peek(4096).strip(b"\r\n\t \x00"):
                return  # trailing padding
            skipped["corrupt_gzip"] += 1  # bytes between members that are not a member
            pos = _resync(source, pos + 1, limit)
            if pos < 0:
                return
        member, end, damage = _inflate_member(source, pos, limit)
        with member:
            counted = skipped[damage] if damage else 0
            yield from _read_records(_Source(member), pos, name, skipped, options, per_member=True,
                                     cut_reason=damage or "truncated_record")
            if damage and skipped[damage] == counted:
                skipped[damage] += 1  # the damage cut no record in half, but what followed is lost
        if damage:
            pos = _resync(source, pos + 1, limit)
            if pos < 0:
                return
            continue
        pos = end
        source.seek(pos)


def _resync(source: _Source, start: int, limit: int) -> int:
    """Offset of the next gzip member at or after `start` that holds a WARC record, or -1."""
    while True:
        candidate = source.find(GZIP_MAGIC, start)
        if candidate < 0:
            return -1
        member, _, _ = _inflate_member(source, candidate, limit)
        with member:
            if member.read(5) == b"WARC/":
                source.seek(candidate)
                return candidate
        start = candidate + 1


def _read_head(source: _Source) -> tuple[bytes | None, int]:
    """Read header lines up to the blank line; (None, pos) at clean end of input. Also returns
    the offset of the first header line (blank lines between records are skipped)."""
    lines = []
    total = 0
    start = source.pos
    while True:
        if not lines:
            start = source.head_start = source.pos
        line = source.readline(_MAX_HEAD_BYTES)
        if not line:
            if not lines:
                return None, start
            raise _Skip("truncated_record")
        if not lines and not line.strip():
            continue  # blank lines between records
        if not line.strip():
            return b"".join(lines), start
        lines.append(line)
        total += len(line)
        if total > _MAX_HEAD_BYTES or len(lines) > _MAX_HEADERS:
            raise _Skip("invalid_record")


def _parse_warc_head(head: bytes) -> dict[str, str]:
    lines = head.split(b"\n")
    if not lines[0].startswith(b"WARC/"):
        raise _Skip("invalid_record")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.decode("utf-8", "replace").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _read_records(
    source: _Source,
    base_offset: int,
    name: str,
    skipped: collections.Counter,
    options: _ReadOptions,
    *,
    per_member: bool,
    cut_reason: str = "truncated_record",
) -> Iterator[PageRecord]:
    """The records of a plain WARC or of one decompressed gzip member. `cut_reason` counts a
    record the input ends inside (a damaged gzip member names its damage). Of a damaged member,
    only records that another record follows are kept."""
    damaged = cut_reason != "truncated_record"
    while True:
        try:
            head, head_start = _read_head(source)
        except _Skip as exc:
            skipped[cut_reason if exc.reason == "truncated_record" else exc.reason] += 1
            if not _resync_plain(source, source.head_start):
                return
            continue
        if head is None:
            return
        offset = base_offset if per_member else head_start
        try:
            warc = _parse_warc_head(head)
            length = int(warc.get("content-length", ""))
            if length < 0:
                raise ValueError(length)
        except (_Skip, ValueError):
            skipped["invalid_record"] += 1
            if not _resync_plain(source, head_start):
                return
            continue
        block_start = source.pos
        block_end = block_start + length
        reason = None
        try:
            record = _parse_record(source, warc, length, name, offset, options)
        except _Skip as exc:
            reason, record = exc.reason, None
        # Skip whatever the parser did not consume, in bounded steps.
        while source.pos < block_end and source.read(min(block_end - source.pos, _CHUNK)):
            pass
        ended_inside = source.pos < block_end
        if ended_inside or not _at_record_boundary(source):
            # A length that runs past the next record's header is damaged, not a huge record:
            # resume at that header rather than losing every record it swallowed.
            hit = source.find(b"\nWARC/1.", block_start, block_end)
            if hit >= 0:
                skipped["bad_content_length"] += 1
                source.seek(hit + 1)
                continue
            source.seek(block_end)
        if ended_inside:
            skipped[cut_reason if reason in (None, "truncated_record") else reason] += 1
            return
        if reason is not None:
            skipped[reason] += 1
        elif record is not None:
            if damaged and not source.peek(512).lstrip(b"\r\n").startswith(b"WARC/"):
                # The damaged member ends with this record, so nothing vouches for it: its CRC,
                # which would have caught a flipped bit, never came (or failed).
                skipped[cut_reason] += 1
                return
            yield record


def _at_record_boundary(source: _Source) -> bool:
    """What follows a record block is blank lines, then a record header or the end of input."""
    ahead = source.peek(512)
    rest = ahead.lstrip(b"\r\n")
    return rest.startswith(b"WARC/") or not rest and len(ahead) < 512 or b"WARC/".startswith(rest)


def _resync_plain(source: _Source, bad_start: int) -> bool:
    """Skip to the next line starting a WARC record after a bad one at `bad_start`."""
    hit = source.find(b"\nWARC/1.", bad_start)
    if hit < 0:
        return False
    source.seek(hit + 1)
    return True


def _parse_record(source: _Source, warc: dict[str, str], length: int, name: str, offset: int,
                  options: _ReadOptions) -> PageRecord | None:
    max_body_bytes, only_ok = options.max_body_bytes, options.only_ok
    if warc.get("warc-type", "").lower() != "response":
        raise _Skip("not_response")
    truncated = bool(warc.get("warc-truncated"))
    if truncated and options.skip_truncated:
        raise _Skip("warc_truncated")
    url = warc.get("warc-target-uri", "").strip("<>")
    if not url.lower().startswith(("http://", "https://")):
        raise _Skip("not_http")
    http_head = source.readline(_MAX_HEAD_BYTES)
    if not http_head.startswith(b"HTTP/"):
        raise _Skip("bad_http")
    lines = [http_head]
    used = len(http_head)
    while True:
        line = source.readline(_MAX_HEAD_BYTES)
        used += len(line)
        if not line or used > min(length, _MAX_HEAD_BYTES):
            raise _Skip("bad_http")
        if not line.strip():
            break
        lines.append(line)
    try:
        status, headers = parse_http_head(b"".join(lines))
    except ValueError:
        raise _Skip("bad_http") from None
    if only_ok and not 200 <= status < 300:
        raise _Skip("http_status")
    content_type = mime_type(headers.get("content-type")) or mime_type(
        warc.get("warc-identified-payload-type")
    )
    if content_type and content_type not in HTML_TYPES:
        raise _Skip("not_html")
    body_length = length - used
    if body_length > max_body_bytes:
        raise _Skip("body_too_large")
    body = source.read(body_length)
    if len(body) < body_length:
        raise _Skip("truncated_record")
    body = _decode_http_body(body, headers, max_bytes=max_body_bytes, cut=truncated)
    if not content_type:
        if not sniff_html(body):
            raise _Skip("not_html")
        content_type = "text/html"
    return PageRecord(
        url=url,
        fetch_time=warc.get("warc-date", ""),
        status=status,
        headers=headers,
        content_type=content_type,
        body=body,
        warc_filename=name,
        warc_offset=offset,
        truncated=truncated,
    )


# ---------------------------------------------------------------------------------------------
# Writing


def warc_date(when: dt.datetime | None = None) -> str:
    """WARC-Date: UTC ISO-8601 with microseconds (WARC/1.1 allows sub-second precision)."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha1_digest(data: bytes) -> str:
    """`sha1:BASE32` as in WARC-Payload-Digest / WARC-Block-Digest."""
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode("ascii")


def _record_id() -> str:
    return f"<urn:uuid:{uuid.uuid4()}>"


class WarcWriter:
    """Appends WARC/1.1 records to a binary file object, one gzip member per record.

    `tell()` before a write is the offset of that record's member. Deterministic output is
    possible by passing fixed `record_id`s and dates.
    """

    def __init__(self, fileobj: BinaryIO, *, software: str = "flamboyance/0.1") -> None:
        self._f = fileobj
        self.software = software
        self.warcinfo_id: str | None = None

    def tell(self) -> int:
        return self._f.tell()

    def write_record(
        self,
        warc_type: str,
        block: bytes,
        *,
        content_type: str,
        headers: dict[str, str] | None = None,
        record_id: str | None = None,
        date: str | None = None,
    ) -> tuple[str, int]:
        """Write one record as its own gzip member; returns (record id, member offset)."""
        record_id = record_id or _record_id()
        fields = {
            "WARC-Type": warc_type,
            "WARC-Record-ID": record_id,
            "WARC-Date": date or warc_date(),
        }
        if self.warcinfo_id and warc_type != "warcinfo":
            fields["WARC-Warcinfo-ID"] = self.warcinfo_id
        fields.update(headers or {})
        fields["Content-Type"] = content_type
        fields["WARC-Block-Digest"] = sha1_digest(block)
        fields["Content-Length"] = str(len(block))
        head = "WARC/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        raw = head.encode("utf-8") + block + b"\r\n\r\n"
        offset = self._f.tell()
        # mtime=0 keeps members byte-identical for identical records
        self._f.write(gzip.compress(raw, compresslevel=6, mtime=0))
        return record_id, offset

    def write_warcinfo(self, info: dict[str, str], *, date: str | None = None, record_id=None) -> str:
        """Write the leading warcinfo record; later records point at it."""
        block = "".join(f"{k}: {v}\r\n" for k, v in {"software": self.software, **info}.items())
        rid, _ = self.write_record(
            "warcinfo",
            block.encode("utf-8"),
            content_type="application/warc-fields",
            date=date,
            record_id=record_id,
        )
        self.warcinfo_id = rid
        return rid

    def write_exchange(
        self,
        *,
        url: str,
        request: bytes,
        response: bytes,
        payload: bytes | None,
        ip_address: str | None = None,
        date: str | None = None,
        truncated: str | None = None,
        request_id: str | None = None,
        response_id: str | None = None,
    ) -> int:
        """Write a response record and its request record; returns the response's offset.

        `response` is the raw HTTP response (head + body as transferred); `payload` the entity
        body with transfer-encoding removed (for WARC-Payload-Digest), None if unknown.
        """
        date = date or warc_date()
        response_id = response_id or _record_id()
        common = {"WARC-Target-URI": url}
        if ip_address:
            common["WARC-IP-Address"] = ip_address
        extra = dict(common)
        if payload is not None:
            extra["WARC-Payload-Digest"] = sha1_digest(payload)
        if truncated:
            extra["WARC-Truncated"] = truncated
        _, offset = self.write_record(
            "response",
            response,
            content_type="application/http;msgtype=response",
            headers=extra,
            record_id=response_id,
            date=date,
        )
        self.write_record(
            "request",
            request,
            content_type="application/http;msgtype=request",
            headers={**common, "WARC-Concurrent-To": response_id},
            record_id=request_id,
            date=date,
        )
        return offset


def build_response_bytes(status: int, reason: str, headers: dict[str, str], body: bytes) -> bytes:
    """Serialise an HTTP/1.1 response (used for synthetic WARCs)."""
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body
