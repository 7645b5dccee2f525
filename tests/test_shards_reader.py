"""Readers: bad data is skipped and counted exactly; splitting, shuffling, resampling, resume, HTTP."""

from __future__ import annotations

import functools
import http.server
import itertools
import json
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from flamboyance.shards import ShardDataWarning, dataloader_state, open_dataset, worker_positions
from flamboyance.shards.reader import DatasetLocation, ShardDataset, ShardRef
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from shards_fixtures import png, read_members, write_dataset, write_members

# --- bad data: exact kept / skipped counts ------------------------------------------------------


def _keys(ds) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [r.key for r in ds]
    ds.caught = [w for w in caught if issubclass(w.category, ShardDataWarning)]
    return keys


@pytest.mark.parametrize("offset", [-512, -400, 0, 10])
def test_truncated_shard_counts_the_lost_samples(tmp_path: Path, offset: int) -> None:
    write_dataset(tmp_path, "image_text", 10, per_shard=5)
    tar = tmp_path / "00000.tar"
    members = read_members(tar)
    # cut at / inside the header or inside the data of the 4th sample's image:
    # samples 0-2 survive, 3-4 are lost
    data = tar.read_bytes()
    cut = data.index(members[9][1]) + offset
    tar.write_bytes(data[:cut])
    ds = open_dataset(str(tmp_path))
    keys = _keys(ds)
    assert keys == ["it0000", "it0001", "it0002", "it0005", "it0006", "it0007", "it0008", "it0009"]
    assert ds.skipped == Counter({"truncated_shard": 2})
    assert ds.shard_errors == Counter({"truncated_shard": 1})
    assert len(ds.caught) == 1 and "00000.tar" in str(ds.caught[0].message)


def test_tar_cut_at_a_sample_boundary_is_noticed_through_the_manifest(tmp_path: Path) -> None:
    write_dataset(tmp_path, "video_text", 6, per_shard=3)
    tar = tmp_path / "00001.tar"
    members = read_members(tar)
    # a clean tar holding only the first sample: tarfile sees no error, the manifest does
    write_members(tar, [m for m in members if m[0].startswith("vid0003")])
    ds = open_dataset(str(tmp_path))
    assert _keys(ds) == ["vid0000", "vid0001", "vid0002", "vid0003"]
    assert ds.skipped == Counter({"missing_samples": 2})


def test_corrupt_and_missing_shards(tmp_path: Path) -> None:
    write_dataset(tmp_path, "image_text", 9, per_shard=3)
    (tmp_path / "00000.tar").write_bytes(b"this is not a tar file" * 100)
    (tmp_path / "00002.tar").unlink()
    ds = open_dataset(str(tmp_path))
    assert _keys(ds) == ["it0003", "it0004", "it0005"]
    assert ds.skipped == Counter({"corrupt_shard": 3, "missing_shard": 3})
    assert ds.shard_errors == Counter({"corrupt_shard": 1, "missing_shard": 1})
    assert len(ds.caught) == 2


def test_sample_missing_a_member(tmp_path: Path) -> None:
    write_dataset(tmp_path, "m3w", 6, per_shard=6)
    tar = tmp_path / "00000.tar"
    members = read_members(tar)
    # doc0002 has 3 images: drop its middle one; doc0004 loses its json
    drop = {"doc0002.001.png", "doc0004.json"}
    write_members(tar, [m for m in members if m[0] not in drop])
    ds = open_dataset(str(tmp_path))
    assert _keys(ds) == ["doc0000", "doc0001", "doc0003", "doc0005"]
    assert ds.skipped == Counter({"missing_member": 2})
    assert len(ds.caught) == 1  # once per shard


def test_image_text_missing_caption(tmp_path: Path) -> None:
    write_dataset(tmp_path, "image_text", 4, per_shard=4)
    tar = tmp_path / "00000.tar"
    write_members(tar, [m for m in read_members(tar) if m[0] != "it0001.txt"])
    ds = open_dataset(str(tmp_path))
    assert _keys(ds) == ["it0000", "it0002", "it0003"]
    assert ds.skipped == Counter({"missing_member": 1})


