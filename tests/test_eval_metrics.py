"""CIDEr-D against pycocoevalcap's Cider scorer, VQA accuracy against the official algorithm on
cases worked out by hand, and the PTB-like tokenizer."""

from __future__ import annotations

import random

import pytest
from flamboyance.evaluation.metrics import (
    accuracy,
    cider,
    cider_scores,
    normalize_vqa_answer,
    ptb_tokenize,
    vqa_accuracy,
    vqa_question_accuracy,
)
from pycocoevalcap.cider.cider import Cider

WORDS = "a the red blue green circle square triangle on of with big small near two dogs man riding".split()


def _corpus(seed: int, num_images: int) -> tuple[dict[int, list[str]], dict[int, str]]:
    rng = random.Random(seed)
    refs = {i: [" ".join(rng.choices(WORDS, k=rng.randint(2, 10))) for _ in range(rng.randint(1, 5))]
            for i in range(num_images)}
    preds = {i: " ".join(rng.choices(WORDS, k=rng.randint(1, 10))) for i in range(num_images)}
    return refs, preds


@pytest.mark.parametrize(("seed", "num_images"), [(0, 1), (1, 2), (2, 7), (3, 40)])
def test_cider_equals_pycocoevalcap_on_tokenized_text(seed, num_images):
    refs, preds = _corpus(seed, num_images)
    expected, expected_per_image = Cider().compute_score(refs, {k: [v] for k, v in preds.items()})
    assert cider(refs, preds, tokenize=False) == expected
    per_image = cider_scores(refs, preds, tokenize=False)
    assert [per_image[k] for k in refs] == list(expected_per_image)
    # our tokenizer leaves already tokenized lower-case text as it is
    assert cider(refs, preds) == expected


def test_cider_handwritten_corpus_matches_pycocoevalcap():
    refs = {
        "img1": ["a man riding a horse on a beach", "a person rides a brown horse", "man on horse by the sea"],
        "img2": ["two dogs playing in the snow", "a pair of dogs run through snow"],
        "img3": ["a red circle", "a red circle on white"],
    }
    preds = {"img1": "a man riding a horse", "img2": "dogs in snow", "img3": "a blue square"}
    expected, _ = Cider().compute_score(refs, {k: [v] for k, v in preds.items()})
    assert cider(refs, preds) == expected
    assert expected > 0
    # a perfect prediction beats an empty one
    assert cider_scores(refs, {**preds, "img3": "a red circle"})["img3"] > cider_scores(refs, preds)["img3"]


def test_cider_tokenizes_raw_captions_like_ptb():
    refs = {1: ["A Man, riding a horse."], 2: ["Two dogs (brown) play!"]}
    preds = {1: "a man riding a horse", 2: "TWO DOGS PLAY."}
    tokenized_refs = {1: ["a man riding a horse"], 2: ["two dogs brown play"]}
    tokenized_preds = {1: "a man riding a horse", 2: "two dogs play"}
    assert cider(refs, preds) == cider(tokenized_refs, tokenized_preds, tokenize=False)


def test_cider_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="same ids"):
        cider({1: ["a"]}, {2: "a"})
    with pytest.raises(ValueError, match="non-empty list"):
        cider({1: []}, {1: "a"})


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("A man riding a horse.", "a man riding a horse"),
        ("The dog's ball, isn't it?", "the dog 's ball is n't it"),
        ('He said "hello" (twice) -- then left...', "he said hello twice then left"),
        ("A well-known 3.5 m boat; 1,000 people in the U.S.", "a well-known 3.5 m boat 1,000 people in the u.s."),
        ("  multiple\nlines\tand   spaces ", "multiple lines and spaces"),
        ("They're at 10:30 o'clock!", "they 're at 10:30 o'clock"),
    ],
)
def test_ptb_tokenize(text, tokens):
    assert ptb_tokenize(text) == tokens


# Official VQA accuracy of one question = mean over the 10 leave-one-out subsets of
# min(#matches in the 9 others / 3, 1). Worked out by hand:
#   3 of 10 humans agree with the prediction: leaving out one of them leaves 2 -> 2/3 (3 times),
#   leaving out another leaves 3 -> 1 (7 times): (3*2/3 + 7) / 10 = 0.9.
#   2 of 10: 1/3 (2 times), 2/3 (8 times) -> (2/3 + 16/3) / 10 = 0.6.
#   1 of 10: 0 (once), 1/3 (9 times) -> 0.3.
VQA_CASES = [
    # (human answers, prediction, accuracy)
    (["2"] * 10, "two", 1.0),  # number words -> digits
    (["yes"] * 3 + ["no"] * 7, "yes", 0.9),
    (["yes"] * 2 + ["no"] * 8, "Yes.", 0.6),  # case and trailing period
    (["yes"] * 1 + ["no"] * 9, "yes", 0.3),
    (["no"] * 4 + ["yes"] * 6, "no", 1.0),
    (["dog"] * 10, "A dog", 1.0),  # articles dropped from the prediction
    (["don't know"] * 10, "dont know", 1.0),  # contractions restored
    (["1000"] * 5 + ["many"] * 5, "1,000", 1.0),  # a digit,digit comma: punctuation removed, not spaced
    (["red white"] * 5 + ["red"] * 5, "red/white", 1.0),  # punctuation -> space
    # official quirk: human answers are only punctuation-normalised when they disagree
    (["red-white"] * 10, "red-white", 0.0),
    (["red-white"] * 5 + ["pink"] * 5, "red-white", 1.0),
    (["cat"] * 10, "dog", 0.0),
]


@pytest.mark.parametrize(("answers", "prediction", "expected"), VQA_CASES)
def test_vqa_question_accuracy_official_cases(answers, prediction, expected):
    assert vqa_question_accuracy(answers, prediction) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_is_percent_mean_over_questions():
    answers = {i: case[0] for i, case in enumerate(VQA_CASES)}
    predictions = {i: case[1] for i, case in enumerate(VQA_CASES)}
    expected = 100 * sum(case[2] for case in VQA_CASES) / len(VQA_CASES)
    assert vqa_accuracy(answers, predictions) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="no prediction"):
        vqa_accuracy(answers, {0: "2"})


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two", "2"),
        ("the cat.", "cat"),
        ("  It's  a\tdog\n", "it's dog"),
        ("youre right!", "you're right"),
        ("3.5", "3.5"),
        ("none", "0"),
        ("a/b", "b"),  # "a" becomes a separate word, an article
        ("x/y", "x y"),
        ("yes, sir", "yes sir"),
    ],
)
def test_normalize_vqa_answer(raw, normalized):
    assert normalize_vqa_answer(raw) == normalized


def test_accuracy():
    assert accuracy({1: "cat", 2: "dog", 3: "cow", 4: "cat"}, {1: "cat", 2: "cat", 3: "cow", 4: "dog"}) == 50.0
