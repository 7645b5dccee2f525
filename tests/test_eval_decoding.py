"""Beam search and log-likelihood ranking on a tiny Flamingo with a 11-token vocabulary, checked
against exhaustive enumeration and independent unbatched scoring."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from flamboyance.evaluation.datasets import EvalDataset, EvalExample
from flamboyance.evaluation.evaluate import _left_pad, _Query, _Runner, _stack_media, evaluate
from flamboyance.evaluation.prompts import build_prompt, continuation_text
from flamboyance.model import Flamingo
from flamboyance.model.tiny import EOS_TOKEN, tiny_config
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN, PAD_FALLBACK_TOKEN

WORDS = ["Output:", "a", "red", "blue", "circle", "square"]
MAX_NEW = 3
COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}


def _word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate([EOS_TOKEN, PAD_FALLBACK_TOKEN, IMAGE_TOKEN, EOC_TOKEN, "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=PAD_FALLBACK_TOKEN, unk_token="<unk>",
                                   additional_special_tokens=[IMAGE_TOKEN, EOC_TOKEN])


@pytest.fixture(scope="module")
def model() -> Flamingo:
    model = Flamingo.from_config(tiny_config(family="gpt2", tokenizer=_word_tokenizer(), init_seed=3))
    assert len(model.tokenizer) == 11
    with torch.no_grad():
        # sharpen the random LM so the best hypothesis is not simply "<EOC>" right away
        model.lm.transformer.ln_f.weight.mul_(12.0)
        for block in model.xattn.values():  # open the gates so the image matters
            for p in block.parameters():
                if p.ndim == 0 or p.numel() == 1:
                    p.fill_(1.0)
    return model.eval()


def _pixels(model, colour):
    return model.image_transform(Image.new("RGB", (32, 32), COLOURS[colour]))


def _next_logprobs(model, prompt_ids, media, prefixes):
    """log p(next | prompt + prefix) for each prefix, each run alone (no padding, no cache), over
    the tokens generation may produce (<image> and pad excluded, as the model documents)."""
    rows = [prompt_ids + list(p) for p in prefixes]
    out = []
    for row in rows:
        ids = torch.tensor([row])
        logits = model(ids, torch.ones_like(ids), media[None]).logits[0, -1].float()
        logits[[model.image_token_id, model.pad_token_id]] = float("-inf")
        out.append(torch.log_softmax(logits, dim=-1))
    return out


def _exhaustive_best(model, prompt_ids, media):
    """The best of ALL hypotheses of length <= MAX_NEW: ending at the first <EOC>, or MAX_NEW
    tokens without one; score = total log-prob (length penalty 0)."""
    allowed = [t for t in range(len(model.tokenizer)) if t not in (model.image_token_id, model.pad_token_id)]
    live = [t for t in allowed if t != model.eoc_token_id]
    prefixes = [()] + [p for n in range(1, MAX_NEW) for p in itertools.product(live, repeat=n)]
    table = dict(zip(prefixes, _next_logprobs(model, prompt_ids, media, prefixes)))
    hypotheses = {}
    for prefix in prefixes:
        total = sum(float(table[prefix[:i]][t]) for i, t in enumerate(prefix))
        hypotheses[(*prefix, model.eoc_token_id)] = total + float(table[prefix][model.eoc_token_id])
        if len(prefix) == MAX_NEW - 1:
            for t in live:
                hypotheses[(*prefix, t)] = total + float(table[prefix][t])
    best = max(hypotheses, key=hypotheses.get)
    return best, hypotheses


def _strip(row, model):
    tokens = row.tolist()
    return tuple(tokens[: tokens.index(model.eoc_token_id) + 1] if model.eoc_token_id in tokens
                 else [t for t in tokens if t != model.pad_token_id])


@torch.no_grad()
def test_beam_search_equals_exhaustive_search(model):
    tok = model.tokenizer
    prompts = [f"{IMAGE_TOKEN}Output: a red circle{EOC_TOKEN}{IMAGE_TOKEN}Output:", f"{IMAGE_TOKEN}Output:"]
    colours = [("red", "blue"), ("red",)]
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    media_rows = [[_pixels(model, c) for c in cs] for cs in colours]
    ids, mask = _left_pad(prompt_ids, model.pad_token_id)  # the evaluation's batching, left padded
    media = _stack_media(media_rows)
    # 128 beams keep every live prefix (8 ** 2) and every <EOC> candidate: beam search is exact here
    wide = model.generate(ids, mask, media, max_new_tokens=MAX_NEW, num_beams=128, length_penalty=0.0)
    narrow = model.generate(ids, mask, media, max_new_tokens=MAX_NEW, num_beams=3, length_penalty=0.0)
    lengths = []
    for b in range(2):
        best, hypotheses = _exhaustive_best(model, prompt_ids[b], _stack_media([media_rows[b]])[0])
        assert _strip(wide[b], model) == best
        lengths.append(len(best))
        got = _strip(narrow[b], model)
        assert got in hypotheses and hypotheses[got] <= hypotheses[best] + 1e-5
    assert max(lengths) > 1  # the test is not won by stopping at once
