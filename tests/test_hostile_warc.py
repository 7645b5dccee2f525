"""Hostile WARCs: every damaged record is counted with a reason and reading resumes at the next
record, in plain and gzipped files; nothing is lost silently."""

from __future__ import annotations

import collections
import gzip

from flamboyance.crawl import read_warc
from test_crawl_warc import http_response, page, warc_record


def read(path, **kwargs):
    skipped: collections.Counter = collections.Counter()
    return [r.url for r in read_warc(str(path), skipped=skipped, **kwargs)], skipped


def urls(numbers):
    return [f"http://h.example/{n}" for n in numbers]


def records(numbers):
    return [warc_record(url, http_response(page(n))) for n, url in zip(numbers, urls(numbers))]


def with_length(record: bytes, length: str) -> bytes:
    head, sep, rest = record.partition(b"\r\n\r\n")
    lines = [line if not line.startswith(b"Content-Length:") else b"Content-Length: " + length.encode()
             for line in head.split(b"\r\n")]
    return b"\r\n".join(lines) + sep + rest


def test_absurd_content_length_in_a_plain_warc_does_not_swallow_the_file(tmp_path):
    raw = records(range(10))
    raw[3] = with_length(raw[3], "99999999999")
    path = tmp_path / "absurd.warc"
    path.write_bytes(b"".join(raw))
    got, skipped = read(path)
    assert got == urls([0, 1, 2, 4, 5, 6, 7, 8, 9])
    assert skipped == collections.Counter({"bad_content_length": 1})


def test_content_length_too_long_by_a_few_records_resumes_at_the_next_header(tmp_path):
    raw = records(range(6))
    raw[1] = with_length(raw[1], str(len(http_response(page(1))) + len(raw[2]) + 10))
    path = tmp_path / "long.warc"
    path.write_bytes(b"".join(raw))
    got, skipped = read(path)
    assert got == urls([0, 2, 3, 4, 5])
    assert skipped == collections.Counter({"bad_content_length": 1})


def test_content_length_too_short_skips_one_header_and_resyncs(tmp_path):
    raw = records(range(4))
    raw[1] = with_length(raw[1], "40")
    path = tmp_path / "short.warc"
    path.write_bytes(b"".join(raw))
    got, skipped = read(path)
    # record 1 parses as far as 40 bytes go (no HTTP head end: bad_http); its rest is no header
    assert got == urls([0, 2, 3])
    assert skipped == collections.Counter({"bad_http": 1, "invalid_record": 1})


def test_garbage_and_bad_headers_between_records_in_a_plain_warc(tmp_path):
    raw = records(range(5))
    raw[1] = b"WARC/1.1\r\nContent-Length: banana\r\n\r\n" + raw[1]
    raw[3] = b"\x00\xff garbage line\r\nmore garbage\r\n\r\n" + raw[3]
    path = tmp_path / "garbage.warc"
    path.write_bytes(b"".join(raw))
    got, skipped = read(path)
    assert got == urls(range(5))
    assert skipped == collections.Counter({"invalid_record": 2})


def test_absurd_content_length_inside_a_whole_file_gzip(tmp_path):
    raw = records(range(6))
    raw[2] = with_length(raw[2], "99999999999")
    path = tmp_path / "whole.warc.gz"
    path.write_bytes(gzip.compress(b"".join(raw), mtime=0))  # one member for the whole file
    got, skipped = read(path)
    assert got == urls([0, 1, 3, 4, 5])
    assert skipped == collections.Counter({"bad_content_length": 1})


def test_truncated_whole_file_gzip_keeps_the_records_before_the_cut(tmp_path):
    raw = records(range(6))
    data = gzip.compress(b"".join(raw), mtime=0, compresslevel=0)  # stored blocks: the cut is exact
    cut = data.index(b"Page number 4.")
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[:cut])
    got, skipped = read(path)
    assert got == urls([0, 1, 2, 3])
    assert skipped == collections.Counter({"truncated_gzip": 1})


def test_truncated_plain_warc_counts_the_last_record(tmp_path):
    data = b"".join(records(range(3)))
    path = tmp_path / "cut.warc"
    path.write_bytes(data[: data.index(b"Page number 2.")])
    got, skipped = read(path)
    assert got == urls([0, 1])
    assert skipped == collections.Counter({"truncated_record": 1})


def test_common_crawl_truncated_record_is_kept_and_marked(tmp_path):
    cut_body = page(1)[:60]  # the HTML prefix Common Crawl keeps, Content-Length still the full size
    block = http_response(page(1)).replace(page(1), cut_body)
    raw = [records([0])[0], warc_record("http://h.example/1", block, extra={"WARC-Truncated": "length"})]
    path = tmp_path / "cc.warc"
    path.write_bytes(b"".join(raw))
    kept = list(read_warc(str(path)))
    assert [(r.url, r.truncated, r.body) for r in kept] == [("http://h.example/0", False, page(0)),
                                                            ("http://h.example/1", True, cut_body)]
    got, skipped = read(path, skip_truncated=True)
    assert got == urls([0])
    assert skipped == collections.Counter({"warc_truncated": 1})


def test_truncated_chunked_body_keeps_its_chunks(tmp_path):
    body = page(1)
    chunked = b"%x\r\n" % 40 + body[:40] + b"\r\n" + b"%x\r\n" % (len(body) - 40) + body[40:70]  # cut mid-chunk
    head = http_response(b"", headers={"Transfer-Encoding": "chunked"}).replace(b"Content-Length: 0\r\n", b"")
    block = head + chunked
    path = tmp_path / "chunked.warc"
    path.write_bytes(warc_record("http://h.example/1", block, extra={"WARC-Truncated": "length"}))
    [record] = read_warc(str(path))
    assert record.truncated and record.body == body[:70]


def test_whole_file_gzip_larger_than_the_record_cap_keeps_every_record(tmp_path):
    import random

    rng = random.Random(3)
    words = ["river", "market", "council", "garden", "station", "harbour", "library", "festival", "north"]
    bodies = [(" ".join(rng.choice(words) for _ in range(5000))).encode() for _ in range(20)]  # ~35 kB each
    raw = [warc_record(f"http://h.example/{n}", http_response(b"<p>" + body + b"</p>")) for n, body in enumerate(bodies)]
    path = tmp_path / "whole.warc.gz"
    path.write_bytes(gzip.compress(b"".join(raw), mtime=0))  # 700 kB inflated, over the 356 kB member cap
    got, skipped = read(path, max_body_bytes=100_000)
    assert got == urls(range(20))
    assert not skipped


def test_pipelines_keep_or_skip_truncated_records_as_configured(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from flamboyance.pipelines.common import ReadWarcPages

    block = http_response(page(1)).replace(page(1), page(1)[:60])
    path = tmp_path / "cc.warc"
    path.write_bytes(records([0])[0] + warc_record("http://h.example/1", block, extra={"WARC-Truncated": "length"}))
    for skip, expected in ((False, [("http://h.example/0", False), ("http://h.example/1", True)]),
                           (True, [("http://h.example/0", False)])):
        with TestPipeline() as p:
            pages = (p | beam.Create([str(path)])
                     | ReadWarcPages(namespace="t", skip_truncated=skip)
                     | beam.Map(lambda r: (r.url, r.truncated)))
            assert_that(pages, equal_to(expected))
