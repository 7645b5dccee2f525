"""`compute_stats` on every kind (parquet fast path and tar scan agree) and `verify`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flamboyance.cli import main
from flamboyance.shards import ShardWriter, ShardWriterConfig, compute_stats, verify
from flamboyance.shards.formats import ImageTextSample
from shards_fixtures import read_members, write_dataset, write_members


@pytest.mark.parametrize("kind", ["m3w", "image_text", "video_text"])
def test_parquet_and_scan_agree(tmp_path: Path, kind: str) -> None:
    samples = write_dataset(tmp_path, kind, 7, per_shard=3)
    fast = compute_stats(str(tmp_path))
    slow = compute_stats(str(tmp_path), scan=True)
    assert fast["method"] == {"parquet": 3} and slow["method"] == {"tar scan": 3}
    for stats in (fast, slow):
        assert (stats["kind"], stats["shards"], stats["samples"], stats["failures"]) == (kind, 3, 7, {})
        assert stats["bytes"] == sum(p.stat().st_size for p in tmp_path.glob("*.tar"))
    assert fast["distributions"] == slow["distributions"]
    assert fast["text_tokens"] == slow["text_tokens"]
    if kind == "m3w":
        assert fast["images"] == sum(len(s.images) for s in samples) == 13
        assert fast["languages"] == {"en": 7}
        assert fast["text_tokens"] == sum(len(t.split()) for s in samples for t in s.document["texts"] if t)
        assert fast["distributions"]["images_per_document"]["max"] == 3.0
    elif kind == "image_text":
        assert fast["images"] == 7
        assert fast["distributions"]["caption_length"]["p50"] == 4.0
        assert fast["distributions"]["image_width"]["max"] == 14.0
    else:
        assert fast["images"] == fast["frames"] == 21
        assert fast["distributions"]["video_duration"]["mean"] == 3.0


def test_failures_come_from_the_parquet_status_columns(tmp_path: Path) -> None:
    sample = write_dataset(tmp_path / "tmp", "image_text", 1, per_shard=1)[0]
    with ShardWriter(str(tmp_path / "data"), kind="image_text", config=ShardWriterConfig(max_rows=3)) as writer:
        writer.write(sample)
        writer.write_failure(key="f1", status="failed_to_download", error_message="HTTP 404")
        writer.write_failure(key="f2", status="failed_to_download", error_message="HTTP 404")
        writer.write(ImageTextSample(key="ok2", image=sample.image, caption="two words"))
        writer.write_failure(key="f3", status="failed_to_resize", error_message="image too small")
    stats = compute_stats(str(tmp_path / "data"))
    assert (stats["shards"], stats["rows"], stats["samples"]) == (2, 5, 2)
    assert stats["failures"] == {"HTTP 404": 2, "image too small": 1}
    assert stats["failures_by_status"] == {"failed_to_download": 2, "failed_to_resize": 1}


def test_verify_catches_changed_bytes_and_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_dataset(tmp_path, "m3w", 6, per_shard=3)
    assert verify(str(tmp_path)).ok
    assert main(["stats", str(tmp_path), "--verify", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["samples"] == 6
    tar = tmp_path / "00001.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF  # inside the first member's data: still a valid tar
    tar.write_bytes(bytes(data))
    result = verify(str(tmp_path))
    assert (result.shards, result.samples) == (2, 6)
    assert len(result.problems) == 1 and "00001.tar: sha256" in result.problems[0]
    assert main(["stats", str(tmp_path), "--verify"]) == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_verify_catches_a_wrong_sample_count_and_a_missing_shard(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    write_dataset(tmp_path, "image_text", 9, per_shard=3)
    # only the count disagrees: the manifest claims one sample more than shard 0 holds
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["samples"] = 4
    manifest_path.write_text(json.dumps(manifest))
    result = verify(str(tmp_path))
    assert (result.shards, result.samples) == (3, 9)
    assert result.problems == [f"{tmp_path}/00000.tar: 3 samples, manifest says 4"]
    assert main(["stats", str(tmp_path), "--verify"]) == 1
    assert "00000.tar: 3 samples, manifest says 4" in capsys.readouterr().err
    # a shard rewritten without one of its samples: a valid tar (padded by tarfile to the same
    # size), but its hash and its sample count differ; and a shard that is gone
    shard = tmp_path / "00001.tar"
    write_members(shard, [m for m in read_members(shard) if not m[0].startswith("it0004.")])
    assert shard.stat().st_size == manifest["shards"][1]["bytes"]
    (tmp_path / "00002.tar").unlink()
    problems = verify(str(tmp_path)).problems
    assert len(problems) == 4
    assert problems[0] == f"{tmp_path}/00000.tar: 3 samples, manifest says 4"
    assert problems[1].startswith(f"{tmp_path}/00001.tar: sha256 ")
    assert problems[2] == f"{tmp_path}/00001.tar: 2 samples, manifest says 3"
    assert problems[3] == f"{tmp_path}/00002.tar: missing"
    assert main(["stats", str(tmp_path), "--verify"]) == 1


def test_verify_checks_plain_img2dataset_layout_against_stats_files(tmp_path: Path) -> None:
    write_dataset(tmp_path, "image_text", 4, per_shard=2)
    (tmp_path / "manifest.json").unlink()  # as img2dataset leaves it: tars + _stats.json only
    assert verify(str(tmp_path)).ok
    stats_path = tmp_path / "00001_stats.json"
    stats = json.loads(stats_path.read_text())
    stats["successes"] = 3
    stats_path.write_text(json.dumps(stats))
    assert verify(str(tmp_path)).problems == [f"{tmp_path}/00001.tar: 2 samples, _stats.json says 3"]
    assert main(["stats", str(tmp_path), "--verify"]) == 1
