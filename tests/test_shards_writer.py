"""Writers: round trip, determinism, rollover, restartability (SIGKILL mid-shard)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from flamboyance.shards import (
    ImageTextSample,
    M3WSample,
    ShardWriter,
    ShardWriterConfig,
    completed_shards,
    open_dataset,
    read_manifest,
    write_manifest,
    write_shard,
)
from shards_fixtures import SAMPLES, all_files, image_text_samples, m3w_samples, png, write_dataset


@pytest.mark.parametrize("kind", ["image_text", "m3w", "video_text"])
def test_round_trip_every_kind(tmp_path: Path, kind: str) -> None:
    samples = write_dataset(tmp_path, kind, 5, per_shard=2)
    manifest = read_manifest(str(tmp_path))
    assert manifest["kind"] == kind
    assert [s["samples"] for s in manifest["shards"]] == [2, 2, 1]
    raw = list(open_dataset(str(tmp_path), decode=False))
    if kind == "image_text":  # img2dataset's json member also carries the key
        samples = [dataclasses.replace(s, metadata={**s.metadata, "key": s.key}) for s in samples]
    assert raw == samples  # bytes, captions, documents and metadata come back unchanged
    records = list(open_dataset(str(tmp_path)))
    assert [r.key for r in records] == [s.key for s in samples]
    first = records[0]
    if kind == "image_text":
        assert first.image.size == (8, 6) and first.image.getpixel((0, 0)) == (255, 0, 0)
        assert first.caption == "a shape number 0"
    elif kind == "m3w":
        assert [im.size for im in records[2].images] == [(8, 6), (9, 6), (10, 6)]
        assert records[2].document["text"] == samples[2].document["text"]
    else:
        assert len(first.frames) == 3 and first.metadata["timestamps"] == [0.0, 1.0, 2.0]


def test_m3w_member_names_group_and_order(tmp_path: Path) -> None:
    write_dataset(tmp_path, "m3w", 3, per_shard=10)
    import tarfile

    with tarfile.open(tmp_path / "00000.tar") as tar:
        names = tar.getnames()
        info = tar.getmember(names[0])
    assert names[:4] == ["doc0000.json", "doc0000.000.png", "doc0001.json", "doc0001.000.png"]
    assert names[-3:] == ["doc0002.000.png", "doc0002.001.png", "doc0002.002.png"]
    assert (info.mtime, info.uid, info.gid, info.uname, info.mode) == (0, 0, 0, "", 0o644)


def test_writes_are_deterministic(tmp_path: Path) -> None:
    for run in ("a", "b"):
        for kind in SAMPLES:
            write_dataset(tmp_path / run / kind, kind, 5, per_shard=2)
    for kind in SAMPLES:
        first, second = all_files(tmp_path / "a" / kind), all_files(tmp_path / "b" / kind)
        assert list(first) == ["00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar",
                               "00001_stats.json", "00002.parquet", "00002.tar", "00002_stats.json",
                               "manifest.json"]
        assert first == second


def test_rollover_by_size(tmp_path: Path) -> None:
    samples = image_text_samples(6)
    member_bytes = 3 * 512 + 512 + 512 + 512  # three headers, image/txt/json data blocks
    with ShardWriter(str(tmp_path), kind="image_text",
                     config=ShardWriterConfig(max_samples=100, max_bytes=1024 + 2 * member_bytes)) as writer:
        for s in samples:
            writer.write(s)
    assert [i.samples for i in writer.infos] == [2, 2, 2]
    assert all(i.bytes <= 1024 + 2 * member_bytes + 10240 for i in writer.infos)


def test_failure_rows_in_parquet_and_stats(tmp_path: Path) -> None:
    samples = image_text_samples(2)
    rows = [{"key": "it9000", "status": "failed_to_download", "error_message": "HTTP 404", "url": "http://x/a"},
            {"key": "it9001", "status": "failed_to_resize", "error_message": "image too small"}]
    info = write_shard(str(tmp_path), kind="image_text", shard_index=7, samples=samples, rows=rows)
    assert (info.samples, info.rows, info.failures, info.tar) == (2, 4, 2, "00007.tar")
    table = pq.read_table(tmp_path / "00007.parquet").to_pylist()
    assert [(r["key"], r["status"], r["error_message"]) for r in table] == [
        ("it0000", "success", None), ("it0001", "success", None),
        ("it9000", "failed_to_download", "HTTP 404"), ("it9001", "failed_to_resize", "image too small")]
    assert table[0]["width"] == 8 and table[1]["width"] == 9
    stats = json.loads((tmp_path / "00007_stats.json").read_text())
    assert (stats["count"], stats["successes"], stats["failed_to_download"], stats["failed_to_resize"]) == (4, 2, 1, 1)
    assert stats["status_dict"] == {"success": 2, "HTTP 404": 1, "image too small": 1}
    assert completed_shards(str(tmp_path)) == {7}
    manifest = write_manifest(str(tmp_path), kind="image_text")  # collected from the stats files
    assert manifest["shards"] == [info.to_dict()]


def test_bad_inputs_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid sample key 'a.b'"):
        write_shard(str(tmp_path), kind="image_text", shard_index=0,
                    samples=[ImageTextSample(key="a.b", image=png((1, 2, 3)), caption="x")])
    doc = m3w_samples(2)[1]
    with pytest.raises(ValueError, match="document lists 2 images but 1"):
        write_shard(str(tmp_path), kind="m3w", shard_index=0,
                    samples=[M3WSample(key="d", document=doc.document, images=doc.images[:1])])
    with pytest.raises(TypeError, match="kind 'm3w' takes M3WSample"):
        write_shard(str(tmp_path), kind="m3w", shard_index=0, samples=image_text_samples(1))
    with pytest.raises(ValueError, match="duplicate sample key 'it0000'"):
        write_shard(str(tmp_path), kind="image_text", shard_index=0, samples=image_text_samples(1) * 2)
    assert os.listdir(tmp_path) == []  # not even temp files


def test_rerun_skips_complete_shards_and_redoes_the_rest(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ref", "m3w", 7, per_shard=3)
    out = tmp_path / "out"
    write_dataset(out, "m3w", 7, per_shard=3)
    (out / "00001_stats.json").unlink()
    (out / "00002.tar").write_bytes(b"garbage")  # stats present but size no longer matches
    assert completed_shards(str(out)) == {0}
    with ShardWriter(str(out), kind="m3w", config=ShardWriterConfig(max_samples=3)) as writer:
        for s in m3w_samples(7):
            writer.write(s)
    assert (writer.skipped, writer.written) == ([0], [1, 2])
    assert all_files(out) == all_files(tmp_path / "ref")


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from shards_fixtures import m3w_samples
    from flamboyance.shards import ShardWriter, ShardWriterConfig
    writer = ShardWriter(sys.argv[1], kind="m3w", config=ShardWriterConfig(max_samples=3))
    for i, sample in enumerate(m3w_samples(8)):
        writer.write(sample)
        if i == 4:  # two samples into shard 1
            print("mid-shard", flush=True)
            time.sleep(60)
""")


