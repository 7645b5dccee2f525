"""Language identification with `langid` (its model ships inside the PyPI package).

Scores are normalised probabilities (`norm_probs=True`), so the OBELICS cut-off "language score
>= 0.8" means what it says. The identifier is built once per process (about 1 s) and cached.

`detect_language` gives langid's answer (same language, same probability) at a fraction of the
cost of `LanguageIdentifier.classify`: the byte automaton runs in a tight loop, only the
features the text actually has enter the naive Bayes product (langid multiplies a dense count
vector into its 7480 x 97 float32 table, which numpy first converts whole to float64), and only
the leading languages' probabilities are normalised.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np

UNKNOWN_LANGUAGE = "und"
"""ISO 639 code for 'undetermined': returned for text without any letters."""


@functools.cache
def _identifier():
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def _feature_counts(identifier, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """langid's feature vector of `data` in sparse form: sorted feature indices and their counts."""
    nextmove = identifier.tk_nextmove
    states = []
    append = states.append
    state = 0
    for byte in data:
        state = nextmove[(state << 8) + byte]
        append(state)
    features: dict[int, int] = {}
    output = identifier.tk_output
    for state, n in Counter(states).items():
        for index in output.get(state, ()):
            features[index] = features.get(index, 0) + n
    indices = np.fromiter(sorted(features), dtype=np.intp, count=len(features))
    counts = np.fromiter((features[i] for i in indices.tolist()), dtype=np.uint32, count=len(features))
    return indices, counts


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
