"""BOS per tokenizer, the same in training sequences, evaluation prompts and generation prompts.

Tokenizers are built locally in the three behaviours of the supported families: GPT-2 adds no BOS,
Llama adds <s>, OPT adds </s> (its BOS is also its EOS)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from flamboyance.evaluation.evaluate import _Runner
from flamboyance.model import Flamingo
from flamboyance.model.generation import encode_prompts
from flamboyance.model.text import bos_ids, encode_sequence
from flamboyance.model.tiny import EOS_TOKEN, build_tokenizer, tiny_config
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from flamboyance.trainer.collate import IGNORE_INDEX, ImageTextCollator, M3WCollator, PackedPairs, Rejected
from PIL import Image
from tokenizers.processors import TemplateProcessing

CORPUS = ["a red circle on a white background", "words before the picture", "Output: a cat"] * 4
CAPTION = "a red circle"


def family_tokenizer(family: str):
    """A tiny BPE tokenizer that adds a BOS the way ``family``'s pretrained tokenizer does."""
    tokenizer = build_tokenizer(CORPUS, vocab_size=300)
    if family == "gpt2":  # <|endoftext|> is bos/eos but never added
        return tokenizer
    if family == "llama":  # a separate <s>, added in front of every text
        tokenizer.add_special_tokens({"bos_token": "<s>"})
    bos = tokenizer.bos_token  # opt: bos == eos == the end-of-text token, added in front
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    return tokenizer


FAMILIES = {"gpt2": False, "llama": True, "opt": True}  # family -> adds BOS


@pytest.fixture(scope="module", params=list(FAMILIES))
def case(request):
    family = request.param
    tokenizer = family_tokenizer(family)
    model = Flamingo.from_config(tiny_config(family="gpt2" if family == "gpt2" else family,
                                             tokenizer=tokenizer)).eval()
    return SimpleNamespace(family=family, adds_bos=FAMILIES[family], model=model, tokenizer=model.tokenizer)


def test_bos_is_detected_from_what_the_tokenizer_adds(case) -> None:
    tokenizer = case.tokenizer
    expected = [tokenizer.bos_token_id] if case.adds_bos else []
    assert bos_ids(tokenizer) == expected
    assert case.model.bos_ids == expected
    assert (list(tokenizer("a")["input_ids"])[:1] == expected[:1]) if case.adds_bos else True
    if case.family == "opt":
        assert tokenizer.bos_token_id == tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    if case.family == "gpt2":  # bos exists but is not added
        assert tokenizer.bos_token_id is not None and bos_ids(tokenizer) == []
    plain = list(tokenizer(CAPTION, add_special_tokens=False)["input_ids"])
    assert encode_sequence(tokenizer, CAPTION) == expected + plain


def _image() -> Image.Image:
    return Image.new("RGB", (32, 32), (200, 0, 0))


def test_training_eval_and_generation_prompts_start_identically(case) -> None:
    model, tokenizer = case.model, case.tokenizer
    bos = [tokenizer.bos_token_id] if case.adds_bos else []
    text = f"{IMAGE_TOKEN}{CAPTION}{EOC_TOKEN}"
    body = list(tokenizer(text, add_special_tokens=False)["input_ids"])

    collator = ImageTextCollator(tokenizer=tokenizer, image_transform=model.image_transform, max_tokens=32)
    sample = collator(SimpleNamespace(key="k", image=_image(), caption=CAPTION), random.Random(0))
    assert sample.input_ids.tolist() == bos + body
    # BOS is never a target; the text after it (including <EOC>) is
    assert sample.labels[: len(bos) + 1].tolist() == [IGNORE_INDEX] * (len(bos) + 1)
    assert sample.labels[len(bos) + 1 :].tolist() == body[1:]

    runner = _Runner(model, batch_size=1, cache_images=1)
    assert runner.encode_prompt(text) == bos + body
    assert runner.encode_continuation(CAPTION) == list(tokenizer(CAPTION, add_special_tokens=False)["input_ids"])

    ids, mask = encode_prompts(model, [text, f"{IMAGE_TOKEN}a"])
    assert ids[0].tolist() == bos + body
    short = bos + list(tokenizer(f"{IMAGE_TOKEN}a", add_special_tokens=False)["input_ids"])
    assert ids[1, -len(short) :].tolist() == short and int(mask[1].sum()) == len(short)


def test_packed_pairs_have_one_bos_and_m3w_windows_start_with_it(case) -> None:
    tokenizer = case.tokenizer
    bos = [tokenizer.bos_token_id] if case.adds_bos else []
    single = ImageTextCollator(tokenizer=tokenizer, image_transform=case.model.image_transform, max_tokens=32)
    packed = PackedPairs(single, pairs=2)
    record = SimpleNamespace(key="k", image=_image(), caption=CAPTION)
    assert packed(record, random.Random(0)) is None
    pack = packed(record, random.Random(0))
    body = list(tokenizer(f"{IMAGE_TOKEN}{CAPTION}{EOC_TOKEN}", add_special_tokens=False)["input_ids"])
    assert pack.input_ids.tolist() == bos + body + body
    assert pack.labels.tolist().count(IGNORE_INDEX) == len(bos) + 2  # BOS and the two <image>

    m3w = M3WCollator(tokenizer=tokenizer, image_transform=case.model.image_transform, max_tokens=12)
    text = " ".join(["words before the picture"] * 4) + f"{IMAGE_TOKEN}a red circle on a white background{EOC_TOKEN}"
    record = SimpleNamespace(key="doc", document={"text": text}, images=[_image()])
    windows = 0
    for seed in range(10):
        try:
            sample = m3w(record, random.Random(seed))
        except Rejected as rejected:  # a window ending at the image has no target
            assert rejected.reason == "no_labels"
            continue
        windows += 1
        assert len(sample.input_ids) <= 12
        assert sample.input_ids[: len(bos)].tolist() == bos
        assert int((sample.input_ids == tokenizer.bos_token_id).sum()) >= len(bos)
        assert sample.labels[0] == IGNORE_INDEX
    assert windows > 0


def test_generation_refuses_prompts_without_the_bos(case) -> None:
    model = case.model
    ids, mask = encode_prompts(model, [f"{IMAGE_TOKEN}a"])
    media = torch.zeros(1, 1, 1, 3, 32, 32)
    out = model.generate(ids, mask, media, max_new_tokens=2, num_beams=1)
    assert out.shape[0] == 1
    bare = torch.tensor([list(case.tokenizer(f"{IMAGE_TOKEN}a", add_special_tokens=False)["input_ids"])])
    if case.adds_bos:
        with pytest.raises(ValueError, match="BOS"):
            model.generate(bare, torch.ones_like(bare), media, max_new_tokens=2, num_beams=1)
    else:
        assert torch.equal(model.generate(bare, torch.ones_like(bare), media, max_new_tokens=2, num_beams=1), out)
