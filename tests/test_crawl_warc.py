"""read_warc on Common Crawl's record and on hand-built WARCs with every kind of damage."""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import threading
import zlib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flamboyance.crawl import PageRecord, WarcWriter, read_warc
from flamboyance.crawl.warc import build_response_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from warcio.archiveiterator import ArchiveIterator

WHIRLWIND = Path("/work/shared/data/commoncrawl/whirlwind.warc.gz")

HTML = b"<!DOCTYPE html><html><head><title>t</title></head><body><p>Hello world.</p></body></html>"


def warc_record(
    url: str,
    block: bytes,
    *,
    warc_type: str = "response",
    extra: dict[str, str] | None = None,
    content_type: str = "application/http;msgtype=response",
) -> bytes:
    """One uncompressed WARC record, built by hand (independent of WarcWriter)."""
    fields = {
        "WARC-Type": warc_type,
        "WARC-Record-ID": f"<urn:uuid:{hashlib.md5(url.encode() + block).hexdigest()}>",
        "WARC-Date": "2025-01-02T03:04:05Z",
        "WARC-Target-URI": url,
        "Content-Type": content_type,
        **(extra or {}),
        "Content-Length": str(len(block)),
    }
    head = "WARC/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode() + block + b"\r\n\r\n"


def http_response(body: bytes, content_type: str = "text/html; charset=utf-8", status: int = 200,
                  headers: dict[str, str] | None = None) -> bytes:
    head = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
    return build_response_bytes(status, "OK", head, body)


def page(n: int) -> bytes:
    return HTML.replace(b"Hello world.", f"Page number {n}.".encode())


