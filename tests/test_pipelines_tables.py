"""Image-text and video-text jobs from URL + caption tables (parquet, CSV, JSONL) over a loopback
server: caption filters, duplicate pairs, dead letters, the held-out split, and corrupt /
oversized videos counted rather than fatal; every input row ends in exactly one place (a sample,
or a parquet row with its status, reason and table row) and the funnel adds up."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from flamboyance.crawl.sample_media import ShapeSpec, render_video
from flamboyance.pipelines.common import funnel_of, num_shards_for
from flamboyance.pipelines.config import DownloadConfig, ImageTextConfig, VideoTextConfig
from flamboyance.pipelines.image_text import build_image_text
from flamboyance.pipelines.pairs import make_pair
from flamboyance.pipelines.split import heldout_by_image_url
from flamboyance.pipelines.video_text import build_video_text
from pipelines_fixtures import MediaServer, make_pipeline, picture, run, tar_members

DOWNLOAD = DownloadConfig(retries=0, timeout_s=5, allow_private_hosts=True, image_size=64)


def _members(root: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted(root.glob("*.tar")):
        for name, data in tar_members(tar).items():
            key, suffix = name.split(".", 1)
            out.setdefault(key, {})[suffix] = data
    return out


def _rows(root: Path) -> list[dict]:
    return [row for f in sorted(root.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_image_text_from_tables(tmp_path):
    routes = {f"/img/{i}.png": (200, {"Content-Type": "image/png"}, picture(200, 160, seed=i)) for i in range(6)}
    routes["/img/noai.png"] = (200, {"Content-Type": "image/png", "X-Robots-Tag": "noai"}, picture(200, 160))
    server = MediaServer(routes)
    with server.serve() as base:
        good = [(f"{base}/img/{i}.png", f"a small shape number {i} on a plain background") for i in range(6)]
        pq.write_table(pa.table({"url": [u for u, _ in good[:4]] + [good[0][0], f"{base}/img/noai.png",
                                                                      f"{base}/img/5.png"],
                                 "caption": [c for _, c in good[:4]] + [good[0][1], "a shape that opted out",
                                                                         "IMG_0005.jpg"]}),
                       tmp_path / "pairs.parquet")
        (tmp_path / "more.csv").write_text(f"url,caption\n{good[4][0]},{good[4][1]}\n{good[5][0]},{good[5][1]}\n")
        (tmp_path / "bad.jsonl").write_text(json.dumps({"caption": "a row without any url"}) + "\n")
        p = make_pipeline()
        build_image_text(p, inputs=[str(tmp_path / "*.parquet"), str(tmp_path / "*.csv"), str(tmp_path / "*.jsonl")],
                         output=str(tmp_path / "out"),
                         config=ImageTextConfig(samples_per_shard=2, heldout_fraction=0.5, download=DOWNLOAD))
        counters = run(p, "image_text")
    keys = {make_pair(u, c).key: (u, c) for u, c in good}
    all_keys = [*keys, make_pair(f"{base}/img/noai.png", "a shape that opted out").key]
    held = {**{k: heldout_by_image_url(u, 0.5) for k, (u, _) in keys.items()},
            all_keys[-1]: heldout_by_image_url(f"{base}/img/noai.png", 0.5)}  # the split follows the image URL
    got = {}
    for split in ("train", "heldout"):
        for key, members in _members(tmp_path / "out" / split).items():
            assert held[key] == (split == "heldout") and key not in got
            got[key] = (json.loads(members["json"])["url"], members["txt"].decode())
            assert members["jpg"][:2] == b"\xff\xd8"
    assert got == keys
    # every input row ends in exactly one place: a sample, or a parquet row saying why not
    rows = [r for split in ("train", "heldout") for r in _rows(tmp_path / "out" / split)]
    places = sorted((Path(r["source"]).name, int(r["source_row"]), r["status"], r["reason"], r["duplicate_of"])
                    for r in rows)
    assert places == [
        ("bad.jsonl", 0, "failed_to_extract", "missing_url_or_caption", None),
        ("more.csv", 0, "success", None, None), ("more.csv", 1, "success", None, None),
        ("pairs.parquet", 0, "success", None, None), ("pairs.parquet", 1, "success", None, None),
        ("pairs.parquet", 2, "success", None, None), ("pairs.parquet", 3, "success", None, None),
        ("pairs.parquet", 4, "duplicate", "same_pair", make_pair(*good[0]).key),  # kept: row 0, the same pair
        ("pairs.parquet", 5, "failed_to_download", "disallowed_by_x_robots_tag", None),
        ("pairs.parquet", 6, "filtered", "caption_boilerplate", None)]
    assert sorted(r["key"] for r in rows if r["status"] == "success") == sorted(keys)
    dead = [json.loads(line) for line in (tmp_path / "out" / "dead_letter" / "table.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["ref"].rsplit("/", 1)[-1]) for d in dead] == [("missing_url_or_caption", "bad.jsonl#0")]
    assert funnel_of(counters) == {
        "pages": 10, "not_extracted": {"missing_url_or_caption": 1}, "pairs": 9,
        "filtered": {"caption_boilerplate": 1}, "deduplicated": {"same_pair": 1}, "failed": {}, "to_download": 7,
        "already_written": 0, "not_downloaded": {"disallowed_by_x_robots_tag": 1}, "downloaded": 6, "written": 6,
        "rows": 4,
        "checks": {"pages = extracted + not_extracted": True,
                   "pairs = filtered + deduplicated + failed + to_download": True,
                   "to_download = already_written + not_downloaded + downloaded": True, "written = downloaded": True,
                   "rows = not_extracted + filtered + deduplicated + failed + not_downloaded": True}}
    assert {k: v for k, v in counters.items() if not k.startswith("funnel.")} == {
        "pairs.from_tables": 9, "table.missing_url_or_caption": 1, "caption.caption_boilerplate": 1,
        "dedup.same_pair": 1, "image.downloaded": 6, "image.disallowed_by_x_robots_tag": 1,
        "pairs.train": sum(not held[k] for k in keys), "pairs.heldout": sum(held[k] for k in keys),
        "pairs.failed": 1, "samples.written": 6, "shard.written": sum(
            num_shards_for(sum(held[k] == side for k in all_keys), 2) for side in (False, True))}
    assert server.hits["/img/0.png"] == 1  # a duplicated URL is downloaded once


def test_video_text_from_table_counts_bad_videos(tmp_path):
    video = render_video(ShapeSpec("red", "circle", "white", "small"), "left_to_right", seed=1)
    routes = {"/v/good.mp4": (200, {"Content-Type": "video/mp4"}, video),
              "/v/corrupt.mp4": (200, {"Content-Type": "video/mp4"}, b"\x00\x00\x00\x18ftypmp42" + b"junk" * 500),
              "/v/big.mp4": (200, {"Content-Type": "video/mp4"}, video + b"\x00" * 200_000)}
    server = MediaServer(routes)
    with server.serve() as base:
        rows = [{"url": f"{base}/v/{name}.mp4", "caption": f"a red circle moving, take {name}"}
                for name in ("good", "corrupt", "big", "missing")]
        (tmp_path / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        p = make_pipeline()
        build_video_text(p, inputs=[str(tmp_path / "*.jsonl")], output=str(tmp_path / "out"),
                         config=VideoTextConfig(max_video_bytes=len(video) + 1000, max_frames=4, download=DOWNLOAD))
        counters = run(p, "video_text")
    samples = _members(tmp_path / "out")
    assert len(samples) == 1
    (members,) = samples.values()
    meta = json.loads(members["json"])
    assert meta["url"] == f"{base}/v/good.mp4" and meta["timestamps"] == [0.0, 1.0, 2.0, 3.0]
    assert sorted(k for k in members if k.endswith(".jpg")) == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    places = sorted((r["url"].rsplit("/", 1)[-1], int(r["source_row"]), r["status"], r["reason"])
                    for r in _rows(tmp_path / "out"))
    assert places == [("big.mp4", 2, "failed_to_download", "too_large"),
                      ("corrupt.mp4", 1, "failed_to_decode", "corrupt"),
                      ("good.mp4", 0, "success", None),
                      ("missing.mp4", 3, "failed_to_download", "http_404")]
    assert funnel_of(counters) == {
        "pages": 4, "not_extracted": {}, "pairs": 4, "filtered": {}, "deduplicated": {}, "failed": {},
        "to_download": 4, "already_written": 0, "not_downloaded": {"corrupt": 1, "http_404": 1, "too_large": 1},
        "downloaded": 1, "written": 1, "rows": 3,
        "checks": {"pages = extracted + not_extracted": True,
                   "pairs = filtered + deduplicated + failed + to_download": True,
                   "to_download = already_written + not_downloaded + downloaded": True, "written = downloaded": True,
                   "rows = not_extracted + filtered + deduplicated + failed + not_downloaded": True}}
    assert {k: v for k, v in counters.items() if not k.startswith("funnel.")} == {
        "pairs.from_tables": 4, "video.downloaded": 1, "video.corrupt": 1, "video.too_large": 1,
                        "video.http_404": 1, "pairs.kept": 1, "pairs.failed": 3, "samples.written": 1,
                        "shard.written": 1}