def test_sigkill_mid_shard_then_rerun_is_byte_identical(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ref", "m3w", 8, per_shard=3)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "mid-shard"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    names = sorted(os.listdir(out))
    final = [n for n in names if not n.startswith(".")]
    assert final == ["00000.parquet", "00000.tar", "00000_stats.json", "manifest.json"]
    assert [n for n in names if n.startswith(".00001.tar.tmp-")]  # the partial shard is only a temp file
    assert [s["shard_index"] for s in read_manifest(str(out))["shards"]] == [0]
    with ShardWriter(str(out), kind="m3w", config=ShardWriterConfig(max_samples=3)) as writer:
        for s in m3w_samples(8):
            writer.write(s)
    assert (writer.skipped, writer.written) == ([0], [1, 2])
    assert sorted(os.listdir(out)) == sorted(all_files(tmp_path / "ref"))  # stale temp removed
    assert all_files(out) == all_files(tmp_path / "ref")


def test_any_fsspec_url_round_trip() -> None:
    import fsspec

    url = "memory://flamboyance-test/video"
    try:
        samples = write_dataset(url, "video_text", 3, per_shard=2)
        assert sorted(n.rsplit("/", 1)[-1] for n in fsspec.filesystem("memory").ls(url, detail=False)) == [
            "00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json",
            "manifest.json"]
        assert list(open_dataset(url, decode=False)) == samples
        assert completed_shards(url) == {0, 1}
    finally:
        fsspec.filesystem("memory").rm("/flamboyance-test", recursive=True)


def test_a_full_disk_leaves_no_temp_file_and_no_shard(tmp_path, monkeypatch):
    """ENOSPC on the final flush (close), as a full disk often shows it: the error reaches the
    caller, and neither a hidden temp file nor a final name is left behind."""
    import errno

    import fsspec.implementations.local as local

    real_open = local.LocalFileSystem._open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            return self.handle.write(data)

        def tell(self):
            return self.handle.tell()

        def close(self):
            self.handle.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(local.LocalFileSystem, "_open",
                        lambda self, path, mode="rb", **kw: FullDisk(real_open(self, path, mode, **kw)))
    with pytest.raises(OSError) as err:
        write_shard(str(tmp_path), kind="image_text", shard_index=0, samples=image_text_samples(2))
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []
