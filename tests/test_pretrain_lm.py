"""`flamboyance pretrain-lm`: the generated binding text, the saved HuggingFace folder, and the
Flamingo that the trainer builds on it (LM loaded with from_pretrained, frozen)."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import random
import re

import pytest
import torch
from flamboyance.cli import main as cli_main
from flamboyance.crawl.sample_text import is_held_out_name
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from flamboyance.trainer.build import build_model
from flamboyance.trainer.config import load_config
from flamboyance.trainer.pretrain_lm import KEY_WORDS, PretrainLMConfig, binding_passage, shard_texts
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_binding_passages_repeat_each_binding():
    rng = random.Random(0)
    for held_out in (False, True):
        for _ in range(50):
            lines = binding_passage(rng, held_out=held_out).split(EOC_TOKEN)
            assert lines[-1] == ""
            pairs = [re.fullmatch(r"<image>This is (\w+) (\w+)\.", line).groups() for line in lines[:-1]]
            by_key = collections.defaultdict(set)
            for key, name in pairs:
                by_key[key].add(name)
                assert key in KEY_WORDS and is_held_out_name(name) == held_out
            assert 2 <= len(by_key) <= 3 and all(len(v) == 1 for v in by_key.values())  # one name per key
            assert min(collections.Counter(k for k, _ in pairs).values()) >= 2  # every binding repeats
    assert binding_passage(random.Random(5)) == binding_passage(random.Random(5))


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="no shard text"):
        PretrainLMConfig(output=str(tmp_path))
    with pytest.raises(ValueError, match="binding_fraction"):
        PretrainLMConfig(output=str(tmp_path), binding_fraction=1.5)
    with pytest.raises(ValueError, match="seq_len"):
        PretrainLMConfig(output=str(tmp_path), binding_fraction=1.0, repeat_fraction=0.0, seq_len=600,
                         max_positions=512)
    with pytest.raises(ValueError, match="must be <= 1"):
        PretrainLMConfig(output=str(tmp_path), binding_fraction=0.8, repeat_fraction=0.3)


def test_pretrain_lm_saves_a_huggingface_folder_that_flamingo_loads_frozen(tmp_path, capsys):
    out = tmp_path / "lm"
    code = cli_main(["pretrain-lm", "--output", str(out), "--binding-fraction", "0.5", "--repeat-fraction", "0.5", "--steps", "3",
                     "--hidden-size", "32", "--num-heads", "2", "--seq-len", "32", "--batch-size", "2",
                     "--vocab-size", "300", "--eval-queries", "4", "--threads", "1"])
    assert code == 0 and "held-out induction accuracy" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm"]  # no temporary folder left
    report = json.loads((out / "pretrain_lm.json").read_text())
    assert [step for step, _ in report["loss"]] == [0, 2]
    assert set(report["induction_accuracy"]) == {"before", "after"}
    lm = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert lm.config.model_type == "llama" and lm.config.hidden_size == 32 and lm.config.vocab_size == len(tokenizer)
    for token in (IMAGE_TOKEN, EOC_TOKEN):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
        assert tokenizer.tokenize(f"a{token}b").count(token) == 1

    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"model.language_model={out}",
                             "model.tiny={image_size: 32, num_latents: 4}", "data.m3w=null",
                             "data.image_text={urls: [unused]}"])
    model = build_model(cfg.resolved())
    assert model.config.language_model == str(out.resolve())
    saved = lm.state_dict()
    for name, param in model.lm.named_parameters():
        assert not param.requires_grad, name
    for name, tensor in model.lm.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert len(model.tokenizer) == len(tokenizer)  # the LM's own tokenizer, nothing added
    model.save_pretrained(tmp_path / "init")
    from flamboyance.model import Flamingo

    again = Flamingo.from_pretrained(tmp_path / "init")
    for name, tensor in again.lm.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_shard_texts_reads_documents_and_captions_as_flamingo_sequences(tmp_path):
    from shards_fixtures import write_dataset

    docs = write_dataset(tmp_path / "m3w", "m3w", 5, per_shard=3)
    pairs = write_dataset(tmp_path / "it", "image_text", 4, per_shard=4)
    texts = shard_texts([str(tmp_path / "m3w")], [str(tmp_path / "it")], records=3)
    expected = [" ".join(d.document["text"].split()) for d in docs[:3]]
    expected += [f"{IMAGE_TOKEN}{p.caption}{EOC_TOKEN}" for p in pairs[:3]]
    assert expected[1].count(IMAGE_TOKEN) == 1 and expected[1].endswith(EOC_TOKEN)  # markers kept
    assert texts == expected


class _CopyOracle(torch.nn.Module):
    """A 'language model' that, from the second copy of a run of `length` tokens on, predicts the
    token `length` positions back with certainty, and knows nothing before (uniform logits)."""

    def __init__(self, vocab: int, length: int) -> None:
        super().__init__()
        self.vocab, self.length = vocab, length

    def forward(self, input_ids):
        rows, tokens = input_ids.shape
        logits = torch.zeros(rows, tokens, self.vocab)
        for t in range(self.length - 1, tokens - 1):  # position t predicts token t + 1
            logits[torch.arange(rows), t, input_ids[:, t + 1 - self.length]] = 100.0
        return type("Out", (), {"logits": logits})()


def test_repeat_copy_loss_scores_the_first_and_the_second_copy_separately():
    from flamboyance.trainer.pretrain_lm import repeat_copy_loss

    first, second = repeat_copy_loss(_CopyOracle(64, 10), 64, length=10, rows=4)
    assert first == pytest.approx(torch.log(torch.tensor(64.0)).item(), rel=1e-5)  # uniform: ln V
    assert second == pytest.approx(0.0, abs=1e-6)
    # an oracle that starts copying one position too late leaves the second copy's first target unknown
    first, second = repeat_copy_loss(_CopyOracle(64, 11), 64, length=10, rows=4)
    assert second > 0.1


def test_soft_key_rows_mark_each_chunk_with_its_object(tmp_path):
    from flamboyance.model.tiny import build_tokenizer
    from flamboyance.trainer.pretrain_lm import soft_key_embeddings, soft_key_rows, soft_key_story

    tokenizer = build_tokenizer([binding_passage(random.Random(i)) for i in range(50)], vocab_size=300)
    ids, objects = soft_key_story(tokenizer, random.Random(3), num_lines=6)
    image = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    starts = [i for i, token in enumerate(ids) if token == image]
    assert len(starts) == 6 and starts[0] == 0
    for start, end in zip(starts, starts[1:] + [len(ids)]):
        assert len(set(objects[start:end])) == 1  # a chunk carries one object, from its <image> on
    text = tokenizer.decode(ids)
    names = [m.group(1) for m in re.finditer(r"This is the (\w+)\.", text)]
    owner = {names[k]: objects[s] for k, s in enumerate(starts)}
    assert all(names.count(n) >= 2 for n in names) and len(set(owner.values())) == len(owner)

    rows, owners = soft_key_rows(tokenizer, random.Random(0), rows=3, seq_len=40)
    assert rows.shape == owners.shape == (3, 41)
    assert bool((owners[rows == tokenizer.eos_token_id] == -1).all())
    embedding = torch.nn.Embedding(len(tokenizer), 8)
    added = soft_key_embeddings(embedding, rows, owners, scale=1.0, generator=torch.Generator().manual_seed(0))
    delta = (added - embedding(rows)).detach()
    assert torch.equal(delta[owners == -1], torch.zeros_like(delta[owners == -1]))
    for row in range(3):  # one vector per object of a row, the same at every token of it
        for obj in set(owners[row].tolist()) - {-1}:
            vectors = delta[row][owners[row] == obj]
            assert torch.allclose(vectors, vectors[:1].expand_as(vectors)) and float(vectors[0].norm()) > 0


def test_soft_key_stories_with_prose_read_like_a_page():
    from flamboyance.model.tiny import build_tokenizer
    from flamboyance.trainer.pretrain_lm import soft_key_story

    prose = ["the harbour lanterns were lit early that evening by the fishermen of the bay",
             "quiet streets and old stone walls"]
    tokenizer = build_tokenizer([binding_passage(random.Random(i)) for i in range(50)] + prose, vocab_size=300)
    image, eoc = (tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, EOC_TOKEN))
    pages = tails = 0
    for seed in range(40):
        ids, objects = soft_key_story(tokenizer, random.Random(seed), num_lines=6, prose=prose)
        starts = [i for i, token in enumerate(ids) if token == image]
        ends = [i for i, token in enumerate(ids) if token == eoc]
        assert len(starts) == len(ends) == 6
        # prose before the first image and after the last <EOC> carries no object; each chunk one
        assert set(objects[: starts[0]]) <= {-1} and set(objects[ends[-1] + 1 :]) <= {-1}
        # with keys on text, the same story's closing words carry the last image's object
        keyed_ids, keyed = soft_key_story(tokenizer, random.Random(seed), num_lines=6, prose=prose, keys_on_text=True)
        assert keyed_ids == ids and keyed[: ends[-1] + 1] == objects[: ends[-1] + 1]
        assert keyed[ends[-1] + 1 :] == [objects[ends[-1]]] * (len(ids) - ends[-1] - 1)
        pages += starts[0] > 0
        assert (starts[0] > 0) == (ends[-1] < len(ids) - 1)
        for start, end in zip(starts, ends):
            assert len(set(objects[start : end + 1])) == 1 and objects[start] >= 0
        text = tokenizer.decode(ids)
        names = re.findall(r"This is the (\w+)[.,]", text)
        assert len(names) == 6 and all(names.count(n) >= 2 for n in names)
        tails += len(re.findall(r"This is the \w+,", text))
    assert 10 <= pages <= 30 and 60 <= tails <= 180  # about half of the stories, half of the chunks
    bare, _ = soft_key_story(tokenizer, random.Random(0), num_lines=6)  # no prose: the bare chunks
    assert re.fullmatch(r"(<image>Thisisthe\w+\.<EOC>){6}", tokenizer.decode(bare).replace(" ", ""))


def test_image_owners_follow_flamingos_per_image_masking():
    from flamboyance.trainer.pretrain_lm import image_owners

    img, eos = 7, 2
    #        text before any image | image 0 and its text | image 1 | EOS ends the text | next text
    ids = [5, 6, img, 5, 6, 9, img, 5, eos, 5, img, 6, eos]
    assert image_owners(ids, image_id=img, eos_id=eos) == [-1, -1, 0, 0, 0, 0, 1, 1, -1, -1, 2, 2, -1]
    assert image_owners([], image_id=img, eos_id=eos) == []


def test_pretrain_lm_with_soft_keys_reports_their_binding(tmp_path):
    out = tmp_path / "lm"
    cfg = PretrainLMConfig(output=str(out), binding_fraction=0.5, repeat_fraction=0.5, soft_key_fraction=0.5,
                           steps=2, hidden_size=32, num_heads=2, seq_len=32, batch_size=2, vocab_size=300,
                           eval_queries=4)
    from flamboyance.trainer.pretrain_lm import pretrain_lm

    report = pretrain_lm(cfg)
    assert set(report["soft_key_accuracy"]) == {"before", "after"}
    assert report["config"]["keys_on_text"] is False
    assert all(0.0 <= v <= 1.0 for v in report["soft_key_accuracy"].values())
    report = pretrain_lm(dataclasses.replace(cfg, keys_on_text=True))
    assert report["config"]["keys_on_text"] is True and set(report["soft_key_accuracy"]) == {"before", "after"}
    assert all(0.0 <= v <= 1.0 for v in report["soft_key_accuracy"].values())

    from flamboyance.trainer.pretrain_lm import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--output", "x"]).keys_on_text is False
    assert parser.parse_args(["--output", "x", "--keys-on-text"]).keys_on_text is True
    with pytest.raises(ValueError, match="soft_key_fraction"):
        PretrainLMConfig(output=str(out), soft_key_fraction=1.5)
