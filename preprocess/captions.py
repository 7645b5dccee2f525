"""Caption filters for image-text and video-text pairs, as `flamboyance.preprocess.steps.Filter`s.

Drop reasons (in the order `caption_filters` runs them):

====================== ==============================================================
reason                 drops when
====================== ==============================================================
caption_boilerplate    the caption is a file name ("IMG_1234.jpg"), a URL, a camera default
                       name ("DSC_0042") or a placeholder word ("photo", "untitled", ...)
caption_too_few_words  fewer than `min_words` whitespace words (default 2)
caption_too_many_words more than `max_words` whitespace words (default 64)
caption_language       the caption is, on evidence, in a language outside `languages` (default
                       en; `short_text_language_ok`: langid sure of another language, and another
                       script or that language's function words). None keeps every language.
====================== ==============================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .language import short_text_language_ok
from .steps import Filter

_FILENAME_RE = re.compile(r"^\S+\.(jpe?g|png|gif|webp|bmp|tiff?|mp4|webm|mov)$", re.I)
_URL_RE = re.compile(r"^(https?://|www\.)\S+$", re.I)
_CAMERA_RE = re.compile(r"^(img|dsc|dscn|pxl|photo|image|screenshot|video|vid)[_\- ]?\d+$", re.I)
PLACEHOLDER_CAPTIONS = frozenset({"image", "photo", "picture", "img", "untitled", "thumbnail", "placeholder",
                                  "logo", "video", "banner", "icon", "null", "none", "alt", "graphic"})
"""Captions (lower-cased, trailing dots stripped) that say nothing about the medium."""


class CaptionWordCountFilter(Filter):
    """Keeps captions with `min_words`..`max_words` whitespace words."""

    name = "caption_word_count"

    def __init__(self, *, min_words: int = 2, max_words: int = 64) -> None:
        if min_words < 0 or max_words < min_words:
            raise ValueError(f"CaptionWordCountFilter: need 0 <= min_words <= max_words, got {min_words}..{max_words}")
        self.min_words, self.max_words = min_words, max_words

    def filter(self, caption: str) -> bool | tuple[bool, str]:
        words = len(caption.split())
        if words < self.min_words:
            return False, "caption_too_few_words"
        if words > self.max_words:
            return False, "caption_too_many_words"
        return True


class CaptionBoilerplateFilter(Filter):
    """Drops captions that are a file name, a URL, a camera default name or a placeholder word."""

    name = "caption_boilerplate"

    def filter(self, caption: str) -> bool:
        text = caption.strip()
        if _FILENAME_RE.match(text) or _URL_RE.match(text) or _CAMERA_RE.match(text):
            return False
        return text.lower().strip(" .") not in PLACEHOLDER_CAPTIONS


class CaptionLanguageFilter(Filter):
    """Drops captions that are, on evidence, in a language outside `languages` (see
    `flamboyance.preprocess.language.short_text_language_ok`; short captions of names pass)."""

    name = "caption_language"

    def __init__(self, *, languages: Sequence[str] = ("en",), min_score: float = 0.9) -> None:
        if not languages:
            raise ValueError("CaptionLanguageFilter: languages must name at least one language")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"CaptionLanguageFilter: min_score must be in [0, 1], got {min_score}")
        self.languages, self.min_score = frozenset(languages), min_score

    def filter(self, caption: str) -> bool:
        return short_text_language_ok(caption, self.languages, min_score=self.min_score)


def caption_filters(*, min_words: int = 2, max_words: int = 64,
                    languages: Sequence[str] | None = ("en",)) -> list[Filter]:
    """The caption filters in order (boilerplate first, so "IMG_1234.jpg" is not counted as too short;
    language last, the costliest). `languages`: kept caption languages (the document filters'
    default, English); None keeps every language."""
    steps: list[Filter] = [CaptionBoilerplateFilter(), CaptionWordCountFilter(min_words=min_words, max_words=max_words)]
    if languages is not None:
        steps.append(CaptionLanguageFilter(languages=languages))
    return steps
