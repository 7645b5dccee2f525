"""The M3W job over the sample web (WARC + images served on 127.0.0.1): exact documents and images,
identical bytes on rerun, and an injected failure midway then a rerun (every sample once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
from flamboyance.crawl.sample_web import SampleWeb, serve_sample_web
from flamboyance.pipelines.config import DownloadConfig, M3WConfig
from flamboyance.pipelines.m3w import build_m3w
from flamboyance.preprocess.tokens import IMAGE_TOKEN
from flamboyance.shards import writer as shard_writer
from pipelines_fixtures import make_pipeline, run, shard_hashes, tar_members

NUM_PAGES = 12


@pytest.fixture(scope="module")
def web_warc(tmp_path_factory):
    web = SampleWeb(seed=3, num_pages=NUM_PAGES)
    root = tmp_path_factory.mktemp("web")
    with serve_sample_web(web) as base:
        web.write_warc(root / "web.warc.gz", base_url=base)
        yield web.truth(base), str(root / "*.warc.gz")


def _run(glob: str, output: Path | str, *, per_shard: int) -> dict[str, int]:
    p = make_pipeline()
    config = M3WConfig(samples_per_shard=per_shard, download=DownloadConfig(retries=0, timeout_s=5,
                                                                                allow_private_hosts=True))
    build_m3w(p, inputs=[glob], output=str(output), config=config)
    return run(p, "m3w")


def _documents(output: Path) -> dict[str, tuple[dict, list[str]]]:
    """url -> (document json, image member names), asserting keys are unique across shards."""
    docs: dict[str, tuple[dict, list[str]]] = {}
    keys: list[str] = []
    for tar in sorted(output.glob("*.tar")):
        members = tar_members(tar)
        for name, data in members.items():
            if name.endswith(".json"):
                key = name.split(".", 1)[0]
                keys.append(key)
                doc = json.loads(data)
                images = sorted(m for m in members if m.startswith(key + ".") and not m.endswith(".json"))
                docs[doc["url"]] = (doc, images)
    assert len(keys) == len(set(keys))
    return docs


def _check_against_truth(truth, docs) -> None:
    originals = {copy: original for original, copy in truth.near_duplicates + truth.exact_duplicates}
    expected_pages = [a for a in truth.articles if not any(i.noai for i in truth.images[a])]
    # each original or its copy (whichever capture is newer), never both
    assert len(docs) == len(expected_pages)
    for url, (doc, images) in docs.items():
        article = originals.get(url, url)
        assert article in expected_pages
        truth_images = truth.images[article]
        urls = [u for u in doc["images"] if u is not None]
        assert len(urls) == len(images) == doc["text"].count(IMAGE_TOKEN) == len(truth_images)
        assert all(u in t.srcset for u, t in zip(urls, truth_images))
        assert truth.logo not in urls and not set(urls) & set(truth.noai_images)
    for original, copy in truth.near_duplicates + truth.exact_duplicates:
        assert (original in docs) + (copy in docs) <= 1


def test_m3w_job_exact_output_and_identical_rerun(web_warc, tmp_path):
    truth, glob = web_warc
    counters = _run(glob, tmp_path / "a", per_shard=4)
    docs = _documents(tmp_path / "a")
    _check_against_truth(truth, docs)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["samples"] == len(docs) == counters["samples.written"] == counters["doc.kept"]
    assert counters["warc.pages"] == len(truth.crawlable)
    assert counters["image.disallowed_by_x_robots_tag"] == sum(
        1 for a in truth.articles for i in truth.images[a] if i.noai)
    dead = (tmp_path / "a" / "dead_letter" / "image.jsonl").read_text().splitlines()
    assert {json.loads(line)["reason"] for line in dead} == {"disallowed_by_x_robots_tag"}
    first = shard_hashes(tmp_path / "a")
    # rerun into the same output: every shard is complete, nothing is rewritten
    again = _run(glob, tmp_path / "a", per_shard=4)
    assert "shard.written" not in again and again["shard.skipped_samples"] == counters["documents.after_dedup"]
    assert "image.downloaded" not in again  # finished shards cost no downloads
    assert shard_hashes(tmp_path / "a") == first
    # a fresh output gives the same bytes
    _run(glob, tmp_path / "b", per_shard=4)
    assert shard_hashes(tmp_path / "b") == first


def test_m3w_job_failure_midway_then_rerun(web_warc, tmp_path, monkeypatch):
    truth, glob = web_warc
    real_write = shard_writer.write_shard
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(kwargs["shard_index"])
        if len(calls) == 3:
            raise RuntimeError("injected failure while writing a shard")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(shard_writer, "write_shard", failing_write)
    with pytest.raises(Exception, match="injected failure"):
        _run(glob, tmp_path / "out", per_shard=2)
    assert len(shard_writer.completed_shards(str(tmp_path / "out"))) == 2
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.setattr(shard_writer, "write_shard", real_write)
    counters = _run(glob, tmp_path / "out", per_shard=2)
    docs = _documents(tmp_path / "out")
    _check_against_truth(truth, docs)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["samples"] == len(docs)
    assert len(manifest["shards"]) == counters["shard.written"] + 2
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_m3w_job_reads_and_writes_any_fsspec_url(web_warc):
    truth, glob = web_warc
    memory = fsspec.filesystem("memory")
    for path in Path(glob).parent.glob("*.warc.gz"):
        memory.pipe(f"/pipelines-test/in/{path.name}", path.read_bytes())
    counters = _run("memory:///pipelines-test/in/*.warc.gz", "memory:///pipelines-test/out", per_shard=4)
    try:
        manifest = json.loads(memory.cat("/pipelines-test/out/manifest.json"))
        expected = [a for a in truth.articles if not any(i.noai for i in truth.images[a])]
        assert manifest["samples"] == counters["samples.written"] == len(expected)
        assert memory.exists("/pipelines-test/out/dead_letter/image.jsonl")
    finally:
        memory.rm("/pipelines-test", recursive=True)


_SLOW_WRITER = """
import sys, time
from flamboyance.shards import writer
real_write = writer.write_shard
def slow_write(*args, **kwargs):  # a slow disk, so that the kill lands between shards
    info = real_write(*args, **kwargs)
    time.sleep(1.0)
    return info
