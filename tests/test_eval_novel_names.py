"""The novel-names evaluation: episodes (held-out names, balanced supports and answers), prompts,
and the `eval --task novel-names` command on a tiny checkpoint."""

from __future__ import annotations

import collections
import io
import json

import numpy as np
from flamboyance.cli import main as cli_main
from flamboyance.crawl.sample_media import COLOURS
from flamboyance.crawl.sample_text import is_held_out_name
from flamboyance.evaluation.novel_names import episode, prompt_of
from flamboyance.model import Flamingo
from flamboyance.model.tiny import tiny_config
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from PIL import Image


def test_episodes_are_held_out_balanced_and_shared_across_shot_counts():
    answers = collections.Counter()
    for index in range(40):
        eps = {k: episode(0, index, k) for k in (0, 4, 8)}
        first = eps[0]
        for ep in eps.values():  # the same names, objects and query for every shot count of a seed
            assert (ep.names, ep.objects, ep.target) == (first.names, first.objects, first.target)
            assert ep.query.image == first.query.image
        assert len(first.names) == 2 and all(is_held_out_name(n) for n in first.names)
        assert first.names[0][0] != first.names[1][0]
        a, b = first.objects
        assert a.colour != b.colour and a.shape != b.shape and a.background == b.background
        assert first.target == first.names[index % 2]
        answers[first.names.index(first.target)] += 1
        for k in (4, 8):
            names = [name for _, name in eps[k].support]
            assert collections.Counter(names) == {first.names[0]: k // 2, first.names[1]: k // 2}
            keys = [image.key for image, _ in eps[k].support] + [eps[k].query.key]
            assert len(set(keys)) == len(keys)
        # the query image shows the answer's object
        obj = first.objects[first.names.index(first.target)]
        pixels = np.asarray(Image.open(io.BytesIO(first.query.image)).convert("RGB"), dtype=np.int32)
        assert (np.abs(pixels - np.array(COLOURS[obj.colour])).sum(axis=2) < 60).mean() > 0.08
    assert answers == {0: 20, 1: 20}
    assert episode(1, 0, 4).names != episode(0, 0, 4).names  # seeds draw other episodes
    assert episode(0, 3, 4) == episode(0, 3, 4)


def test_prompts():
    ep = episode(0, 0, 4)
    prompt = prompt_of(ep, 0)
    assert prompt.count(IMAGE_TOKEN) == 5 and prompt.endswith(f"{IMAGE_TOKEN}This is the")
    assert prompt.startswith("".join(f"{IMAGE_TOKEN}This is the {n}{EOC_TOKEN}" for _, n in ep.support))
    zero = [episode(0, i, 0) for i in range(4)]
    texts = [prompt_of(ep, i) for i, ep in enumerate(zero)]
    for i, (ep, text) in enumerate(zip(zero, texts)):
        assert text.count(IMAGE_TOKEN) == 1 and all(f"This is the {n}{EOC_TOKEN}" in text for n in ep.names)
        first_named = text.split(EOC_TOKEN)[0].removeprefix("This is the ")
        assert (first_named == ep.target) == (i in (0, 3))  # the answer's name comes first in half


def test_eval_cli_novel_names_on_a_tiny_checkpoint(tmp_path, capsys):
    model = Flamingo.from_config(tiny_config(hidden_size=32, num_latents=4, init_seed=0))
    model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "nn.json"
    code = cli_main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--task", "novel-names", "--limit", "8",
                     "--shots", "0,2", "--seeds", "0,1", "--output", str(out)])
    assert code == 0
    assert "novel-names on 8 queries" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["task"] == "novel-names" and result["metric"] == "accuracy" and result["chance"] == 50.0
    assert result["num_queries"] == 8 and list(result["results"]) == ["0", "2"]
    for row in result["results"].values():
        assert set(row["per_seed"]) == {"0", "1"}
        assert all(v * 8 / 100 == round(v * 8 / 100) for v in row["per_seed"].values())  # whole queries
    assert len(result["examples"]["2"]) == 5
    assert all(e["prediction"] in e["prompt"] for e in result["examples"]["2"])  # a name of the context
