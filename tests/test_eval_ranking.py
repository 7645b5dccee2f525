"""Option ranking with the prompt's KV cache reused across options gives the scores of one full
forward per (query, option) pair, on tiny random models with open gates (the images matter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flamboyance.evaluation import EvalExample
from flamboyance.evaluation.evaluate import _Query, _Runner
from flamboyance.evaluation.prompts import build_prompt
from flamboyance.evaluation.ranking import score_options
from flamboyance.model import Flamingo
from flamboyance.model.tiny import tiny_config
from PIL import Image

OPTIONS = ["red circle", "a", "blue square on a green mat", "cat", "the quick brown fox jumps"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(family: str, immediate: bool) -> Flamingo:
    model = Flamingo.from_config(tiny_config(family=family, init_seed=3, only_attend_immediate_media=immediate))
    with torch.no_grad():
        for block in model.xattn.values():  # open the tanh gates: the images change the scores
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(1.0)
    return model.eval()


def _image(seed: int) -> EvalExample:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    return EvalExample(key=f"img{seed}", image=Image.fromarray(pixels), target="x", references=("x",))


def _queries() -> list[_Query]:
    """Prompts of different lengths and image counts (zero-shot text-only support, 1 and 3 shots)."""
    cases = [
        [("a red circle", False), ("a cat", False)],  # zero-shot: two text-only examples
        [("blue square", True)],
        [("a", True), ("green mat with a long caption here", True), ("cat", True)],
        [],
    ]
    queries, seed = [], 0
    for support in cases:
        with_images = [t for t, img in support if img]
        prompt = build_prompt("classification", support=[(t, None) for t, _ in support],
                              text_only_support=bool(support) and not with_images)
        images = tuple(_image(seed + i) for i in range(len(with_images) + 1))
        seed += len(images)
        queries.append(_Query(example=images[-1], prompt=prompt, images=images))
    return queries


@pytest.mark.parametrize("family,immediate", [("gpt2", True), ("llama", True), ("opt", False)])
def test_cached_ranking_equals_full_forward(family, immediate):
    model = _model(family, immediate)
    queries = _queries()
    with torch.inference_mode():
        # batch 3: prompt batches mix lengths (left padding), option chunks split a query's options
        runner = _Runner(model, batch_size=3, cache_images=64)
        cached = runner.option_scores(queries, OPTIONS)
        full = runner.option_scores(queries, OPTIONS, reuse_prompt_cache=False)
    assert cached.shape == (len(queries), len(OPTIONS))
    torch.testing.assert_close(cached, full, rtol=0, atol=2e-4)
    # not a trivial agreement: options and queries really score differently
    assert len({round(v, 3) for v in full.flatten().tolist()}) == full.numel()
    assert runner.rank(queries, OPTIONS) == [OPTIONS[int(full[q].argmax())] for q in range(len(queries))]


def test_cached_option_tokens_attend_to_the_last_image():
    model = _model("gpt2", True)
    query = _queries()[2]
    other_last = _Query(example=query.example, prompt=query.prompt, images=(*query.images[:-1], _image(99)))
    other_first = _Query(example=query.example, prompt=query.prompt, images=(_image(98), *query.images[1:]))
    with torch.inference_mode():
        runner = _Runner(model, batch_size=4, cache_images=64)
        base, last, first = runner.option_scores([query, other_last, other_first], OPTIONS)
        full = runner.option_scores([query, other_last, other_first], OPTIONS, reuse_prompt_cache=False)
    torch.testing.assert_close(torch.stack([base, last, first]), full, rtol=0, atol=2e-4)
    assert (base - last).abs().max() > 1e-3  # the last image changes the option scores


def test_score_options_rejects_bad_options():
    model = _model("gpt2", True)
    ids = torch.tensor([[5, 6, model.image_token_id, 7]])
    with pytest.raises(ValueError, match="contains the <image> token"):
        score_options(model, ids, torch.ones_like(ids), None, [[5], [model.image_token_id]], rows_per_forward=2)
    with pytest.raises(ValueError, match="no tokens"):
        score_options(model, ids, torch.ones_like(ids), None, [[]], rows_per_forward=2)
