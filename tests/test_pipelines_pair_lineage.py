"""The image-text job on WARC pages: every candidate pair (a captioned image of a page) and every
page that gives none ends in exactly one place (a sample, or a parquet row with its status,
reason, WARC file and offset, and for a duplicate the pair key kept), and the funnel adds up."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
from flamboyance.crawl.warc import WarcWriter, build_response_bytes
from flamboyance.pipelines.common import funnel_of
from flamboyance.pipelines.config import DownloadConfig, ImageTextConfig
from flamboyance.pipelines.image_text import build_image_text
from flamboyance.pipelines.pairs import make_pair
from pipelines_fixtures import MediaServer, article_html, make_pipeline, picture, prose, run, tar_members

CIRCLE = "a small red circle on a plain white background"


def _write_warc(path: Path, pages: list[tuple[str, bytes]]) -> list[int]:
    """HTML responses into one WARC; returns each response record's offset."""
    offsets = []
    with open(path, "wb") as handle:
        for n, (url, body) in enumerate(pages):
            parts = urlsplit(url)
            request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
            offsets.append(handle.tell())
            WarcWriter(handle).write_exchange(
                url=url, request=request, payload=body, date=f"2024-01-01T00:00:{n:02d}Z",
                response=build_response_bytes(200, "OK", {"Content-Type": "text/html"}, body))
    return offsets


def test_every_candidate_pair_of_the_pages_ends_in_exactly_one_place(tmp_path):
    server = MediaServer({"/img/circle.png": (200, {"Content-Type": "image/png"}, picture(200, 160, seed=1))})
    with server.serve() as base:
        first = article_html("Shapes", [prose(1), prose(2), prose(3), prose(4), prose(5)], [
            (f"{base}/img/circle.png", CIRCLE),                                  # kept, downloaded
            (f"{base}/img/IMG_0001.png", "IMG_0001.jpg"),                          # caption boilerplate
            (f"{base}/img/logo.png", "the logo of the shapes company in blue"),   # image filter
            (f"{base}/img/missing.png", "a green square on a grey floor tile"),   # 404
            (f"{base}/img/kreis.png", "ein kleiner roter Kreis auf einem weißen Hintergrund mit Schatten")])
        second = article_html("More shapes", [prose(6), prose(7)], [(f"{base}/img/circle.png", CIRCLE)])  # same pair
        pages = [("http://b.example/more.html", second), ("http://a.example/shapes.html", first),
                 ("http://a.example/empty.html", b"   ")]                         # not extracted
        warc = tmp_path / "pages.warc.gz"
        offsets = dict(zip((url for url, _ in pages), _write_warc(warc, pages), strict=True))
        p = make_pipeline()
        build_image_text(p, inputs=[str(warc)], output=str(tmp_path / "out"),
                         config=ImageTextConfig(samples_per_shard=2, heldout_fraction=0.5,
                                                download=DownloadConfig(retries=0, timeout_s=5,
                                                                        allow_private_hosts=True, image_size=64)))
        counters = run(p, "image_text")
    rows = [row for split in ("train", "heldout") for f in sorted((tmp_path / "out" / split).glob("*.parquet"))
            for row in pq.read_table(f).to_pylist()]
    kept = make_pair(f"{base}/img/circle.png", CIRCLE).key
    places = sorted((r["url"].rsplit("/", 1)[-1], r["source"].rsplit("/", 1)[-1], r["warc_filename"],
                     int(r["warc_offset"]) == offsets[r["source"]], r["status"], r["reason"], r["duplicate_of"])
                    for r in rows)
    assert places == [
        ("IMG_0001.png", "shapes.html", "pages.warc.gz", True, "filtered", "caption_boilerplate", None),
        ("circle.png", "more.html", "pages.warc.gz", True, "duplicate", "same_pair", kept),
        ("circle.png", "shapes.html", "pages.warc.gz", True, "success", None, None),
        ("empty.html", "empty.html", "pages.warc.gz", True, "failed_to_extract", "empty", None),
        ("kreis.png", "shapes.html", "pages.warc.gz", True, "filtered", "caption_language", None),
        ("logo.png", "shapes.html", "pages.warc.gz", True, "filtered", "image_boilerplate_url", None),
        ("missing.png", "shapes.html", "pages.warc.gz", True, "failed_to_download", "http_404", None)]
    assert len({r["key"] for r in rows}) == len(rows) and kept in {r["key"] for r in rows}
    samples = {name.split(".", 1)[0] for tar in (tmp_path / "out").glob("*/*.tar") for name in tar_members(tar)}
    assert samples == {kept}
    funnel = funnel_of(counters)
    assert all(funnel["checks"].values()) and len(funnel["checks"]) == 5, funnel
    assert (funnel["pages"], funnel["pairs"], funnel["to_download"], funnel["written"], funnel["rows"]) == (3, 6, 2, 1, 6)
    assert funnel["filtered"] == {"caption_boilerplate": 1, "caption_language": 1, "image_boilerplate_url": 1}
    assert funnel["not_extracted"] == {"empty": 1} and funnel["deduplicated"] == {"same_pair": 1}