class Builder:
    """Concatenates gzip members and remembers where each starts."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.offsets: list[int] = []

    def add(self, raw_record: bytes, *, damage=None) -> int:
        member = gzip.compress(raw_record, mtime=0)
        if damage is not None:
            member = damage(member)
        self.offsets.append(len(self.data))
        self.data += member
        return self.offsets[-1]

    def write(self, path: Path) -> str:
        path.write_bytes(bytes(self.data))
        return str(path)


def corrupt_middle(member: bytes) -> bytes:
    out = bytearray(member)
    for i in range(len(out) // 2, len(out) // 2 + 8):
        out[i] ^= 0xA5
    return bytes(out)


def cut_in_half(member: bytes) -> bytes:
    return member[: len(member) // 2]


def read_all(path: str, **kwargs) -> tuple[list[PageRecord], collections.Counter]:
    skipped: collections.Counter = collections.Counter()
    return list(read_warc(path, skipped=skipped, **kwargs)), skipped


@pytest.mark.skipif(not WHIRLWIND.exists(), reason="shared Common Crawl sample not present")
def test_common_crawl_record_matches_warcio():
    records, skipped = read_all(str(WHIRLWIND))
    assert skipped == collections.Counter({"not_response": 3})  # warcinfo, request, metadata
    assert len(records) == 1
    record = records[0]
    with open(WHIRLWIND, "rb") as f:
        iterator = ArchiveIterator(f)
        expected = {}
        for rec in iterator:
            if rec.rec_type == "response":
                body = rec.content_stream().read()  # before anything else touches the stream
                expected = {
                    "body": body,
                    "offset": iterator.get_record_offset(),
                    "url": rec.rec_headers.get_header("WARC-Target-URI"),
                    "date": rec.rec_headers.get_header("WARC-Date"),
                    "status": int(rec.http_headers.get_statuscode()),
                }
    assert record.url == expected["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert record.warc_offset == expected["offset"]
    assert record.fetch_time == expected["date"]
    assert record.status == expected["status"] == 200
    assert record.body == expected["body"]
    assert record.content_type == "text/html"
    assert record.headers["content-type"] == "text/html; charset=UTF-8"
    assert record.warc_filename == "whirlwind.warc.gz"
    assert b"Escopete" in record.body
    # The offset points at a gzip member that decompresses to exactly this record.
    raw = WHIRLWIND.read_bytes()
    member = zlib.decompressobj(31).decompress(raw[record.warc_offset :])
    assert member.startswith(b"WARC/1.0\r\nWARC-Type: response")


def test_every_damage_is_skipped_counted_and_reading_goes_on(tmp_path):
    b = Builder()
    b.add(warc_record("", b"software: test\r\n", warc_type="warcinfo", content_type="application/warc-fields"))
    good = [b.add(warc_record("http://a.example/1", http_response(page(1))))]
    b.add(warc_record("http://a.example/1", b"GET /1 HTTP/1.1\r\n\r\n", warc_type="request",
                      content_type="application/http;msgtype=request"))
    b.add(warc_record("http://a.example/img.png", http_response(b"\x89PNG....", "image/png")))
    good.append(b.add(warc_record("http://a.example/t", http_response(page(2)), extra={"WARC-Truncated": "length"})))
    good.append(b.add(warc_record("http://a.example/3", http_response(page(3)))))
    b.add(warc_record("http://a.example/big", http_response(b"<html>" + b"x" * 5000 + b"</html>")))
    b.add(warc_record("http://a.example/c", http_response(page(4))), damage=corrupt_middle)
    good.append(b.add(warc_record("http://a.example/5", http_response(page(5)))))
    b.add(warc_record("http://a.example/h", http_response(page(6))), damage=cut_in_half)  # mid-file cut
    good.append(b.add(warc_record("http://a.example/7", http_response(page(7)))))
    b.add(warc_record("http://a.example/404", http_response(page(8), status=404)))
    b.add(warc_record("http://a.example/m", b"meta: x\r\n", warc_type="metadata",
                      content_type="application/warc-fields"))
    b.add(warc_record("http://a.example/end", http_response(page(9))), damage=cut_in_half)  # file ends
    path = b.write(tmp_path / "damaged.warc.gz")
    records, skipped = read_all(path, max_body_bytes=4000)

    assert [r.url for r in records] == ["http://a.example/1", "http://a.example/t", "http://a.example/3",
                                        "http://a.example/5", "http://a.example/7"]
    assert [r.body for r in records] == [page(1), page(2), page(3), page(5), page(7)]
    assert [r.truncated for r in records] == [False, True, False, False, False]  # Common Crawl keeps them
    assert [r.warc_offset for r in records] == good
    assert all(r.warc_filename == "damaged.warc.gz" and r.status == 200 for r in records)
    without_truncated, skipped_too = read_all(path, max_body_bytes=4000, skip_truncated=True)
    assert [r.url for r in without_truncated] == [r.url for r in records if not r.truncated]
    assert skipped_too - skipped == collections.Counter({"warc_truncated": 1})
    assert skipped == collections.Counter({
        "not_response": 3,  # warcinfo, request, metadata
        "not_html": 1,
        "body_too_large": 1,
        "http_status": 1,
        "corrupt_gzip": 2,  # the flipped bytes and the member cut mid-file
        "truncated_gzip": 1,  # the member cut at the end of the file
    })


def test_offsets_point_at_members_for_writer_output(tmp_path):
    buffer = io.BytesIO()
    writer = WarcWriter(buffer)
    writer.write_warcinfo({"format": "WARC File Format 1.1"})
    offsets = []
    for n in range(3):
        body = page(n)
        offsets.append(writer.write_exchange(url=f"http://b.example/{n}", request=b"GET / HTTP/1.1\r\n\r\n",
                                             response=http_response(body), payload=body, ip_address="192.0.2.1"))
    path = tmp_path / "w.warc.gz"
    path.write_bytes(buffer.getvalue())
    records, skipped = read_all(str(path))
    assert [r.warc_offset for r in records] == offsets
    assert skipped == collections.Counter({"not_response": 4})
    for record in records:
        member = zlib.decompressobj(31).decompress(buffer.getvalue()[record.warc_offset :])
        assert f"WARC-Target-URI: {record.url}".encode() in member
    # warcio agrees with the layout (standard-conforming output)
    with open(path, "rb") as f:
        iterator = ArchiveIterator(f)
        seen = [(iterator.get_record_offset(), r.rec_type) for r in iterator]
    assert [o for o, t in seen if t == "response"] == offsets


def test_chunked_and_gzip_payloads_are_decoded(tmp_path):
    body = page(42)
    gz = gzip.compress(body, mtime=0)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(gz[i : i + 20]), gz[i : i + 20]) for i in range(0, len(gz), 20)) + b"0\r\n\r\n"
    raw = build_response_bytes(200, "OK", {"Content-Type": "text/html", "Transfer-Encoding": "chunked",
                                           "Content-Encoding": "gzip"}, chunked)
    deflated = zlib.compress(page(43))
    raw2 = build_response_bytes(200, "OK", {"Content-Type": "application/xhtml+xml", "Content-Encoding": "deflate",
                                            "Content-Length": str(len(deflated))}, deflated)
    bad = build_response_bytes(200, "OK", {"Content-Type": "text/html", "Content-Encoding": "br"}, b"\x00\x01")
    b = Builder()
    b.add(warc_record("http://c.example/chunked", raw))
    b.add(warc_record("http://c.example/deflate", raw2))
    b.add(warc_record("http://c.example/br", bad))
    records, skipped = read_all(b.write(tmp_path / "enc.warc.gz"))
    assert [(r.url, r.body, r.content_type) for r in records] == [
        ("http://c.example/chunked", body, "text/html"),
        ("http://c.example/deflate", page(43), "application/xhtml+xml"),
    ]
    assert skipped == collections.Counter({"unsupported_content_encoding": 1})


def test_gzip_bomb_over_cap_is_skipped(tmp_path):
    big = b"<html>" + b" " * 3_000_000 + b"</html>"
    gz = gzip.compress(big, mtime=0)
    raw = build_response_bytes(200, "OK", {"Content-Type": "text/html", "Content-Encoding": "gzip"}, gz)
    b = Builder()
    b.add(warc_record("http://d.example/bomb", raw))
    b.add(warc_record("http://d.example/ok", http_response(page(1))))
    records, skipped = read_all(b.write(tmp_path / "bomb.warc.gz"), max_body_bytes=100_000)
    assert [r.url for r in records] == ["http://d.example/ok"]
    assert skipped == collections.Counter({"body_too_large": 1})


def test_uncompressed_and_single_member_warcs(tmp_path):
    records_raw = [warc_record(f"http://e.example/{n}", http_response(page(n))) for n in range(3)]
    plain = tmp_path / "plain.warc"
    plain.write_bytes(b"".join(records_raw))
    records, skipped = read_all(str(plain))
    expected_offsets = [0, len(records_raw[0]), len(records_raw[0]) + len(records_raw[1])]
    assert [r.warc_offset for r in records] == expected_offsets
    assert [r.body for r in records] == [page(0), page(1), page(2)]
    assert not skipped

    whole = tmp_path / "whole.warc.gz"  # one gzip member for the whole file (not the convention)
    whole.write_bytes(gzip.compress(b"".join(records_raw), mtime=0))
    records, skipped = read_all(str(whole))
    assert [r.url for r in records] == [f"http://e.example/{n}" for n in range(3)]
    assert [r.warc_offset for r in records] == [0, 0, 0]
    assert not skipped


def test_garbage_between_members_and_in_plain_file(tmp_path):
    b = Builder()
    b.add(warc_record("http://f.example/1", http_response(page(1))))
    b.data += b"this is not gzip data at all" * 3
    second = b.add(warc_record("http://f.example/2", http_response(page(2))))
    records, skipped = read_all(b.write(tmp_path / "junk.warc.gz"))
    assert [(r.url, r.warc_offset) for r in records] == [("http://f.example/1", 0), ("http://f.example/2", second)]
    assert skipped == collections.Counter({"corrupt_gzip": 1})

    one, two = (warc_record(f"http://f.example/{n}", http_response(page(n))) for n in (1, 2))
    plain = tmp_path / "junk.warc"
    plain.write_bytes(one + b"garbage line\r\n" + two + two[: len(two) // 2])
    records, skipped = read_all(str(plain))
    assert [(r.url, r.warc_offset) for r in records] == [("http://f.example/1", 0),
                                                         ("http://f.example/2", len(one) + 14)]
    assert skipped == collections.Counter({"invalid_record": 1, "truncated_record": 1})


def test_reads_over_http_with_fsspec(tmp_path):
    b = Builder()
    b.add(warc_record("http://g.example/1", http_response(page(1))))
    b.add(warc_record("http://g.example/x", http_response(page(2))), damage=corrupt_middle)
    third = b.add(warc_record("http://g.example/3", http_response(page(3))))
    b.write(tmp_path / "remote.warc.gz")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/remote.warc.gz"
        records, skipped = read_all(url)
    finally:
        server.shutdown()
        server.server_close()
    assert [(r.url, r.warc_offset, r.warc_filename) for r in records] == [
        ("http://g.example/1", 0, "remote.warc.gz"), ("http://g.example/3", third, "remote.warc.gz")]
    assert skipped == collections.Counter({"corrupt_gzip": 1})


def test_missing_file_names_the_input(tmp_path):
    missing = str(tmp_path / "nope.warc.gz")
    with pytest.raises(FileNotFoundError, match="nope.warc.gz"):
        list(read_warc(missing))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), max_size=6),
       cut=st.integers(min_value=0))
def test_random_damage_never_raises_and_never_invents_records(tmp_path, flips, cut):
    b = Builder()
    originals = {}
    for n in range(6):
        url = f"http://h.example/{n}"
        originals[url] = page(n)
        b.add(warc_record(url, http_response(page(n))))
    data = bytearray(b.data)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    data = data[: len(data) - cut % (len(data) // 3)]
    path = tmp_path / "fuzz.warc.gz"
    path.write_bytes(bytes(data))
    skipped: collections.Counter = collections.Counter()
    records = list(read_warc(str(path), skipped=skipped))
    for record in records:  # gzip CRCs guard the content: what comes out is what went in
        assert originals[record.url] == record.body
        assert record.warc_offset == b.offsets[int(record.url.rsplit("/", 1)[1])]
    if not flips and cut % (len(b.data) // 3) == 0:
        assert len(records) == 6 and not skipped


def test_a_flipped_bit_in_a_member_cut_before_its_crc_is_not_trusted(tmp_path):
    # found by the fuzz test above: the last member's trailer (CRC, size) is cut off, so the flip
    # in its deflate data decodes to a wrong body that nothing checks
    b = Builder()
    for n in range(6):
        b.add(warc_record(f"http://h.example/{n}", http_response(page(n))))
    data = bytearray(b.data)
    data[98805 % len(data)] ^= 1
    path = tmp_path / "flipped.warc.gz"
    path.write_bytes(bytes(data[:-9]))
    skipped: collections.Counter = collections.Counter()
    records = list(read_warc(str(path), skipped=skipped))
    # the flip is in record 4's member, which then inflates into the next one and runs out of
    # input; record 5's member has no trailer: neither record is vouched for by a CRC
    assert [r.url for r in records] == [f"http://h.example/{n}" for n in range(4)]
    assert all(r.body == page(n) for n, r in enumerate(records))
    assert skipped == collections.Counter({"truncated_gzip": 2})
