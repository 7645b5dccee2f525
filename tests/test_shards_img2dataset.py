"""Acceptance: output that img2dataset itself produced reads as image_text and `flamboyance stats`
reports exactly img2dataset's own counts (its _stats.json and parquet)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from flamboyance.cli import main
from flamboyance.shards import open_dataset, verify
from shards_fixtures import COLOURS, png


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def img2dataset_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    img2dataset = pytest.importorskip("img2dataset")
    root = tmp_path_factory.mktemp("i2d")
    served = root / "www"
    served.mkdir()
    for i in range(5):
        (served / f"img{i}.png").write_bytes(png(COLOURS[i], (20 + i, 16)))
    (served / "broken.png").write_bytes(b"this is not an image")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/img{i}.png" for i in range(5)] + [f"{base}/missing.png", f"{base}/broken.png"]
    listing = root / "urls.csv"
    listing.write_text("url,caption\n" + "".join(f"{u},caption number {i}\n" for i, u in enumerate(urls)))
    out = root / "out"
    try:
        img2dataset.download(url_list=str(listing), input_format="csv", url_col="url", caption_col="caption",
                             output_folder=str(out), output_format="webdataset", processes_count=1,
                             thread_count=2, number_sample_per_shard=4, resize_mode="no", timeout=5,
                             retries=0, enable_wandb=False, distributor="multiprocessing")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return out


def test_stats_match_img2dataset_own_counts(img2dataset_output: Path, tmp_path: Path) -> None:
    out = img2dataset_output
    own = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    assert len(own) == 2  # 7 urls, 4 per shard
    rows = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    own_failures = Counter()
    for stats in own:
        own_failures.update({k: v for k, v in stats["status_dict"].items() if k != "success"})
    json_out = tmp_path / "stats.json"
    assert main(["stats", str(out), "--json", str(json_out)]) == 0
    ours = json.loads(json_out.read_text())
    assert ours["kind"] == "image_text"
    assert ours["shards"] == 2
    assert ours["samples"] == sum(s["successes"] for s in own) == 5
    assert ours["images"] == 5
    assert ours["rows"] == sum(s["count"] for s in own) == len(rows) == 7
    assert ours["failures"] == dict(own_failures)
    assert sum(ours["failures"].values()) == 2
    assert ours["failures_by_status"] == dict(Counter(r["status"] for r in rows if r["status"] != "success"))
    assert ours["distributions"]["image_width"]["count"] == 5
    assert ours["distributions"]["image_width"]["max"] == 24.0
    assert main(["stats", str(out), "--scan", "--json", str(json_out)]) == 0
    scanned = json.loads(json_out.read_text())
    assert (scanned["samples"], scanned["images"], scanned["text_tokens"]) == (5, 5, ours["text_tokens"])


def test_reader_and_verify_accept_img2dataset_output(img2dataset_output: Path) -> None:
    ds = open_dataset(str(img2dataset_output))
    records = sorted(ds, key=lambda r: r.key)
    assert ds.kind == "image_text" and ds.skipped == Counter()
    assert [(r.image.size, r.caption) for r in records] == [((20 + i, 16), f"caption number {i}") for i in range(5)]
    assert records[0].metadata["status"] == "success"
    result = verify(str(img2dataset_output))
    assert result.ok, result.problems
    assert (result.shards, result.samples) == (2, 5)
