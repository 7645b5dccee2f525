"""The image-text split by image identity: by normalised URL before download, then by the sha256
of the downloaded bytes, so that no image is in both train and held-out."""

from __future__ import annotations

import csv
import hashlib
import tarfile
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from flamboyance.pipelines.common import ShardItem, num_shards_for, shard_of
from flamboyance.pipelines.config import DownloadConfig, ImageTextConfig
from flamboyance.pipelines.image_text import run_image_text
from flamboyance.pipelines.pairs import is_heldout
from flamboyance.pipelines.split import (
    SplitByImageBytes,
    heldout_by_image_url,
    image_bytes_key,
    image_url_key,
)
from flamboyance.shards import ImageTextSample
from pipelines_fixtures import MediaServer, make_pipeline, picture, run


def test_image_url_key_folds_spellings_of_one_url():
    same = ["http://Example.COM:80/a/cat.jpg?utm_source=x", "http://example.com/a/cat.jpg#top",
            "http://example.com/a/cat.jpg"]
    assert {image_url_key(u) for u in same} == {"url:http://example.com/a/cat.jpg"}
    assert image_url_key("/relative.jpg") == "url:/relative.jpg"  # not normalisable: kept as given
    assert image_url_key("http://example.com/a/dog.jpg") != image_url_key(same[0])
    decisions = {u: heldout_by_image_url(u, 0.5) for u in same}
    assert len(set(decisions.values())) == 1
    assert heldout_by_image_url(same[0], 0.5) == is_heldout("url:http://example.com/a/cat.jpg", 0.5)


def _bytes_going_to(target: str, fraction: float) -> bytes:
    """Deterministic image bytes whose digest sends a two-sided group to `target`."""
    for i in range(1000):
        data = f"image-{target}-{i}".encode()
        if is_heldout(image_bytes_key(data), fraction) == (target == "heldout"):
            return data
    raise AssertionError("no such bytes")


def _item(key: str, data: bytes | None) -> ShardItem:
    if data is None:
        return ShardItem(key=key, row={"key": key, "status": "failed_to_download"})
    return ShardItem(key=key, sample=ImageTextSample(key=key, image=data, caption=key, metadata={}))


def test_split_by_image_bytes_moves_two_sided_groups_whole(tmp_path):
    fraction, per_shard = 0.3, 2
    to_train, to_heldout = _bytes_going_to("train", fraction), _bytes_going_to("heldout", fraction)
    items = [
        (("train", 0), _item("a", to_train)), (("heldout", 1), _item("b", to_train)),  # -> train
        (("heldout", 0), _item("c", to_heldout)), (("train", 2), _item("d", to_heldout)),  # -> heldout
        (("train", 2), _item("e", to_heldout)),
        (("train", 1), _item("f", b"only-train")), (("train", 0), _item("g", b"only-train")),  # one side: kept
        (("heldout", 0), _item("h", b"only-heldout")),
        (("heldout", 1), _item("i", None)),  # a failure row: no bytes, kept
    ]
    totals = {"train": 5, "heldout": 4}
    train_shards, heldout_shards = num_shards_for(5, per_shard), num_shards_for(4, per_shard)
    pipeline = make_pipeline()
    out = (pipeline | beam.Create(items)
           | SplitByImageBytes(output=str(tmp_path), namespace="t", fraction=fraction, samples_per_shard=per_shard,
                               totals={s: pipeline | f"Total{s}" >> beam.Create([n]) for s, n in totals.items()}))
    assert_that(out | beam.Map(lambda e: (e[0], e[1].key)), equal_to([
        (("train", 0), "a"), (("train", shard_of("b", train_shards)), "b"),
        (("heldout", 0), "c"), (("heldout", shard_of("d", heldout_shards)), "d"),
        (("heldout", shard_of("e", heldout_shards)), "e"),
        (("train", 1), "f"), (("train", 0), "g"), (("heldout", 0), "h"), (("heldout", 1), "i"),
    ]))
    counters = run(pipeline, "t")
    assert counters == {"split.image_in_both_splits": 2, "split.moved_to.train": 1, "split.moved_to.heldout": 2}


def _urls_split_apart(base: str, fraction: float) -> tuple[str, str]:
    """Two image URLs that the URL split sends to different sides."""
    first = f"{base}/mirror-a/0.png"
    for i in range(1000):
        other = f"{base}/mirror-b/{i}.png"
        if heldout_by_image_url(other, fraction) != heldout_by_image_url(first, fraction):
            return first, other
    raise AssertionError("no such URL")


def _split_images(root: Path) -> dict[str, dict[str, list[str]]]:
    """split -> sha256 of each image -> the captions stored with it."""
    out: dict[str, dict[str, list[str]]] = {}
    for split in ("train", "heldout"):
        images: dict[str, list[str]] = {}
        for tar_path in sorted((root / split).glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for name, data in members.items():
                if name.endswith(".jpg"):
                    caption = members[name[:-4] + ".txt"].decode()
                    images.setdefault(hashlib.sha256(data).hexdigest(), []).append(caption)
        out[split] = images
    return out


def test_image_text_job_never_puts_one_image_in_both_splits(tmp_path):
    fraction = 0.5
    shared = picture(200, 160, seed=1)  # served under two URLs (a mirror)
    routes = {f"/cat-{i}.png": (200, {"Content-Type": "image/png"}, picture(200, 160, seed=10 + i)) for i in range(6)}
    with MediaServer(routes).serve() as base:
        mirror_a, mirror_b = _urls_split_apart(base, fraction)
        routes[mirror_a.removeprefix(base)] = routes[mirror_b.removeprefix(base)] = (
            200, {"Content-Type": "image/png"}, shared)
        rows = [(f"{base}/cat-{i}.png", f"a cat number {i} sitting on a mat") for i in range(6)]
        # one image, several captions: the URL split keeps them together
        rows += [(f"{base}/cat-0.png", f"another caption of the first cat {j}") for j in range(4)]
        rows += [(mirror_a, "the same picture on one mirror"), (mirror_b, "the same picture on another mirror")]
        table = tmp_path / "pairs.csv"
        with open(table, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["url", "caption"])
            writer.writerows(rows)
        config = ImageTextConfig(heldout_fraction=fraction, samples_per_shard=4,
                                 download=DownloadConfig(allow_private_hosts=True, retries=0, image_size=64))
        options = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
        stats = run_image_text(inputs=[str(table)], output=str(tmp_path / "out"), config=config, options=options)
    images = _split_images(tmp_path / "out")
    assert not set(images["train"]) & set(images["heldout"])
    everything = {**images["train"], **images["heldout"]}
    assert sum(len(c) for c in everything.values()) == len(rows)  # nothing lost
    cat0 = next(c for c in everything.values() if "a cat number 0 sitting on a mat" in c)
    assert len(cat0) == 5  # every caption of cat-0 sits with it, in one split
    mirrored = next(c for c in everything.values() if "the same picture on one mirror" in c)
    assert sorted(mirrored) == ["the same picture on another mirror", "the same picture on one mirror"]
    counters = stats["counters"]
    assert counters["split.image_in_both_splits"] == 1
    assert counters.get("split.moved_to.train", 0) + counters.get("split.moved_to.heldout",
                                                                               0) == 1
