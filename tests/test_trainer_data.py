"""Per-source loaders: resumable to the exact batch (0 and 2 loader processes), drops counted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flamboyance.model import ImageTransform
from flamboyance.model.tiny import build_tokenizer
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from flamboyance.shards import M3WSample, ShardWriter, ShardWriterConfig
from flamboyance.trainer.collate import build_collator
from flamboyance.trainer.config import DataConfig, SourceConfig
from flamboyance.trainer.data import SourceLoader
from flamboyance.trainer.tiny_data import caption, shape_png, write_tiny_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_tiny_shards(tmp_path_factory.mktemp("shards"), samples=24, per_shard=8)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([caption("red", "circle"), "This picture shows a blue square"] * 4, vocab_size=300)


TRANSFORM = ImageTransform(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _loader(name: str, urls: list[str], tokenizer, *, num_workers: int, state=None, rank=0, world=1, **source_kw):
    source = SourceConfig(urls=urls, batch_size=3, max_tokens=48, shuffle_buffer=5, **source_kw)
    return SourceLoader(
        name=name,
        source=source,
        data=DataConfig(num_workers=num_workers, prefetch_factor=2),
        collator=build_collator(name, tokenizer=tokenizer, image_transform=TRANSFORM, source=source),
        pad_id=tokenizer.pad_token_id,
        seed=7,
        rank=rank,
        world_size=world,
        state=state,
    )


def _take(loader: SourceLoader, n: int) -> list[dict[str, torch.Tensor]]:
    return [loader.next()["batch"] for _ in range(n)]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("name", ["m3w", "image_text"])
def test_resume_gives_the_same_next_batches(shards, tokenizer, num_workers: int, name: str) -> None:
    full = _loader(name, [shards[name]], tokenizer, num_workers=num_workers)
    reference = _take(full, 7)
    full.close()
    first = _loader(name, [shards[name]], tokenizer, num_workers=num_workers)
    head = _take(first, 3)  # 3 batches: with 2 streams the resume starts on stream 1
    state = first.state_dict()
    first.close()
    assert state["batches"] == 3 and state["num_streams"] == max(1, num_workers)
    resumed = _loader(name, [shards[name]], tokenizer, num_workers=num_workers, state=state)
    tail = _take(resumed, 4)
    resumed.close()
    assert all(_same(a, b) for a, b in zip(head + tail, reference))
    # the stream really moves: consecutive batches differ
    assert not _same(reference[0], reference[1])


def test_ranks_and_streams_read_different_data(shards, tokenizer) -> None:
    a = _take(_loader("image_text", [shards["image_text"]], tokenizer, num_workers=0, rank=0, world=2), 2)
    b = _take(_loader("image_text", [shards["image_text"]], tokenizer, num_workers=0, rank=1, world=2), 2)
    assert not _same(a[0], b[0])


def test_resume_refuses_another_worker_count(shards, tokenizer) -> None:
    first = _loader("image_text", [shards["image_text"]], tokenizer, num_workers=0)
    _take(first, 1)
    with pytest.raises(ValueError, match="written with 1 loader streams"):
        _loader("image_text", [shards["image_text"]], tokenizer, num_workers=2, state=first.state_dict())


def test_unlearnable_samples_are_dropped_and_counted(tmp_path: Path, tokenizer) -> None:
    # documents with a long text before their only image: windows ending at the image have no target
    with ShardWriter(str(tmp_path / "m3w"), kind="m3w", config=ShardWriterConfig(max_samples=10)) as writer:
        for i in range(10):
            preamble = " ".join(["This picture shows a blue square"] * 12)
            doc = {
                "url": f"http://127.0.0.1/{i}",
                "texts": [preamble, None, "red"],
                "images": [None, "http://127.0.0.1/i.png", None],
                "metadata": [None, None, None],
                "general_metadata": {},
                "text": f"{preamble}{IMAGE_TOKEN}red{EOC_TOKEN}",
            }
            writer.write(M3WSample(key=f"d{i}", document=doc, images=[shape_png("red", "circle")]))
    loader = _loader("m3w", [str(tmp_path / "m3w")], tokenizer, num_workers=0)
    items = [loader.next() for _ in range(6)]
    assert all(item["batch"]["input_ids"].shape[0] == 3 for item in items)  # batches stay full
    for item in items:
        labels = item["batch"]["labels"][:, 1:]
        assert ((labels != -100).sum(dim=1) > 0).all()
    dropped = loader.counts["dropped/no_labels"]
    assert dropped > 0
    assert sum(i["counts"].get("dropped/no_labels", 0) for i in items) == dropped
    # the position counts every record taken from the stream, kept or dropped
    assert loader.state_dict()["positions"][0] == 6 * 3 + dropped
