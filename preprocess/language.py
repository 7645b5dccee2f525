"""Language identification with `langid` (its model ships inside the PyPI package).

Scores are normalised probabilities (`norm_probs=True`), so the OBELICS cut-off "language score
>= 0.8" means what it says. The identifier is built once per process (about 1 s) and cached.
"""

from __future__ import annotations

import functools

UNKNOWN_LANGUAGE = "und"
"""ISO 639 code for 'undetermined': returned for text without any letters."""


@functools.cache
def _identifier():
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """Return `(iso_639_1_code, probability)` of the most likely language of `text`.

    Newlines are folded to spaces first. Text without a single letter gives `("und", 0.0)`.
    """
    if not any(ch.isalpha() for ch in text):
        return UNKNOWN_LANGUAGE, 0.0
    identifier = _identifier()
    lang, prob = identifier.classify(" ".join(text.split()))
    return str(lang), float(prob)