def test_undecodable_and_truncated_images(tmp_path: Path) -> None:
    write_dataset(tmp_path, "image_text", 5, per_shard=5)
    tar = tmp_path / "00000.tar"
    members = dict(read_members(tar))
    members["it0001.png"] = b"not an image at all"
    members["it0003.png"] = members["it0003.png"][:-30]  # opens fine, fails on load()
    write_members(tar, list(members.items()))
    ds = open_dataset(str(tmp_path))
    assert _keys(ds) == ["it0000", "it0002", "it0004"]
    assert ds.skipped == Counter({"undecodable_image": 2})
    assert len(ds.caught) == 1
    raw = open_dataset(str(tmp_path), decode=False)  # raw bytes: nothing decoded, nothing dropped
    assert len(_keys(raw)) == 5 and raw.skipped == Counter()


def test_decompression_bomb_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dataset(tmp_path, "m3w", 3, per_shard=3)
    tar = tmp_path / "00000.tar"
    members = dict(read_members(tar))
    members["doc0001.001.png"] = png((1, 2, 3), (60, 50))  # 3000 px
    write_members(tar, list(members.items()))
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; the reader must refuse it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    ds = open_dataset(str(tmp_path))
    assert _keys(ds) == ["doc0000", "doc0002"]
    assert ds.skipped == Counter({"decompression_bomb": 1})


def test_member_names_escaping_the_shard(tmp_path: Path) -> None:
    write_dataset(tmp_path, "image_text", 4, per_shard=4)
    tar = tmp_path / "00000.tar"
    members = read_members(tar)
    renamed = [("../" + n if n.startswith("it0001") else "/abs/" + n if n.startswith("it0002") else n, d)
               for n, d in members]
    write_members(tar, renamed)
    ds = open_dataset(str(tmp_path))
    assert _keys(ds) == ["it0000", "it0003"]
    assert ds.skipped == Counter({"unsafe_member_name": 2})


# --- order: splitting, shuffling, resampling, resume ---------------------------------------------


@pytest.fixture(scope="module")
def five_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("five")
    write_dataset(out, "image_text", 20, per_shard=4)
    return str(out)


ALL_KEYS = [f"it{i:04d}" for i in range(20)]


def test_split_by_node_covers_every_sample_once(five_shards: str) -> None:
    parts = [_keys(open_dataset(five_shards, decode=False, rank=r, world_size=2)) for r in range(2)]
    assert parts[0] == ALL_KEYS[0:4] + ALL_KEYS[8:12] + ALL_KEYS[16:20]
    assert parts[1] == ALL_KEYS[4:8] + ALL_KEYS[12:16]


def test_split_by_worker_with_a_real_dataloader(five_shards: str) -> None:
    ds = open_dataset(five_shards, decode=False, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2,
                                         collate_fn=lambda s: s.key)
    assert sorted(loader) == ALL_KEYS[4:8] + ALL_KEYS[12:16]


def test_shuffle_keeps_the_multiset_and_depends_on_seed_and_epoch(five_shards: str) -> None:
    first = _keys(open_dataset(five_shards, decode=False, shuffle=6, seed=3))
    again = _keys(open_dataset(five_shards, decode=False, shuffle=6, seed=3))
    other_seed = _keys(open_dataset(five_shards, decode=False, shuffle=6, seed=4))
    next_epoch = _keys(open_dataset(five_shards, decode=False, shuffle=6, seed=3, epoch=1))
    assert sorted(first) == ALL_KEYS and first == again
    assert first != ALL_KEYS and other_seed != first and next_epoch != first


def test_resampled_with_fewer_shards_than_workers_does_not_hang(tmp_path: Path) -> None:
    write_dataset(tmp_path, "image_text", 3, per_shard=3)  # one shard, two workers
    ds = open_dataset(str(tmp_path), decode=False, resampled=True, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda s: s.key)
    keys = list(itertools.islice(iter(loader), 12))
    assert len(keys) == 12 and set(keys) == {"it0000", "it0001", "it0002"}


