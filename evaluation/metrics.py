"""Scores for the evaluation tasks: CIDEr-D (captioning), the official VQA accuracy (VQA) and
top-1 accuracy (classification).

CIDEr follows pycocoevalcap's `Cider` scorer operation for operation (so the numbers agree
exactly on the same tokenized input), including its quirks: the Gaussian length penalty
compares *bigram* counts, and the idf uses log(#images in the corpus). Raw captions are first
put through `ptb_tokenize`, a small pure-Python stand-in for the Stanford PTBTokenizer that
pycocoevalcap runs through Java.

VQA accuracy follows the official VQA evaluation script (GT-Vision-Lab/VQA, `vqaEval.py`):
the prediction is normalised (punctuation, number words, articles, contractions); the human
answers get only the punctuation step, and only when they disagree; the accuracy of one
question is min(#matching humans / 3, 1) averaged over the 10 leave-one-out subsets of 9.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "cider",
    "cider_scores",
    "normalize_vqa_answer",
    "ptb_tokenize",
    "vqa_accuracy",
    "vqa_question_accuracy",
]

# ---------------------------------------------------------------------------------------------
# PTB-like tokenization (what pycocoevalcap's PTBTokenizer does before CIDEr)
# ---------------------------------------------------------------------------------------------

# Tokens pycocoevalcap drops after Stanford tokenization (its PUNCTUATIONS list).
_PTB_DROPPED = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
# Brackets and quotes become the escaped/directional PTB tokens that the list above drops.
_PTB_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-", '"': "''"}
_PTB_TOKEN = re.compile(
    r"\d+(?:[.,:/]\d+)+"  # numbers and times: 3.5 1,000 10:30 1/2
    r"|(?:[a-z]\.){2,}"  # abbreviations: u.s. e.g.
    r"|[^\W_]+(?:[-'&][^\W_]+)*"  # words, hyphenated words, words with inner apostrophes
    r"|\.\.\.|--|``|''"
    r"|\S",
)
_PTB_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def ptb_tokenize(text: str) -> str:
    """Lower-case, PTB-style tokenize and drop punctuation tokens, like pycocoevalcap's
    `PTBTokenizer` (Stanford `-lowerCase -preserveLines` then its punctuation filter).

    Clitics are split as PTB does ("don't" -> "do n't", "dog's" -> "dog 's"); hyphenated words,
    numbers such as "3.5" and abbreviations such as "u.s." stay whole. Returns the tokens
    joined by single spaces (the form CIDEr consumes)."""
    tokens: list[str] = []
    for token in _PTB_TOKEN.findall(text.replace("\n", " ").lower()):
        token = _PTB_BRACKETS.get(token, token)
        match = _PTB_CLITIC.match(token)
        parts = [match.group(1), match.group(2)] if match else [token]
        tokens.extend(p for p in parts if p not in _PTB_DROPPED)
    return " ".join(tokens)


# ---------------------------------------------------------------------------------------------
# CIDEr-D (pycocoevalcap.cider.cider_scorer, same arithmetic)
# ---------------------------------------------------------------------------------------------

_CIDER_N = 4
_CIDER_SIGMA = 6.0


def _ngram_counts(sentence: str, n: int = _CIDER_N) -> dict[tuple[str, ...], int]:
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _tfidf(counts, document_frequency, log_num_images):
    """n-gram counts -> per-order tf-idf vectors, their norms, and the 'length' (bigram count,
    as pycocoevalcap has it)."""
    vec = [defaultdict(float) for _ in range(_CIDER_N)]
    norm = [0.0 for _ in range(_CIDER_N)]
    length = 0
    for ngram, term_freq in counts.items():
        df = np.log(max(1.0, document_frequency[ngram]))
        order = len(ngram) - 1
        vec[order][ngram] = float(term_freq) * (log_num_images - df)
        norm[order] += pow(vec[order][ngram], 2)
        if order == 1:
            length += term_freq
    return vec, [np.sqrt(v) for v in norm], length


def _similarity(vec_hyp, vec_ref, norm_hyp, norm_ref, length_hyp, length_ref):
    delta = float(length_hyp - length_ref)
    val = np.array([0.0 for _ in range(_CIDER_N)])
    for order in range(_CIDER_N):
        for ngram in vec_hyp[order]:
            # CIDEr-D clipping: min(hyp, ref) * ref
            val[order] += min(vec_hyp[order][ngram], vec_ref[order][ngram]) * vec_ref[order][ngram]
        if norm_hyp[order] != 0 and norm_ref[order] != 0:
            val[order] /= norm_hyp[order] * norm_ref[order]
        val[order] *= np.e ** (-(delta**2) / (2 * _CIDER_SIGMA**2))
    return val


def cider_scores(
    references: Mapping[object, Sequence[str]],
    predictions: Mapping[object, str],
    *,
    tokenize: bool = True,
) -> dict[object, float]:
    """Per-image CIDEr-D (pycocoevalcap scale, ~0..10) over the corpus given.

    The idf statistics come from the references of all images in `references`, so a score
    depends on the whole corpus. With `tokenize=False` the strings must already be
    tokenized, lower-cased and space-separated (as pycocoevalcap's Cider expects)."""
    if set(references) != set(predictions):
        missing = set(references) ^ set(predictions)
        raise ValueError(f"cider: references and predictions must have the same ids; differing ids: "
                         f"{sorted(map(str, missing))[:5]}")
    if not references:
        raise ValueError("cider: no images to score (empty references)")
    ids = list(references)
    prep = ptb_tokenize if tokenize else (lambda s: s)
    refs_counts = []
    for image_id in ids:
        refs = references[image_id]
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"cider: references[{image_id!r}] must be a non-empty list of strings")
        refs_counts.append([_ngram_counts(prep(r)) for r in refs])
    hyp_counts = [_ngram_counts(prep(predictions[image_id])) for image_id in ids]

    document_frequency: dict[tuple[str, ...], float] = defaultdict(float)
    for refs in refs_counts:
        for ngram in {ngram for ref in refs for ngram in ref}:
            document_frequency[ngram] += 1
    log_num_images = np.log(float(len(ids)))

    scores: dict[object, float] = {}
    for image_id, hyp, refs in zip(ids, hyp_counts, refs_counts):
        vec, norm, length = _tfidf(hyp, document_frequency, log_num_images)
        total = np.array([0.0 for _ in range(_CIDER_N)])
        for ref in refs:
            vec_ref, norm_ref, length_ref = _tfidf(ref, document_frequency, log_num_images)
            total += _similarity(vec, vec_ref, norm, norm_ref, length, length_ref)
        score = np.mean(total)
        score /= len(refs)
        score *= 10.0
        scores[image_id] = score
    return scores