writer.write_shard = slow_write
from flamboyance.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_m3w_job_sigkilled_midway_then_rerun(web_warc, tmp_path):
    truth, glob = web_warc
    out = tmp_path / "out"
    args = ["etl", "m3w", "--input", glob, "--output", str(out), "--samples-per-shard", "2", "--retries", "0",
            "--allow-private-hosts"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, *args, "--direct_running_mode=in_memory",
                             "--direct_num_workers=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(out.glob("*_stats.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    written = shard_writer.completed_shards(str(out))
    plan = json.loads((out / "etl_plan.json").read_text())
    assert 2 <= len(written) < plan["num_shards"] and not (out / "manifest.json").exists()
    rerun = subprocess.run([sys.executable, "-m", "flamboyance", *args], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counters = json.loads((out / "etl_stats.json").read_text())["counters"]
    assert counters["shard.written"] == plan["num_shards"] - len(written)
    docs = _documents(out)
    _check_against_truth(truth, docs)
    assert json.loads((out / "manifest.json").read_text())["samples"] == len(docs)
    assert not list(out.glob(".*tmp*"))


def _counters_without_timing(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if not k.startswith(("image.", "shard."))}


def test_m3w_staging_is_reused_and_an_incomplete_file_is_staged_again(web_warc, tmp_path):
    import shutil

    truth, glob = web_warc
    first = _run(glob, tmp_path / "a", per_shard=4)
    staging = tmp_path / "a" / "_staging" / "m3w"
    infos = sorted(staging.glob("*.infos.pkl"))
    docs = sorted(staging.glob("*.docs.pkl"))
    assert len(infos) == len(docs) == 1 and not list(staging.glob("*.tmp"))
    hashes = shard_hashes(tmp_path / "a")
    # the first output moves away: staging files name their documents relative to their folder
    (tmp_path / "a").rename(tmp_path / "moved")
    staging = tmp_path / "moved" / "_staging" / "m3w"
    infos = sorted(staging.glob("*.infos.pkl"))
    stamp = infos[0].stat().st_mtime_ns

    def fresh_output_keeping_staging(name: str) -> Path:
        out = tmp_path / name
        shutil.copytree(tmp_path / "moved" / "_staging", out / "_staging", copy_function=shutil.copy2)
        return out

    # a rerun that only has the staging files reuses them: same counters (replayed), same shards
    out = fresh_output_keeping_staging("b")
    again = _run(glob, out, per_shard=4)
    assert _counters_without_timing(again) == _counters_without_timing(first)
    assert again["warc.pages"] == len(truth.crawlable)
    assert shard_hashes(out) == hashes
    assert (out / "_staging" / "m3w" / infos[0].name).stat().st_mtime_ns == stamp  # not rewritten

    # an infos file cut short (no footer) is not trusted: the WARC file is staged again
    out = fresh_output_keeping_staging("c")
    cut = out / "_staging" / "m3w" / infos[0].name
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    again = _run(glob, out, per_shard=4)
    assert _counters_without_timing(again) == _counters_without_timing(first)
    assert shard_hashes(out) == hashes
    assert cut.read_bytes() == infos[0].read_bytes()


def test_staging_fingerprint_follows_the_settings_and_is_stable_across_processes():
    import subprocess
    import sys

    from flamboyance.pipelines.m3w import staging_fingerprint
    from flamboyance.preprocess.filters import FilterConfig

    base = staging_fingerprint(M3WConfig())
    assert base == staging_fingerprint(M3WConfig(samples_per_shard=7))  # shard size: not a staging setting
    assert base != staging_fingerprint(M3WConfig(filters=FilterConfig(doc_min_images=2)))
    assert base != staging_fingerprint(M3WConfig(minhash_bands=7))
    code = ("from flamboyance.pipelines.m3w import staging_fingerprint;"
            "from flamboyance.pipelines.config import M3WConfig; print(staging_fingerprint(M3WConfig()))")
    for seed in ("1", "2"):  # sets of strings iterate in a per-process order
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == base


def test_staged_near_duplicates_keep_the_newest_and_name_it(tmp_path):
    """Near-duplicates in two WARC files: the newer capture of each near-duplicate pair is the one
    kept, and the dropped one's outcome names it."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to
    from flamboyance.crawl.warc import WarcWriter, build_response_bytes
    from flamboyance.pipelines.m3w import M3WDocuments
    from pipelines_fixtures import article_html, prose

    texts = [prose(seed, 12) for seed in range(4)]
    pages = [  # (file, url, date, paragraphs, image)
        (0, "http://a.example/story-1", "2024-01-01T00:00:00Z", [texts[0], texts[1]], "/i/1.jpg"),
        (1, "http://b.example/story-1-copy", "2024-02-01T00:00:00Z", [texts[0], texts[1] + " Updated."], "/i/1b.jpg"),
        (1, "http://a.example/story-2", "2024-01-01T00:00:00Z", [texts[2]], "/i/2.jpg"),
        (0, "http://b.example/story-2-copy", "2023-12-01T00:00:00Z", [texts[2] + " Archived."], "/i/2b.jpg"),
        (0, "http://a.example/story-3", "2024-01-01T00:00:00Z", [texts[3]], "/i/3.jpg"),
    ]
    for index in range(2):
        with open(tmp_path / f"in-{index}.warc.gz", "wb") as handle:
            writer = WarcWriter(handle)
            for file, url, date, paragraphs, image in pages:
                if file == index:
                    body = article_html("Story", paragraphs, [(image, "a red circle on a white background")])
                    headers = {"Content-Type": "text/html", "Content-Length": str(len(body))}
                    writer.write_exchange(url=url, request=b"GET / HTTP/1.1\r\n\r\n", payload=body, date=date,
                                          response=build_response_bytes(200, "OK", headers, body))
    p = make_pipeline()
    docs, outcomes, _ = (p | beam.Create([str(tmp_path / "in-*.warc.gz")])
                         | M3WDocuments(output=str(tmp_path / "out"), config=M3WConfig()))
    assert_that(docs | beam.Map(lambda item: item.doc.url),
                equal_to(["http://b.example/story-1-copy", "http://a.example/story-2", "http://a.example/story-3"]),
                label="Kept")
    assert_that(outcomes | beam.Map(lambda o: (o.url, o.status, o.reason, o.duplicate_of != "")),
                equal_to([("http://a.example/story-1", "duplicate", "near_duplicate", True),
                          ("http://b.example/story-2-copy", "duplicate", "near_duplicate", True)]), label="Dropped")
    counters = run(p, "m3w")
    assert counters["dedup.near_duplicate"] == 2 and "dedup.exact" not in counters
    assert counters["documents.after_dedup"] == 3 and counters["warc.pages"] == 5


def test_m3w_funnel_adds_up_and_every_page_ends_in_one_place(tmp_path, monkeypatch):
    """Seven pages: two written, an exact duplicate, a filtered page, an empty page, a page whose
    extraction raises, and a page whose only image fails to download. Every page is a sample or
    one parquet row with its status, reason and WARC location; the funnel adds up exactly."""
    import pyarrow.parquet as pq
    from flamboyance.crawl.warc import WarcWriter, build_response_bytes
    from flamboyance.pipelines import m3w
    from flamboyance.pipelines.common import run_and_report
    from pipelines_fixtures import MediaServer, article_html, picture, prose

    real = m3w.page_document

    def exploding(page, config):
        if page.url.endswith("/boom"):
            raise RuntimeError("a bug in one page's extraction")
        return real(page, config)

    monkeypatch.setattr(m3w, "page_document", exploding)
    png = {"Content-Type": "image/png"}
    server = MediaServer({"/i/1.png": (200, png, picture(300, 200, seed=1)),
                          "/i/2.png": (200, png, picture(300, 200, seed=2))})
    with server.serve() as base:
        def article(seed: int, image: str | None) -> bytes:
            figures = [(f"{base}{image}", "a red circle on a white background")] if image else []
            return article_html("Story", [prose(seed, 8), prose(seed + 50, 8)], figures)

        pages = [("http://a.example/one", article(1, "/i/1.png"), "2024-02-01T00:00:00Z"),
                 ("http://a.example/two", article(2, "/i/2.png"), "2024-02-01T00:00:00Z"),
                 ("http://a.example/two-old", article(2, "/i/2.png"), "2024-01-01T00:00:00Z"),
                 ("http://a.example/no-image", article(3, None), "2024-01-01T00:00:00Z"),
                 ("http://a.example/empty", b"  ", "2024-01-01T00:00:00Z"),
                 ("http://a.example/boom", article(4, "/i/1.png"), "2024-01-01T00:00:00Z"),
                 ("http://a.example/broken", article(5, "/i/missing.png"), "2024-01-01T00:00:00Z")]
        with open(tmp_path / "in.warc.gz", "wb") as handle:
            writer = WarcWriter(handle)
            for url, body, date in pages:
                headers = {"Content-Type": "text/html", "Content-Length": str(len(body))}
                writer.write_exchange(url=url, request=b"GET / HTTP/1.1\r\n\r\n", payload=body, date=date,
                                      response=build_response_bytes(200, "OK", headers, body))
        out = tmp_path / "out"
        p = make_pipeline()
        config = M3WConfig(download=DownloadConfig(retries=0, timeout_s=5, allow_private_hosts=True))
        build_m3w(p, inputs=[str(tmp_path / "in.warc.gz")], output=str(out), config=config)
        stats = run_and_report(p, output=str(out), namespace="m3w")
    assert json.loads((out / "etl_stats.json").read_text()) == json.loads(json.dumps(stats))
    funnel = stats["funnel"]
    assert funnel == {
        "pages": 7, "extracted": 5, "not_extracted": {"empty": 1, "exception": 1},
        "filtered": {"doc_too_few_images": 1}, "deduplicated": {"exact": 1}, "failed": {},
        "to_download": 3, "already_written": 0, "not_downloaded": {"too_few_images": 1}, "downloaded": 2,
        "written": 2, "checks": {"pages = extracted + not_extracted": True,
                                 "extracted = filtered + deduplicated + failed + to_download": True,
                                 "to_download = already_written + not_downloaded + downloaded": True,
                                 "written = downloaded": True}}
    assert set(stats["work"]) == {"near_dedup_comparisons", "largest_side_input_elements", "largest_group_in_memory"}
    assert stats["work"]["largest_side_input_elements"] == 2  # the dead-letter count per stage (2 stages)
    rows = [row for f in sorted(out.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]
    by_url = {row["url"]: row for row in rows}
    assert len(rows) == len(by_url) == 7  # every page exactly once
    offsets = {row["warc_offset"] for row in rows}
    assert len(offsets) == 7 and all(row["warc_filename"] == "in.warc.gz" for row in rows)
    summary = {url: (row["status"], row.get("reason")) for url, row in by_url.items()}
    assert summary == {"http://a.example/one": ("success", None), "http://a.example/two": ("success", None),
                       "http://a.example/two-old": ("duplicate", "exact"),
                       "http://a.example/no-image": ("filtered", "doc_too_few_images"),
                       "http://a.example/empty": ("failed_to_extract", "empty"),
                       "http://a.example/boom": ("failed_to_extract", "exception"),
                       "http://a.example/broken": ("failed_to_download", "too_few_images")}
    assert by_url["http://a.example/two-old"]["duplicate_of"] == by_url["http://a.example/two"]["key"]
    assert "RuntimeError: a bug in one page's extraction" in by_url["http://a.example/boom"]["error_message"]
    assert "http_404 x1" in by_url["http://a.example/broken"]["error_message"]
    shard_stats = [json.loads(f.read_text()) for f in sorted(out.glob("[0-9]*_stats.json"))]
    assert sum(s["failed_to_download"] for s in shard_stats) == 1
    assert sum(s["images_failed_to_download"] for s in shard_stats) == 1
    assert sum(s["count"] for s in shard_stats) == 7 and sum(s["successes"] for s in shard_stats) == 2
    dead = [json.loads(line) for line in (out / "dead_letter" / "extract.jsonl").read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == ["empty", "exception"]
    from flamboyance.shards.report import write_report

    index = write_report(str(out), tmp_path / "report", num_samples=1).read_text()
    assert "ETL funnel (adds up)" in index and "not_downloaded: too_few_images" in index
