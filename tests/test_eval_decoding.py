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
    model = Flamingo.from_config(tiny_config(family="gpt2", tokenizer=_word_tokenizer(), init_seed=2))
    assert len(model.tokenizer) == 11
    with torch.no_grad():
        # Sharpen the random LM and make <EOC> a bit likelier, so that the best hypotheses differ
        # in length (not all "<EOC>" right away), and open the tanh gates so the image matters.
        model.lm.transformer.ln_f.weight.mul_(5.0)
        eoc_row = model.new_token_ids.tolist().index(model.eoc_token_id)
        model.new_token_embeddings[eoc_row].mul_(1.2)
        for block in model.xattn.values():
            for p in block.parameters():
                if p.numel() == 1:
                    p.fill_(0.1)
    return model.eval()


def _pixels(model, colour):
    return model.image_transform(Image.new("RGB", (32, 32), COLOURS[colour]))


def _next_logprobs(model, prompt_ids, media, prefixes):
    """log p(next | prompt + prefix) for each prefix, without padding or cache (prefixes of one
    length form one batch), over the tokens generation may produce (<image> and pad excluded, as
    the model documents)."""
    out = {}
    for length in sorted({len(p) for p in prefixes}):
        group = [p for p in prefixes if len(p) == length]
        ids = torch.tensor([prompt_ids + list(p) for p in group])
        logits = model(ids, torch.ones_like(ids), media[None].expand(len(group), *media.shape)).logits[:, -1].float()
        logits[:, [model.image_token_id, model.pad_token_id]] = float("-inf")
        out.update(zip(group, torch.log_softmax(logits, dim=-1)))
    return [out[p] for p in prefixes]


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
    one_shot = f"{IMAGE_TOKEN}Output: a red circle{EOC_TOKEN}{IMAGE_TOKEN}Output:"
    text_shot = f"Output: blue square{EOC_TOKEN}{IMAGE_TOKEN}Output: a"
    prompts = [one_shot, one_shot, f"{IMAGE_TOKEN}Output:", f"{IMAGE_TOKEN}Output:", text_shot, text_shot]
    colours = [("red", "blue"), ("blue", "red"), ("red",), ("blue",), ("blue",), ("red",)]
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    media_rows = [[_pixels(model, c) for c in cs] for cs in colours]
    ids, mask = _left_pad(prompt_ids, model.pad_token_id)  # the evaluation's batching, left padded
    media = _stack_media(media_rows)
    # 128 beams keep every live prefix (8 ** 2) and every <EOC> candidate: beam search is exact here
    wide = model.generate(ids, mask, media, max_new_tokens=MAX_NEW, num_beams=128, length_penalty=0.0)
    narrow = model.generate(ids, mask, media, max_new_tokens=MAX_NEW, num_beams=3, length_penalty=0.0)
    bests = []
    for b in range(len(prompts)):
        best, hypotheses = _exhaustive_best(model, prompt_ids[b], _stack_media([media_rows[b]])[0])
        assert _strip(wide[b], model) == best
        bests.append(best)
        got = _strip(narrow[b], model)  # width 3 may miss the best, never beat it
        assert got in hypotheses and hypotheses[got] <= hypotheses[best] + 1e-5
    # the cases are not trivial: some best hypotheses finish with <EOC> after a word, some run to
    # the token limit, and the image changes the answer
    assert any(len(b) in (2, 3) and b[-1] == model.eoc_token_id for b in bests)
    assert any(len(b) == MAX_NEW and b[-1] != model.eoc_token_id for b in bests)
    assert bests[4] != bests[5]