def cider(
    references: Mapping[object, Sequence[str]],
    predictions: Mapping[object, str],
    *,
    tokenize: bool = True,
) -> float:
    """Corpus CIDEr-D: the mean of `cider_scores` (pycocoevalcap's `Cider().compute_score`
    first return value; multiply by 100 for the numbers papers print)."""
    per_image = cider_scores(references, predictions, tokenize=tokenize)
    return float(np.mean(np.array(list(per_image.values()))))


# ---------------------------------------------------------------------------------------------
# VQA accuracy (official vqaEval.py)
# ---------------------------------------------------------------------------------------------

_VQA_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_VQA_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_VQA_ARTICLES = ("a", "an", "the")
# The official pattern, typo included: "(?!<=\d)" is a lookahead that (almost) always holds,
# so every period not followed by a digit is removed.
_VQA_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_VQA_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_VQA_PUNCT = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")


def _vqa_process_punctuation(text: str) -> str:
    out = text
    for p in _VQA_PUNCT:
        if (p + " " in text or " " + p in text) or _VQA_COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official script passes re.UNICODE (== 32) as the positional `count`: at most 32 periods go.
    return _VQA_PERIOD_STRIP.sub("", out, count=re.UNICODE)


def _vqa_process_digit_article(text: str) -> str:
    words = [_VQA_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _VQA_ARTICLES]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """The official normalisation of a *predicted* answer: whitespace, punctuation, then
    lower-case, number words -> digits, articles dropped, contractions restored."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _vqa_process_digit_article(_vqa_process_punctuation(answer))


def vqa_question_accuracy(human_answers: Sequence[str], prediction: str) -> float:
    """Accuracy (0..1) of one prediction against the human answers of one question: the mean
    over the leave-one-out subsets of min(#matching answers in the subset / 3, 1)."""
    if isinstance(human_answers, str) or len(human_answers) == 0:
        raise ValueError("vqa accuracy: each question needs a non-empty list of human answers")
    predicted = normalize_vqa_answer(prediction)
    humans = list(human_answers)
    if len(set(humans)) > 1:  # official quirk: humans are only punctuation-normalised, and only here
        humans = [_vqa_process_punctuation(h) for h in humans]
    per_subset = []
    for left_out in range(len(humans)):
        matches = sum(1 for i, h in enumerate(humans) if i != left_out and h == predicted)
        per_subset.append(min(1, float(matches) / 3))
    return float(sum(per_subset)) / len(per_subset)


def vqa_accuracy(answers: Mapping[object, Sequence[str]], predictions: Mapping[object, str]) -> float:
    """Official VQA accuracy in percent (0..100), averaged over the questions in `answers`
    (each with its list of human answers, usually 10). Not rounded (the official script rounds
    the reported number to 2 decimals)."""
    if not answers:
        raise ValueError("vqa_accuracy: no questions to score (empty answers)")
    missing = [q for q in answers if q not in predictions]
    if missing:
        raise ValueError(f"vqa_accuracy: no prediction for question ids {missing[:5]}")
    per_question = [vqa_question_accuracy(answers[q], predictions[q]) for q in answers]
    return 100 * float(sum(per_question)) / len(per_question)


def accuracy(labels: Mapping[object, str], predictions: Mapping[object, str]) -> float:
    """Top-1 accuracy in percent (0..100): exact match of the predicted and the true class name."""
    if not labels:
        raise ValueError("accuracy: no examples to score (empty labels)")
    missing = [k for k in labels if k not in predictions]
    if missing:
        raise ValueError(f"accuracy: no prediction for ids {missing[:5]}")
    return 100.0 * sum(predictions[k] == labels[k] for k in labels) / len(labels)