def test_resume_from_state_dict(five_shards: str) -> None:
    ds = open_dataset(five_shards, shuffle=5, seed=9, resampled=True)
    stream = iter(ds)
    head = [next(stream).key for _ in range(7)]
    state = ds.state_dict()
    tail = [next(stream).key for _ in range(9)]
    assert state == {"seed": 9, "epoch": 0, "position": 7, "worker_offset": 0}
    fresh = open_dataset(five_shards, shuffle=5, seed=9, resampled=True)
    fresh.load_state_dict(state)
    assert [r.key for r in itertools.islice(fresh, 9)] == tail
    assert head != tail[:7]


def test_resume_dataloader_workers_with_worker_positions(five_shards: str) -> None:
    def loader(state):
        ds = open_dataset(five_shards, decode=False, shuffle=3, seed=1, resampled=True)
        if state is not None:
            ds.load_state_dict(json.loads(json.dumps(state)))  # as stored in a JSON checkpoint
        return torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2,
                                           collate_fn=lambda batch: [s.key for s in batch])

    full = list(itertools.islice(iter(loader(None)), 8))
    assert worker_positions(5, batch_size=2, num_workers=2) == {0: 6, 1: 4}
    resumed = list(itertools.islice(iter(loader(dataloader_state(5, batch_size=2, num_workers=2, seed=1))), 3))
    assert resumed == full[5:8]


# --- remote URLs ---------------------------------------------------------------------------------


@contextmanager
def _serve(directory: str) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D401 - keep test output clean
        pass


def test_http_brace_pattern(five_shards: str) -> None:
    with _serve(five_shards) as base:
        ds = open_dataset(f"{base}/{{00001..00003}}.tar")
        records = list(ds)
        assert ds.kind == "image_text"
        assert [r.key for r in records] == ALL_KEYS[4:16]
        assert records[0].image.size == (12, 6)
        assert ds.location.shards[0].expected == 4  # manifest read over HTTP
        assert [r.key for r in open_dataset(f"{base}/", decode=False)] == ALL_KEYS  # root via manifest.json
        missing = open_dataset(f"{base}/{{00004..00005}}.tar")
        assert _keys(missing) == ALL_KEYS[16:20]
        assert missing.shard_errors == Counter({"missing_shard": 1})


@settings(max_examples=60, deadline=None)
@given(shards=st.integers(1, 12), world=st.integers(1, 4), workers=st.integers(1, 4), seed=st.integers(0, 3),
       shuffle_shards=st.booleans())
def test_split_covers_every_shard_exactly_once(shards: int, world: int, workers: int, seed: int,
                                               shuffle_shards: bool) -> None:
    location = DatasetLocation("image_text", tuple(ShardRef(f"/d/{i:05d}.tar", 1) for i in range(shards)), {})
    ds = ShardDataset(location, seed=seed, shuffle_shards=shuffle_shards)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShardDataWarning)  # ranks without shards warn
        got = [ref.url for r in range(world) for w in range(workers) for ref in ds._shard_sequence(r, world, w, workers)]
    assert sorted(got) == [ref.url for ref in location.shards]


def test_resampled_stream_over_unusable_shards_stops_instead_of_spinning(tmp_path: Path) -> None:
    write_dataset(tmp_path, "image_text", 4, per_shard=2)
    for tar in tmp_path.glob("*.tar"):
        tar.write_bytes(b"\0" * 100)  # both shards corrupt
    ds = open_dataset(str(tmp_path), resampled=True)
    assert _keys(ds) == []
    assert ds.shard_errors == Counter({"corrupt_shard": 10})  # max(10, 3 x 2 shards) reads
    assert ds.skipped == Counter({"corrupt_shard": 20})
    assert "resampled stream stopped" in str(ds.caught[-1].message)
