"""A query is never shown its own image as a shot, whatever the support pool: same URL, same
bytes or same pixels under another key (random shots and RICES)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from flamboyance.evaluation import EvalDataset, EvalExample, evaluate
from flamboyance.model import Flamingo
from flamboyance.model.tiny import tiny_config
from PIL import Image


@pytest.fixture(scope="module")
def model() -> Flamingo:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Flamingo.from_config(tiny_config(init_seed=1)).eval()
    torch.set_num_threads(before)


def _picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(24, 24, 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _example(key: str, image, *, url: str | None = None) -> EvalExample:
    return EvalExample(key=key, image=image, target=f"caption {key}", references=(f"caption {key}",), image_url=url)


QUERIES = EvalDataset(task="captioning", source="queries", examples=(
    _example("q0", _encoded(_picture(0), "PNG")),
    _example("q1", _encoded(_picture(1), "PNG"), url="http://img.example/cat.png"),
    _example("q2", _encoded(_picture(2), "PNG")),
))
SUPPORT = EvalDataset(task="captioning", source="support", examples=(
    _example("same-bytes-as-q0", _encoded(_picture(0), "PNG")),
    _example("same-url-as-q1", _encoded(_picture(11), "PNG"), url="http://IMG.example:80/cat.png?utm_source=x"),
    _example("same-pixels-as-q2", _picture(2)),  # decoded in memory: only its pixels say who it is
    _example("other-a", _encoded(_picture(3), "PNG")),
    _example("other-b", _encoded(_picture(4), "BMP")),
    _example("other-c", _picture(5)),
))
OWN = {"q0": "same-bytes-as-q0", "q1": "same-url-as-q1", "q2": "same-pixels-as-q2"}


def test_image_identity_keys():
    queries = {e.key: e.image_identity() for e in QUERIES.examples}
    support = {e.key: e.image_identity() for e in SUPPORT.examples}
    shared = {(q, s): {k.split(":", 1)[0] for k in queries[q] & support[s]} for q in queries for s in support
              if queries[q] & support[s]}
    assert shared == {("q0", "same-bytes-as-q0"): {"sha256", "pixels"}, ("q1", "same-url-as-q1"): {"url"},
                      ("q2", "same-pixels-as-q2"): {"pixels"}}
    assert SUPPORT.examples[2].image_identity(pixels=False) == frozenset()


@pytest.mark.parametrize("rices", [False, True])
def test_shots_never_show_the_query_its_own_image(model, rices, tmp_path):
    # 4 shots out of 6: every draw would include the own image 2 times in 3 without the exclusion,
    # and RICES would rank it first (same or nearly the same features)
    result = evaluate(model, "captioning", QUERIES, support=SUPPORT, shots=[0, 4], seeds=[0, 1, 2, 3], rices=rices,
                      num_examples=3, max_new_tokens=2, num_beams=1, batch_size=3)
    for shots, rows in result["examples"].items():
        for row in rows:
            assert f"caption {OWN[row['key']]}" not in row["prompt"]
            others = [e.key for e in SUPPORT.examples if e.key != OWN[row["key"]]]
            used = [k for k in others if f"caption {k}<" in row["prompt"]]
            assert len(used) == (4 if shots == "4" else 2)
