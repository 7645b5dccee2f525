"""End to end: the sample web on 127.0.0.1 -> crawl -> `flamboyance etl` m3w, image-text and
video-text (subprocesses, DirectRunner with 2 worker processes) -> shards -> stats, checked
against `SampleWeb.truth()`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from flamboyance.crawl.crawler import crawl
from flamboyance.crawl.sample_web import SampleWeb, serve_sample_web
from flamboyance.pipelines.split import heldout_by_image_url
from flamboyance.preprocess.tokens import IMAGE_TOKEN
from flamboyance.shards import compute_stats
from pipelines_fixtures import tar_members

NUM_PAGES = 16

pytestmark = pytest.mark.slow


def _etl(job: str, web_glob: str, output: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "flamboyance", "etl", job, "--input", web_glob, "--output", str(output),
           "--retries", "0", "--allow-private-hosts", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"== {job.replace('-', '_')} ETL summary" in proc.stdout
    stats = json.loads((output / "etl_stats.json").read_text())
    # every input is counted once where it ends: each step of the funnel adds up
    assert stats["funnel"]["checks"] and all(stats["funnel"]["checks"].values()), stats["funnel"]
    assert stats["funnel"]["pages"] == stats["counters"]["warc.pages"] > 0
    return stats["counters"]


def _caption(text: str) -> str:
    return text.strip().rstrip(".").lower()


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    web = SampleWeb(seed=0, num_pages=NUM_PAGES)
    with serve_sample_web(web) as base:
        result = crawl([base], out_dir=root / "web", max_pages=500, same_host=True, allow_private_hosts=True,
                       delay=0)
        assert result.pages_stored > NUM_PAGES
        yield web.truth(base), str(root / "web" / "*.warc.gz"), root


def _samples(root: Path) -> dict[str, dict[str, bytes]]:
    """key -> {member suffix: bytes} over all tars, asserting no key is in two shards."""
    samples: dict[str, dict[str, bytes]] = {}
    for tar in sorted(root.glob("*.tar")):
        shard: dict[str, dict[str, bytes]] = {}
        for name, data in tar_members(tar).items():
            key, suffix = name.split(".", 1)
            shard.setdefault(key, {})[suffix] = data
        assert not set(shard) & set(samples)
        samples.update(shard)
    return samples


def test_m3w_end_to_end(crawled):
    truth, glob, root = crawled
    counters = _etl("m3w", glob, root / "m3w", "--samples-per-shard", "4")
    samples = _samples(root / "m3w")
    originals = {copy: original for original, copy in truth.near_duplicates + truth.exact_duplicates}
    expected_pages = {a for a in truth.articles if not any(i.noai for i in truth.images[a])}
    docs = {json.loads(m["json"])["url"]: m for m in samples.values()}
    assert len(docs) == len(samples) == len(expected_pages)
    assert {originals.get(url, url) for url in docs} == expected_pages  # near/exact copies collapsed
    assert not set(docs) & set(truth.disallowed)
    for url, members in docs.items():
        doc = json.loads(members["json"])
        images = [u for u in doc["images"] if u is not None]
        truth_images = truth.images[originals.get(url, url)]
        assert doc["text"].count(IMAGE_TOKEN) == len(images) == len(members) - 1 == len(truth_images)
        assert all(u in t.srcset for u, t in zip(images, truth_images))
        assert truth.logo not in images and not set(images) & set(truth.noai_images)
    assert counters["samples.written"] == len(expected_pages)
    stats = compute_stats(str(root / "m3w"))
    assert stats["samples"] == len(expected_pages)
    assert stats["images"] == sum(len(truth.images[p]) for p in expected_pages)


def test_image_text_end_to_end(crawled):
    truth, glob, root = crawled
    counters = _etl("image-text", glob, root / "image_text", "--heldout-fraction", "0.25")
    expected = {}  # (srcset, caption) of every figure of every article (copies repeat the same pairs)
    for article in truth.articles:
        for image in truth.images[article]:
            expected[image.srcset] = (_caption(image.caption), image.noai)
    got: dict[str, tuple[str, str]] = {}
    for split in ("train", "heldout"):
        for key, members in _samples(root / "image_text" / split).items():
            meta = json.loads(members["json"])
            assert key not in got and heldout_by_image_url(meta["url"], 0.25) == (split == "heldout")
            got[key] = (meta["url"], members["txt"].decode())
        assert compute_stats(str(root / "image_text" / split))["kind"] == "image_text"
    by_url = {url: caption for url, caption in got.values()}
    want = {srcset: caption for srcset, (caption, noai) in expected.items() if not noai}
    assert len(by_url) == len(got) == len(want)
    for srcset, caption in want.items():
        url = next(u for u in srcset if u in by_url)
        assert _caption(by_url[url]) == caption
    assert truth.logo not in by_url and not set(by_url) & set(truth.noai_images)
    failed = [row for split in ("train", "heldout")
              for f in sorted((root / "image_text" / split).glob("*.parquet"))
              for row in pq.read_table(f).to_pylist() if row["status"] != "success"]
    # every candidate that gave no sample has its row (the funnel's rows check counts them all)
    assert sorted(r["reason"] for r in failed if r["status"] == "failed_to_download") == [
        "disallowed_by_x_robots_tag"] * sum(noai for _, noai in expected.values())
    assert {r["status"] for r in failed} <= {"failed_to_extract", "filtered", "duplicate", "failed_to_download"}
    assert all(r["warc_filename"] and r["warc_offset"] is not None for r in failed)
    assert counters["pairs.train"] + counters["pairs.heldout"] == len(want)


def test_video_text_end_to_end(crawled):
    truth, glob, root = crawled
    _etl("video-text", glob, root / "video_text")
    want = {v.url: _caption(v.caption) for page in truth.articles for v in truth.videos.get(page, ())}
    samples = _samples(root / "video_text")
    got = {json.loads(m["json"])["url"]: m for m in samples.values()}
    assert sorted(got) == sorted(want) and len(samples) == len(want) > 0
    for url, members in got.items():
        meta = json.loads(members["json"])
        frames = sorted(k for k in members if k.endswith(".jpg"))
        assert len(frames) == 8 and meta["timestamps"] == [float(i) for i in range(8)]
        assert _caption(members["txt"].decode()) == want[url]
    assert compute_stats(str(root / "video_text"))["samples"] == len(want)
