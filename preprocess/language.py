"""Language identification with `langid` (its model ships inside the PyPI package).

Scores are normalised probabilities (`norm_probs=True`), so the OBELICS cut-off "language score
>= 0.8" means what it says. The identifier is built once per process (about 1 s) and cached.

`detect_language` gives langid's answer (same language, same probability) at a fraction of the
cost of `LanguageIdentifier.classify`: the byte automaton is walked once per distinct (state,
word) and the walk cached, only the features the text actually has enter the naive Bayes product
(langid multiplies a dense count vector into its 7480 x 97 float32 table, which numpy first
converts whole to float64), and only the leading languages' probabilities are normalised.
"""

from __future__ import annotations

import functools

import numpy as np

UNKNOWN_LANGUAGE = "und"
"""ISO 639 code for 'undetermined': returned for text without any letters."""


@functools.cache
def _identifier():
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


_WALKS: dict[tuple[int, bytes], tuple[int, tuple[int, ...]]] = {}
_WALKS_SIZE = 1 << 16
"""(automaton state, space-terminated word) -> (state after it, feature indices it emits), for
the words seen so far in this process (cleared at this many entries, so memory stays bounded).
Words recur (Zipf), and the state a word starts in is set by the few bytes before it, so most
words of a document are a lookup instead of a byte-by-byte walk."""
_WALK_MAX_BYTES = 64
"""Longer pieces (text without spaces: Chinese, Japanese, URLs) are walked, not cached: they
rarely recur, and the entries would be as large as the text."""


def _feature_counts(identifier, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """langid's feature vector of `data` in sparse form: sorted feature indices and their counts."""
    nextmove = identifier.tk_nextmove
    output = identifier.tk_output
    walks = _WALKS
    if len(walks) > _WALKS_SIZE:
        walks.clear()
    found: list[int] = []
    extend = found.extend
    state = 0
    pieces = data.split(b" ")
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        if i < last:
            piece += b" "
        walk = walks.get((state, piece))
        if walk is None:
            emitted: list[int] = []
            end = state
            for byte in piece:
                end = nextmove[(end << 8) + byte]
                emitted.extend(output.get(end, ()))
            walk = (end, tuple(emitted))
            if len(piece) <= _WALK_MAX_BYTES:
                walks[(state, piece)] = walk
        state = walk[0]
        extend(walk[1])
    dense = np.bincount(np.array(found, dtype=np.intp))
    indices = np.flatnonzero(dense)
    return indices, dense[indices].astype(np.uint32)


def detect_language(text: str) -> tuple[str, float]:
    """Return `(iso_639_1_code, probability)` of the most likely language of `text`.

    Newlines are folded to spaces first. Text without a single letter gives `("und", 0.0)`.
    """
    if not any(ch.isalpha() for ch in text):
        return UNKNOWN_LANGUAGE, 0.0
    identifier = _identifier()
    indices, counts = _feature_counts(identifier, " ".join(text.split()).encode("utf-8"))
    log_probs = np.dot(counts, identifier.nb_ptc[indices]) + identifier.nb_pc  # (languages,)
    # langid normalises every row of exp(log_probs[None, :] - log_probs[:, None]) and takes the
    # argmax; only rows within reach of the maximum can win, so only those are computed (same
    # formula, same summation order: the same floats).
    candidates = np.flatnonzero(log_probs >= log_probs.max() - 64.0)
    probs = [1 / np.exp(log_probs - log_probs[i]).sum() for i in candidates]
    best = int(np.argmax(probs))
    return str(identifier.nb_classes[candidates[best]]), float(probs[best])
