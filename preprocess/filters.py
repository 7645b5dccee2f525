"""Image, paragraph and document filters (OBELICS + Gopher rules) as datatrove-style steps.

Every filter is a `flamboyance.preprocess.steps.Filter`: `filter(item) -> True | (False, reason)`,
`.name`, and `run_filters` counts drops by reason. `apply_filters` runs them all on one document:
node filters drop nodes, document filters drop the document. Thresholds live in `FilterConfig`
(defaults from REFERENCE.md: OBELICS, Gopher/datatrove, Flamingo).

Drop reasons, in the order the filters run (stable names; counted into the Counter given to
`apply_filters`):

======================== ============== ==========================================================
reason                   applies to     drops when (defaults)
======================== ============== ==========================================================
image_tracking_pixel     ImageNode      declared width or height <= 1, or URL on a tracker host/path
image_bad_format         ImageNode      URL extension / data: type is a known non-kept image format
                                        (kept: jpg jpeg png webp; no or unknown extension passes)
image_boilerplate_url    ImageNode      a URL path token is logo/button/icon/plugin/widget (or +s)
image_too_small          ImageNode      a declared side < 150 px (unknown sizes pass)
image_too_large          ImageNode      a declared side > 20000 px
image_aspect_ratio       ImageNode      declared long side / short side > 2
image_frequent_url       ImageNode      normalised URL is in `frequent_image_urls` (> 10 documents)
paragraph_boilerplate    TextNode       `paragraph_key(text)` is in `boilerplate_paragraphs`
paragraph_too_few_words  paragraph      < 4 words (only kind == "paragraph"; headings, captions,
paragraph_too_many_words paragraph      > 1000 words  list items ... are not word-count filtered)
doc_too_few_images       Document       < 1 image left after the node filters
doc_too_many_images      Document       > 30 images
doc_too_few_words        Document       < 10 words
doc_too_many_words       Document       > 100000 words (a cost bound, not a quality rule)
doc_mean_word_length     Document       mean word length outside 3..10 characters (Gopher)
doc_symbol_word_ratio    Document       max("#" count, "..."/"…" count) / words > 0.1 (Gopher)
doc_alpha_word_ratio     Document       < 70 % of whitespace tokens contain a letter
doc_duplicate_lines      Document       duplicated-line fraction > 0.5
doc_char_repetition      Document       character repetition ratio > 0.2 (see below)
doc_word_repetition      Document       word 5-gram repetition ratio > 0.3
doc_special_char_ratio   Document       special-character fraction > 0.4
doc_symbol_runs          Document       > 10 % of characters in runs of 4+ equal symbols
doc_uppercase_words      Document       > 30 % of words (2+ letters) in capitals
doc_language             Document       detected language not in `languages` (default: en)
doc_language_score       Document       langid probability of that language < 0.8
doc_stop_word_ratio      Document       English stop-word fraction < 0.2
doc_punctuation_ratio    Document       punctuation-token fraction < 0.03 (OBELICS)
doc_top_word_fraction    Document       the most frequent content word > 10 % of the words
doc_article_disorder     Document       > 10 % of articles not followed by a noun phrase start
doc_content_word_repetition Document    content words repeated within 100-word windows < 10 %
======================== ============== ==========================================================

Thresholds are calibrated on measurements (`make bench-filters`: real English dev pages that must
be kept, generated junk that must not), not copied: each `FilterConfig` field says what was
measured. The OBELICS / Gopher values they replace dropped a quarter of good English articles.

Post-download (`downloaded_image_filter`, FL rules): image_download_format, image_download_too_small
(side < 64), image_download_too_large (side > 20000), image_download_aspect_ratio (> 3),
image_single_colour.

Score definitions (`document_scores`, stored in shards as "filter scores"), on the text nodes
left after node filtering, joined with "\\n" (code blocks left out when they are the smaller
part, see `judged_text`):
- words: whitespace tokens, lower-cased, with special characters (everything that is not a letter
  or a combining mark: punctuation, symbols, digits, spaces) stripped from both ends; empty ones
  dropped (so "2023" and "--" are not words). `word_count` counts them.
- char_repetition (BigScience ROOTS / OBELICS): over the character 10-grams of the text, the
  summed count of the k most frequent 10-grams that occur more than once, with
  k = floor(sqrt(number of distinct 10-grams)), divided by the number of 10-grams.
- word_repetition (OBELICS): fraction of word 5-grams whose 5-gram occurs more than once.
- special_char_ratio: fraction of characters that are special (definition above).
- stop_word_ratio: fraction of words in the English stop-word list `STOP_WORDS`.
- punctuation_ratio (OBELICS): tokens are `[\\w']+` runs and single `PUNCTUATION` characters;
  the fraction of tokens that are punctuation.
- mean_word_length: mean length of the words; alpha_word_ratio: fraction of whitespace tokens
  with at least one letter; symbol_word_ratio: max(count("#"), count("...") + count("…")) / words;
  duplicate_line_fraction: among non-blank stripped lines, the fraction equal to an earlier one.
- symbol_run_ratio: characters in runs of 4+ equal non-word, non-space characters / characters.
- uppercase_word_ratio: fraction of letter runs of 2+ letters that are all capitals.
- top_word_fraction, article_disorder, content_word_repetition: see the functions of those names.
- language_score: langid's normalised probability of the detected language (`detect_language`),
  on the first `FilterConfig.language_max_chars` characters (2000) of the text.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
import sys
import threading
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .dedup import normalize_url, paragraph_key
from .document import Document, ImageNode, Node, TextNode
from .language import detect_language
from .steps import Filter, Verdict, run_filters

STOP_WORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves
he him his himself she she's her hers herself it it's its itself they them their theirs themselves
what which who whom this that that'll these those am is are was were be been being have has had
having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over
under again further then once here there when where why how all any both each few more most other
some such no nor not only own same so than too very s t can will just don don't should should've
now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
shouldn't wasn wasn't weren weren't won won't wouldn wouldn't would could also us
""".split())
"""English stop words (the NLTK list plus would/could/also/us)."""

PUNCTUATION = ".,;:!?…"
"""Characters counted by the punctuation ratio."""
_PUNCTUATION_SET = frozenset(PUNCTUATION)

KNOWN_IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "jfif", "png", "apng", "webp", "gif", "svg", "svgz",
                                    "bmp", "ico", "tif", "tiff", "avif", "heic", "heif", "jxl"})
"""Extensions recognised as image formats; any other extension says nothing about the format."""

_TOKEN_PUNCT_RE = re.compile(r"[\w']+|[" + re.escape(PUNCTUATION) + "]")
_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])")
_LETTERS_RE = re.compile(r"[a-z]+")


def _check_range(name: str, low: float, high: float) -> None:
    if low < 0 or high < low:
        raise ValueError(f"FilterConfig: need 0 <= min <= max for {name}, got {low}..{high}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"FilterConfig.{name} must be a fraction in [0, 1], got {value}")


@dataclass(frozen=True, kw_only=True)
class FilterConfig:
    """Every filter threshold. Defaults follow REFERENCE.md (OBELICS, Gopher, Flamingo)."""

    image_formats: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
    """Image formats (lower-case extensions) kept, by URL before download and by decoded format after."""
    image_min_side: int = 150
    """Minimum declared width and height in pixels (unknown sizes pass until download)."""
    image_max_side: int = 20000
    """Maximum width and height in pixels, declared and downloaded."""
    image_max_aspect_ratio: float = 2.0
    """Maximum declared long side / short side."""
    image_boilerplate_words: tuple[str, ...] = ("logo", "button", "icon", "plugin", "widget")
    """URL path tokens (also with a plural "s") that mark an image as page furniture."""
    image_tracker_patterns: tuple[str, ...] = (
        "doubleclick.net", "google-analytics.com", "googletagmanager.com", "scorecardresearch.com",
        "quantserve.com", "pixel.wp.com", "bat.bing.com", "facebook.com/tr", "analytics.twitter.com",
    )
    """Tracker locations: "host" (matches the host and its subdomains) or "host/path-prefix"."""
    image_tracker_path_words: tuple[str, ...] = ("pixel", "beacon", "tracker", "tracking", "spacer")
    """URL path tokens that mark a tracking pixel / spacer image."""
    image_max_documents: int = 10
    """An image URL on more documents than this is boilerplate (counted by the pipeline)."""
    paragraph_min_words: int = 4
    """Minimum words of a paragraph node."""
    paragraph_max_words: int = 1000
    """Maximum words of a paragraph node."""
    paragraph_boilerplate_min_count: int = 3
    """A paragraph repeated at least this many times within one domain is boilerplate (pipeline counts)."""
    doc_min_images: int = 1
    """Minimum images left in a document after node filtering."""
    doc_max_images: int = 30
    """Maximum images in a document."""
    doc_min_words: int = 10
    """Minimum words in a document."""
    doc_max_words: int = 100_000
    """Maximum words in a document. Not a quality rule: long pages (Wikipedia, LWN, a book chapter)
    are good text, and Flamingo samples 256-token windows from a document anyway. The cap only
    bounds the work and memory one document costs (the longest English dev page has 7,933 words)."""
    min_mean_word_length: float = 3.0
    """Gopher: minimum mean word length (characters)."""
    max_mean_word_length: float = 10.0
    """Gopher: maximum mean word length (characters)."""
    max_symbol_word_ratio: float = 0.1
    """Gopher: maximum "#" or ellipsis count per word."""
    min_alpha_word_ratio: float = 0.7
    """Minimum fraction of whitespace tokens containing a letter. Gopher's 0.8 drops real pages
    dense in numbers (scores, specifications): dev pages measure 98 % >= 0.84, lowest 0.77;
    price grids and number lists measure <= 0.4."""
    max_duplicate_line_fraction: float = 0.5
    """Maximum fraction of lines that repeat an earlier line. Gopher's 0.3 drops real pages whose
    short lines repeat (table cells, "Reply", a table of contents): measured on the 148 English dev
    pages, 99 % are <= 0.17 and the largest is 0.66 (a meal-plan listing); repeated-line junk
    measures >= 0.74."""
    char_repetition_ngram: int = 10
    """Character n-gram length of the character repetition ratio."""
    max_char_repetition: float = 0.2
    """Maximum character repetition ratio. The ratio grows with the length of a text (k, the number
    of 10-grams summed, is the square root of the distinct ones), so OBELICS' 0.1 drops long good
    pages: measured on the English dev pages, median 0.05, 98 % <= 0.11, largest 0.14; keyword
    stuffing and templated listings measure >= 0.2."""
    word_repetition_ngram: int = 5
    """Word n-gram length of the word repetition ratio."""
    max_word_repetition: float = 0.3
    """Maximum word 5-gram repetition ratio: measured on the English dev pages, 98 % <= 0.13
    (OBELICS uses 0.2); pasted and repeated blocks measure >= 0.5."""
    max_special_char_ratio: float = 0.4
    """Maximum fraction of special characters. Spaces and punctuation count, so ordinary prose
    measures about 0.2 (dev pages: median 0.21, 98 % <= 0.28, an RFC up to 0.37); OBELICS' 0.275
    drops them. Price grids measure >= 0.58."""
    min_stop_word_ratio: float = 0.2
    """Minimum fraction of words in `STOP_WORDS`. A threshold only means something with its
    list: with ours (NLTK + 4), the English dev pages measure median 0.42, 5th percentile 0.32,
    2nd 0.27, and the lowest real articles 0.24-0.26 (news briefs dense in names and numbers;
    one listing page 0.13); OBELICS' 0.35 (for its own list) drops 14 % of them. Keyword
    stuffing, tag clouds, link lists, gibberish and lorem ipsum measure <= 0.2, most <= 0.05."""
    min_punctuation_ratio: float = 0.03
    """OBELICS: minimum fraction of punctuation tokens."""
    max_article_disorder: float = 0.1
    """Maximum fraction of articles ("the", "an", "a") not followed by the start of a noun phrase
    (`ARTICLE_BREAKERS`, sentence punctuation or the end of the text): the mark of shuffled words,
    word salad and word-by-word translation. Dev pages: 98 % measure 0, the largest 0.034 (a
    capital "A" is not counted: "A: ..." answers of a Q&A page measured 0.18); shuffled sentences
    measure >= 0.18. English only, like the stop words."""
    min_article_count: int = 10
    """`article_disorder` is 0 (not judged) for texts with fewer articles than this."""
    min_content_word_repetition: float = 0.1
    """Minimum `content_word_repetition`: a real text keeps coming back to its topic words, text
    whose content words were swapped for dictionary words (spun, or pasted from many pages) does
    not. Dev pages: lowest 0.18, 2nd percentile 0.20, median 0.31; substituted text: median 0.04,
    90th percentile 0.08."""
    content_word_window: int = 100
    """Window (content words) of `content_word_repetition`; shorter texts are not judged (1.0)."""
    max_top_word_fraction: float = 0.1
    """Maximum share of the words that are the most frequent content word (texts of 100+ words):
    dev pages measure 98 % <= 0.05, largest 0.074; keyword-stuffed text >= 0.1."""
    max_symbol_run_ratio: float = 0.1
    """Maximum fraction of characters in runs of 4+ of the same symbol ("=====", "★★★★"): dev
    pages: 99 % <= 0.003, largest 0.027 (ASCII tables); decorated junk >= 0.28."""
    max_uppercase_word_ratio: float = 0.3
    """Maximum fraction of words (2+ letters) written in capitals: dev pages measure <= 0.093
    (acronyms), shouting spam about 1."""
    languages: tuple[str, ...] | None = ("en",)
    """Languages kept (ISO 639-1); None keeps every language (the score threshold still applies)."""
    min_language_score: float = 0.8
    """Minimum langid probability of the detected language."""
    language_max_chars: int = 2000
    """Language identification reads only the first this many characters of the document text:
    langid's cost grows linearly with the text while its answer is settled by a few hundred
    words, and a bounded prefix keeps the cost per document bounded (2000 characters are about
    350 English words; documents may have up to `doc_max_words`)."""
    download_min_side: int = 64
    """FL: minimum side of a downloaded image."""
    download_max_aspect_ratio: float = 3.0
    """FL: maximum long side / short side of a downloaded image."""
    drop_single_colour: bool = True
    """FL: drop downloaded images of one single colour."""

    def __post_init__(self) -> None:
        if not self.image_formats:
            raise ValueError("FilterConfig.image_formats must name at least one format")
        object.__setattr__(self, "image_formats", tuple(f.lower().lstrip(".") for f in self.image_formats))
        _check_range("image sides", self.image_min_side, self.image_max_side)
        _check_range("paragraph words", self.paragraph_min_words, self.paragraph_max_words)
        _check_range("document images", self.doc_min_images, self.doc_max_images)
        _check_range("document words", self.doc_min_words, self.doc_max_words)
        _check_range("mean word length", self.min_mean_word_length, self.max_mean_word_length)
        for name in ("image_max_aspect_ratio", "download_max_aspect_ratio"):
            if getattr(self, name) < 1.0:
                raise ValueError(f"FilterConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_symbol_word_ratio", "min_alpha_word_ratio", "max_duplicate_line_fraction",
                     "max_char_repetition", "max_word_repetition", "max_special_char_ratio",
                     "min_stop_word_ratio", "min_punctuation_ratio", "min_language_score",
                     "max_article_disorder", "min_content_word_repetition", "max_uppercase_word_ratio",
                     "max_top_word_fraction", "max_symbol_run_ratio"):
            _check_fraction(name, getattr(self, name))
        for name in ("char_repetition_ngram", "word_repetition_ngram", "image_max_documents",
                     "paragraph_boilerplate_min_count", "download_min_side", "language_max_chars",
                     "min_article_count", "content_word_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"FilterConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.languages is not None:
            object.__setattr__(self, "languages", tuple(self.languages))


DEFAULT_CONFIG = FilterConfig()


# ----------------------------------------------------------------------------------------------
# Text statistics


def _is_special(ch: str) -> bool:
    return unicodedata.category(ch)[0] not in "LM"


# Per-character questions are asked once per distinct character and process: every character
# met gets a small id (`_CHAR_IDS[code point]`, 0 = not met yet) and a byte of flags
# (`_ID_FLAGS[id]`). A text becomes an int32 array of ids (one `str.encode` and one gather), and
# each statistic is a few whole-array operations on the flags instead of a Python loop per
# character or token. Lower-casing never changes these flags, the case flags (`_F_UPPER`,
# `_F_LOWER_OR_TITLE`) aside: every code point's lower-case form is special, whitespace, ...
# exactly when the code point is (a test checks all of Unicode), so the other flags of a text are
# those of its lower-cased form.
_F_SPACE = 1
"""`str.isspace`: the whitespace `str.split()` splits on."""
_F_ALPHA = 2
"""`str.isalpha`."""
_F_SPECIAL = 4
"""`_is_special`: neither a letter nor a combining mark."""
_F_WORD = 8
r"""Matches `[\w']`: a character of a word token of the punctuation ratio."""
_F_PUNCT = 16
"""In `PUNCTUATION`."""
_F_LETTER = 32
r"""Matches `[^\W\d_]`: a character of a letter word (`uppercase_word_ratio`)."""
_F_UPPER = 64
"""`str.isupper` of the character alone (a case flag: lower-casing changes it)."""
_F_LOWER_OR_TITLE = 128
"""`str.islower` of the character alone, or a title-case letter (category Lt): a word holding one
is not upper-case (`str.isupper`'s rule). A case flag."""
_WORD_CHAR_RE = re.compile(r"[\w']")
_LETTER_CHAR_RE = re.compile(r"[^\W\d_]")

_CHAR_IDS = np.zeros(sys.maxunicode + 1, dtype=np.int32)
"""Code point -> id (1, 2, ...) of the characters met so far in this process; 0 = not met. Zeroed
memory that is never written is never touched, so this costs about one page per Unicode block met."""
_ID_FLAGS = np.zeros(1, dtype=np.uint8)
"""Id -> flags (`_F_*`); index 0 is unused."""
_ID_CHARS: list[str] = [""]
"""Id -> character."""
_CHAR_LOCK = threading.Lock()
"""Serialises registering new characters (Beam may run bundles in threads). Readers take no
lock: a character's flags are published before its id."""


def _char_flags(ch: str) -> int:
    return ((_F_SPACE if ch.isspace() else 0) | (_F_ALPHA if ch.isalpha() else 0)
            | (_F_SPECIAL if _is_special(ch) else 0) | (_F_WORD if _WORD_CHAR_RE.match(ch) else 0)
            | (_F_PUNCT if ch in _PUNCTUATION_SET else 0) | (_F_LETTER if _LETTER_CHAR_RE.match(ch) else 0)
            | (_F_UPPER if ch.isupper() else 0)
            | (_F_LOWER_OR_TITLE if ch.islower() or unicodedata.category(ch) == "Lt" else 0))


def _register_chars(codes: np.ndarray) -> None:
    """Give ids and flags to the code points `codes` (distinct) not met before."""
    global _ID_FLAGS
    with _CHAR_LOCK:
        new = [int(code) for code in codes if not _CHAR_IDS[code]]
        if not new:
            return
        first = len(_ID_CHARS)
        chars = [chr(code) for code in new]
        _ID_FLAGS = np.concatenate([_ID_FLAGS, np.array([_char_flags(ch) for ch in chars], dtype=np.uint8)])
        _ID_CHARS.extend(chars)
        _CHAR_IDS[np.array(new, dtype=np.int64)] = np.arange(first, first + len(new), dtype=np.int32)


def _char_ids(text: str) -> np.ndarray:
    """The id of every character of `text` (int32 array of `len(text)`; lone surrogates included)."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ids = _CHAR_IDS[codes]
    if not ids.all():
        _register_chars(np.unique(codes[ids == 0]))
        ids = _CHAR_IDS[codes]
    return ids


def _token_starts(space: np.ndarray) -> np.ndarray:
    """Bool mask of the first character of every whitespace token (`space`: whitespace mask)."""
    starts = ~space
    starts[1:] &= space[:-1]
    return starts


def _tokens_having(space: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Positions of the first `has` character of every whitespace token that has one (`space`:
    whitespace mask; `has` must be False on whitespace).

    With the characters that are neither whitespace nor `has` removed, a token's `has`
    characters are one run (no whitespace separates them) and two tokens' runs are separated by
    whitespace: the first characters of the tokens asked for are the starts of the `has` runs."""
    keep = space | has
    runs = has[keep]
    starts = np.empty(len(runs), dtype=bool)
    starts[:1] = runs[:1]
    np.greater(runs[1:], runs[:-1], out=starts[1:])
    return np.flatnonzero(keep)[starts]


def word_count(text: str) -> int:
    """`len(words_of(text))` without building the words: the whitespace tokens that have a
    character that is not special. Memoised per text (`word_counts` fills the memo for many texts
    at once; `apply_filters` does so for a document's paragraphs)."""
    count = _WORD_COUNTS.get(text)
    if count is None:
        count = word_counts([text])[0]
    return count


_WORD_COUNTS: dict[str, int] = {}
_WORD_COUNTS_SIZE = 1 << 12
"""Memo of `word_count` (the last texts counted; cleared at this many entries, so memory stays
bounded)."""


def word_counts(texts: Sequence[str]) -> list[int]:
    """`[word_count(t) for t in texts]` in one pass over the texts joined with "\\n" (whitespace,
    so no token spans two texts): one numpy pass instead of one per (short) paragraph."""
    if not texts:
        return []
    joined = "\n".join(texts)
    ids = _char_ids(joined)
    flags = _ID_FLAGS[ids]
    space = (flags & _F_SPACE).astype(bool)
    words = _tokens_having(space, (flags & (_F_SPECIAL | _F_SPACE)) == 0)
    ends = np.cumsum([len(t) + 1 for t in texts])  # text i spans [ends[i-1], ends[i] - 1)
    counts = np.bincount(np.searchsorted(ends, words, side="right"), minlength=len(texts)).tolist()
    memo = _WORD_COUNTS
    if len(memo) > _WORD_COUNTS_SIZE:
        memo.clear()
    memo.update(zip(texts, counts))
    return counts


def _specials_of(ids: np.ndarray) -> str:
    """The special characters among `ids` and their lower-case forms, as one string (for
    `str.strip` of lower-cased tokens; lower-casing maps special characters to special ones)."""
    flags = _ID_FLAGS  # ids are published after their flags: every id in `ids` is in `flags`
    present = np.zeros(len(flags), dtype=bool)
    present[ids] = True
    specials = "".join(_ID_CHARS[i] for i in np.flatnonzero(present & ((flags & _F_SPECIAL) != 0)).tolist())
    lowered = specials.lower()
    return specials if lowered == specials else specials + lowered


def _words_of_lowered(lowered: str, specials: str) -> list[str]:
    # str.strip(chars) strips exactly the leading/trailing characters in `chars`: with `specials`
    # the special characters of the text, this is stripping special characters at C speed.
    tokens = lowered.split()
    return list(filter(None, map(str.strip, tokens, itertools.repeat(specials, len(tokens)))))


def words_of(text: str) -> list[str]:
    """The filter notion of words: lower-cased whitespace tokens stripped of special characters."""
    return _words_of_lowered(text.lower(), _specials_of(_char_ids(text)))


def _repeated_counts(keys: np.ndarray) -> np.ndarray:
    """How often each distinct value of `keys` occurs (the counts of `np.unique`, by one sort)."""
    ordered = np.sort(keys)
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    return np.diff(bounds, prepend=0, append=len(ordered))


def _dense_ranks(keys: np.ndarray) -> np.ndarray:
    """Each key's rank among the distinct keys (0 .. distinct - 1), as uint64."""
    return np.unique(keys, return_inverse=True)[1].astype(np.uint64).reshape(-1)


_KEY_LIMIT = 1 << 64


def _ngram_keys(ranks: np.ndarray, base: int, n: int) -> np.ndarray:
    """One uint64 per n-gram of `ranks` (values in 0 .. base - 1), equal exactly when the n-grams
    are equal.

    Prefix doubling: the 1-, 2-, 4-, ...-grams are numbered, and an m-gram followed by a k-gram
    is the number `head * bound(k-grams) + tail`, exact while the product of the two bounds fits
    64 bits. Up to 84 distinct characters, 10-grams are plain base-`base` numbers; past that, the
    longer grams are first renumbered densely (one sort each) to bring their bound down to their
    count of distinct values."""
    grams = {1: (ranks.astype(np.uint64), base)}
    length = 1
    while length < n:
        step = min(length, 1 << ((n - length).bit_length() - 1))
        (head, head_bound), (tail, tail_bound) = grams[length], grams[step]
        if head_bound * tail_bound > _KEY_LIMIT:
            head = _dense_ranks(head)
            head_bound = int(head.max()) + 1
            grams[length] = (head, head_bound)
            if step == length:
                tail, tail_bound = head, head_bound
            if head_bound * tail_bound > _KEY_LIMIT:  # both below len(ranks) once ranked
                tail = _dense_ranks(tail)
                tail_bound = int(tail.max()) + 1
        count = len(ranks) - (length + step) + 1
        length += step
        grams[length] = (head[:count] * np.uint64(tail_bound) + tail[length - step:length - step + count],
                         head_bound * tail_bound)
    return grams[n][0]


def _char_repetition(ids: np.ndarray, n: int) -> float:
    size = len(ids) - n + 1
    if size <= 0:
        return 0.0
    # The text's characters ranked densely (0 .. distinct - 1): the smaller the base, the more
    # characters fit one 64-bit n-gram number.
    used = np.zeros(len(_ID_FLAGS), dtype=np.int64)
    used[ids] = 1
    distinct = int(used.sum())
    ranks = (np.cumsum(used) - 1)[ids]
    freqs = np.sort(_repeated_counts(_ngram_keys(ranks, distinct, n)))[::-1]
    repeated = int(np.count_nonzero(freqs > 1))
    k = min(math.isqrt(len(freqs)), repeated)
    return int(freqs[:k].sum()) / size


def char_repetition_ratio(text: str, n: int = 10) -> float:
    """OBELICS character repetition ratio (see the module docstring); 0.0 for text shorter than n.

    Exact n-gram counts without building n-gram strings (see `_ngram_keys`)."""
    return _char_repetition(_char_ids(text), n) if len(text) >= n else 0.0


def word_repetition_ratio(words: Sequence[str], n: int = 5) -> float:
    """Fraction of word n-grams that occur more than once (0.0 for fewer than n words).

    Each word is numbered by its last position (one dict built in C), the n-grams are counted as
    integers (`_ngram_keys`) instead of as tuples in a Counter, and an n-gram is repeated when it
    equals a neighbour once sorted."""
    if len(words) < n:
        return 0.0
    last = dict(zip(words, range(len(words))))
    ranks = np.fromiter(map(last.__getitem__, words), dtype=np.int64, count=len(words))
    ordered = np.sort(_ngram_keys(ranks, len(words), n))
    same = ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(ordered), dtype=bool)
    repeated[1:] = same
    repeated[:-1] |= same
    return int(np.count_nonzero(repeated)) / (len(words) - n + 1)


ARTICLE_BREAKERS = frozenset("""
the a an of and or but nor to in on at by for with from into than as if because is are was were be been
i you he she it we they
""".split())
"""Words that never follow an article in English ("the of", "a they"): an article followed by one
of them (lower-case), by sentence punctuation or by nothing marks disordered words."""
_ARTICLE = r"(?<![\w'’-])(?:[Tt]he|[Aa]n|a)(?![\w'’-])"
_ARTICLE_RE = re.compile(_ARTICLE)
_ARTICLE_TAIL = (r"(?=\s*(?:[.,;:!?](?!\w)|$)|\s+(?:" + "|".join(sorted(ARTICLE_BREAKERS))
                 + r")(?![\w'’-]))")
_ARTICLE_TAIL_RE = re.compile(_ARTICLE_TAIL)
"""What follows a disordered article."""
_BROKEN_ARTICLE_RE = re.compile(_ARTICLE + _ARTICLE_TAIL)
"""A disordered article (the definition `article_disorder` counts without scanning by regex)."""
_SYMBOL_RUN_RE = re.compile(r"([^\w\s])\1{3,}")
_LETTER_WORD_RE = re.compile(r"(?<![^\W\d_])[^\W\d_]{2,}(?![^\W\d_])")


def article_disorder(text: str, *, min_articles: int = 10, ids: np.ndarray | None = None) -> float:
    """Fraction of the articles of `text` ("the", "The", "an", "An", "a"; a capital "A" is left
    out: "A:" answers, grades, initials) followed by an `ARTICLE_BREAKERS` word, by sentence
    punctuation or by the end of the text; 0.0 when there are fewer than `min_articles` articles.

    The articles are `_ARTICLE_RE`'s matches and the disordered ones `_BROKEN_ARTICLE_RE`'s, found
    with whole-array comparisons on the character ids (`ids`: `_char_ids(text)`, if the caller
    has them) instead of a regex scan that tries its look-behind at every character; only the
    article ends are matched against `_ARTICLE_TAIL_RE`."""
    ends = _article_ends(_char_ids(text) if ids is None else ids)
    if len(ends) < max(1, min_articles):
        return 0.0
    tail = _ARTICLE_TAIL_RE.match
    return sum(tail(text, end) is not None for end in ends.tolist()) / len(ends)


def _article_ends(ids: np.ndarray) -> np.ndarray:
    """End offsets of `_ARTICLE_RE`'s matches in the text whose character ids are `ids`."""
    n = len(ids)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    codes = {ch: int(_CHAR_IDS[ord(ch)]) for ch in "tTheaAn’-"}  # 0: not met yet, so nowhere in `ids`
    # joins[i + 1]: character i is in [\w'’-] (an article cannot touch one); joins[0], joins[n + 1]: the ends
    joins = np.zeros(n + 2, dtype=bool)
    joins[1:-1] = (_ID_FLAGS[ids] & _F_WORD) != 0
    for ch in "’-":
        if codes[ch]:
            joins[1:-1] |= ids == codes[ch]
    free = ~joins
    padded = np.zeros(n + 3, dtype=ids.dtype)  # ids, then 3 zeros: the look-ahead of the last characters
    padded[:n] = ids

    def at(offset: int, *chars: str) -> np.ndarray:
        window = padded[offset:offset + n]
        hit = window == codes[chars[0]] if codes[chars[0]] else np.zeros(n, dtype=bool)
        for ch in chars[1:]:
            if codes[ch]:
                hit |= window == codes[ch]
        return hit

    start_ok = free[:n]  # the character before position i (or the text's start) is free
    the = start_ok & at(0, "t", "T") & at(1, "h") & at(2, "e") & free[np.minimum(np.arange(n) + 4, n + 1)]
    an = start_ok & at(0, "a", "A") & at(1, "n") & free[np.minimum(np.arange(n) + 3, n + 1)]
    a = start_ok & at(0, "a") & free[2:n + 2]
    ends = np.concatenate([np.flatnonzero(the) + 3, np.flatnonzero(an) + 2, np.flatnonzero(a) + 1])
    ends.sort()
    return ends


def content_words(words: Sequence[str]) -> list[str]:
    """The content words of `words`: alphabetic, not in `STOP_WORDS`."""
    return [w for w in words if w.isalpha() and w not in STOP_WORDS]


def _uppercase_word_ratio(flags: np.ndarray) -> float:
    """Fraction of the letter words (`_LETTER_WORD_RE`'s matches: maximal runs of 2+ `[^\\W\\d_]`
    characters) that `str.isupper` (no lower- or title-case letter, at least one upper-case one),
    from the text's character flags: one pass of whole-array operations."""
    letter = (flags & _F_LETTER) != 0
    if not letter.any():
        return 0.0
    starts = letter.copy()
    starts[1:] &= ~letter[:-1]
    own = flags[letter]  # the letters; each run of them starts at a `first` index
    first = np.flatnonzero(starts[letter])
    words = np.diff(first, append=len(own)) >= 2
    lowish = np.logical_or.reduceat((own & _F_LOWER_OR_TITLE) != 0, first)
    upper = np.logical_or.reduceat((own & _F_UPPER) != 0, first)
    n = int(np.count_nonzero(words))
    return int(np.count_nonzero(words & ~lowish & upper)) / n if n else 0.0


def _symbol_run_ratio(ids: np.ndarray, flags: np.ndarray) -> float:
    """`_SYMBOL_RUN_RE`'s matched characters / `len(text)`: the lengths of the maximal runs of one
    repeated character outside `[\\w\\s]` that are 4 or more long (what the greedy back-reference
    matches, scanning left to right), by whole-array operations on the character ids."""
    n = len(ids)
    if n < 4:
        return 0.0
    word = (flags & _F_WORD) != 0  # [\w'], and "'" is not \w
    apostrophe = int(_CHAR_IDS[ord("'")])
    if apostrophe:
        word &= ids != apostrophe
    symbol = ~(word | ((flags & _F_SPACE) != 0))
    first = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))  # runs of one character
    lengths = np.diff(first, append=n)
    long = (lengths >= 4) & symbol[first]
    return int(lengths[long].sum()) / n


def top_word_fraction(words: Sequence[str], *, min_words: int = 100,
                      content: Sequence[str] | None = None) -> float:
    """Share of `words` that are its most frequent content word (alphabetic, not in `STOP_WORDS`);
    0.0 (not judged) for fewer than `min_words` words. `content`: `content_words(words)`, if the
    caller has them."""
    if len(words) < min_words:
        return 0.0
    counts = Counter(content_words(words) if content is None else content)
    return counts.most_common(1)[0][1] / len(words) if counts else 0.0


def content_word_repetition(words: Sequence[str], *, window: int = 100,
                            content: Sequence[str] | None = None) -> float:
    """How much a text comes back to its own content words: the content words (alphabetic words
    not in `STOP_WORDS`) cut into windows of `window`; in each window, the fraction of words that
    occur in it more than once; the median over the windows (a tail or a pasted block does not
    decide). 1.0 (not judged) when there are fewer than `window` content words. `content`:
    `content_words(words)`, if the caller has them."""
    content = content_words(words) if content is None else content
    if len(content) < window:
        return 1.0
    fractions = []
    for start in range(0, len(content) - window + 1, window):
        counts = Counter(content[start:start + window])
        fractions.append(sum(c for c in counts.values() if c > 1) / window)
    return float(np.median(fractions))


@dataclass(frozen=True, kw_only=True)
class DocumentStats:
    """The numbers behind the document filters (see the module docstring for definitions)."""

    image_count: int
    word_count: int
    mean_word_length: float
    symbol_word_ratio: float
    alpha_word_ratio: float
    duplicate_line_fraction: float
    char_repetition: float
    word_repetition: float
    special_char_ratio: float
    stop_word_ratio: float
    punctuation_ratio: float
    symbol_run_ratio: float
    uppercase_word_ratio: float
    top_word_fraction: float
    article_disorder: float
    content_word_repetition: float
    language: str
    language_score: float

    def scores(self) -> dict[str, float]:
        """All numeric fields as floats (the shard's "filter scores"); `language` is left out."""
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "language"}


class _TextScores:
    """The `DocumentStats` of a text, each score computed when it is first read (`cached_property`).

    The document filters run in order and stop at the first drop, so a document dropped for its
    image count never has its text scored, and one dropped for its word count never meets the
    language identifier; a kept document reads every score (`stats`). The document filters take
    this object in place of a `DocumentStats` (same attribute names, same values).

    Character-level notions are whole-array operations on the text's character flags (see
    `_char_ids`): whitespace tokens are runs of non-space characters, "tokens with a letter" the
    distinct tokens of the letters, the punctuation ratio's `[\\w']+` tokens the runs of word
    characters. Only the words (needed as strings for stop words and lengths) are Python objects.
    """

    def __init__(self, text: str, image_count: int, cfg: FilterConfig) -> None:
        self.text, self.image_count, self.cfg = text, image_count, cfg

    @functools.cached_property
    def _ids(self) -> np.ndarray:
        return _char_ids(self.text)

    @functools.cached_property
    def _flags(self) -> np.ndarray:
        ids = self._ids  # first: registering new characters replaces _ID_FLAGS
        return _ID_FLAGS[ids]

    @functools.cached_property
    def _words(self) -> list[str]:
        return _words_of_lowered(self.text.lower(), _specials_of(self._ids))

    @functools.cached_property
    def _language(self) -> tuple[str, float]:
        return detect_language(self.text[:self.cfg.language_max_chars])

    @functools.cached_property
    def word_count(self) -> int:
        return len(self._words)

    @functools.cached_property
    def mean_word_length(self) -> float:
        words = self._words
        return sum(map(len, words)) / len(words) if words else 0.0

    @functools.cached_property
    def symbol_word_ratio(self) -> float:
        text, n_words = self.text, len(self._words)
        return max(text.count("#"), text.count("...") + text.count("…")) / n_words if n_words else 0.0

    @functools.cached_property
    def alpha_word_ratio(self) -> float:
        flags = self._flags
        space = (flags & _F_SPACE).astype(bool)
        n_tokens = int(np.count_nonzero(_token_starts(space)))
        alpha_tokens = len(_tokens_having(space, (flags & _F_ALPHA).astype(bool)))
        return alpha_tokens / n_tokens if n_tokens else 0.0

    @functools.cached_property
    def duplicate_line_fraction(self) -> float:
        lines = [line.strip() for line in self.text.split("\n")]
        lines = [line for line in lines if line]
        return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0

    @functools.cached_property
    def char_repetition(self) -> float:
        return _char_repetition(self._ids, self.cfg.char_repetition_ngram)

    @functools.cached_property
    def word_repetition(self) -> float:
        return word_repetition_ratio(self._words, self.cfg.word_repetition_ngram)

    @functools.cached_property
    def special_char_ratio(self) -> float:
        text = self.text
        return int(np.count_nonzero(self._flags & _F_SPECIAL)) / len(text) if text else 0.0

    @functools.cached_property
    def stop_word_ratio(self) -> float:
        words = self._words
        return sum(map(STOP_WORDS.__contains__, words)) / len(words) if words else 0.0

    @functools.cached_property
    def punctuation_ratio(self) -> float:
        flags = self._flags
        word_chars = (flags & _F_WORD).astype(bool)
        word_runs = int(np.count_nonzero(word_chars[1:] & ~word_chars[:-1])) + bool(len(self.text) and word_chars[0])
        n_punct = int(np.count_nonzero(flags & _F_PUNCT))
        return n_punct / (n_punct + word_runs) if n_punct + word_runs else 0.0

    @functools.cached_property
    def article_disorder(self) -> float:
        return article_disorder(self.text, min_articles=self.cfg.min_article_count, ids=self._ids)

    @functools.cached_property
    def _content_words(self) -> list[str]:
        return content_words(self._words)

    @functools.cached_property
    def content_word_repetition(self) -> float:
        return content_word_repetition(self._words, window=self.cfg.content_word_window,
                                       content=self._content_words)

    @functools.cached_property
    def symbol_run_ratio(self) -> float:
        return _symbol_run_ratio(self._ids, self._flags)

    @functools.cached_property
    def top_word_fraction(self) -> float:
        return top_word_fraction(self._words, content=self._content_words)

    @functools.cached_property
    def uppercase_word_ratio(self) -> float:
        return _uppercase_word_ratio(self._flags)

    @property
    def language(self) -> str:
        return self._language[0]

    @property
    def language_score(self) -> float:
        return self._language[1]

    def stats(self) -> DocumentStats:
        """Every score, as a `DocumentStats`."""
        return DocumentStats(**{name: getattr(self, name) for name in _STATS_FIELDS})


_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(DocumentStats))


def text_stats(text: str, *, image_count: int = 0, cfg: FilterConfig = DEFAULT_CONFIG) -> DocumentStats:
    """`DocumentStats` of a plain text (lines separated by "\\n"); see `_TextScores`."""
    return _TextScores(text, image_count, cfg).stats()


def judged_text(doc: Document, cfg: FilterConfig = DEFAULT_CONFIG) -> str:
    """The text the document filters judge: the text nodes joined with "\\n", leaving out code
    (`kind == "preformatted"`) when the rest is the larger part (at least as many words, and at
    least `cfg.doc_min_words`). The scores describe prose; a tutorial's code blocks (indentation,
    symbols, repeated lines) are not bad prose: on the English dev pages they lifted a programming
    post's special-character ratio from 0.22 to 0.50 and its duplicate lines from 0.13 to 0.43. A
    page that is mostly preformatted (an RFC in one <pre>) is judged whole."""
    texts = [n for n in doc.nodes if isinstance(n, TextNode)]
    prose = [n.text for n in texts if n.kind != "preformatted"]
    if len(prose) < len(texts):
        code_words = sum(word_counts([n.text for n in texts if n.kind == "preformatted"]))
        if sum(word_counts(prose)) >= max(cfg.doc_min_words, code_words):
            return "\n".join(prose)
    return "\n".join(n.text for n in texts)


def document_stats(doc: Document, cfg: FilterConfig = DEFAULT_CONFIG) -> DocumentStats:
    """`DocumentStats` of `doc`: of its `judged_text`, and its image count."""
    return text_stats(judged_text(doc, cfg), image_count=len(doc.images), cfg=cfg)


def judged_stats(doc: Document) -> DocumentStats | None:
    """The `DocumentStats` that `apply_filters` stored in a document it kept (`language` and
    `metadata["filter_scores"]`), or None if it carries none. They describe the text the document
    had when it was kept; valid for `apply_filters(..., known_stats=)` only while that text is
    unchanged and with the same `FilterConfig`."""
    scores = doc.metadata.get("filter_scores")
    names = [f.name for f in dataclasses.fields(DocumentStats) if f.name != "language"]
    if not isinstance(scores, dict) or doc.language is None or any(name not in scores for name in names):
        return None
    counts = {"image_count", "word_count"}
    return DocumentStats(language=doc.language,
                         **{name: int(scores[name]) if name in counts else float(scores[name]) for name in names})


def document_scores(doc: Document, cfg: FilterConfig = DEFAULT_CONFIG) -> dict[str, float]:
    """The numbers behind the document filters, as `{score_name: float}` (see `DocumentStats`)."""
    return document_stats(doc, cfg).scores()


# ----------------------------------------------------------------------------------------------
# Image filters


def _path_tokens(path: str) -> list[str]:
    """Lower-case letter runs of a URL path, camelCase split ("siteLogo_2x.png" -> site, logo, x, png)."""
    return _LETTERS_RE.findall(_CAMEL_RE.sub(" ", path).lower())


def image_extension(url: str) -> str:
    """Lower-case image format from a URL: the last path segment's extension, or the subtype of a
    `data:image/...` URL ("svg+xml" -> "svg"); "" when there is none."""
    if url[:5].lower() == "data:":
        mime = url[5:].split(";", 1)[0].split(",", 1)[0].strip().lower()
        return mime.split("/", 1)[1].split("+", 1)[0] if mime.startswith("image/") else ""
    try:
        path = urlsplit(url).path
    except ValueError:
        return ""
    segment = path.rsplit("/", 1)[-1]
    return segment.rsplit(".", 1)[1].lower() if "." in segment else ""


class ImageTrackingPixelFilter(Filter):
    """Drops declared 1-pixel images and images served from tracker hosts/paths."""

    name = "image_tracking_pixel"

    def __init__(self, *, cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        self.patterns = tuple(p.lower() for p in cfg.image_tracker_patterns)
        self.path_words = frozenset(w.lower() for w in cfg.image_tracker_path_words)

    def filter(self, image: ImageNode) -> bool:
        if (image.width is not None and image.width <= 1) or (image.height is not None and image.height <= 1):
            return False
        try:
            parts = urlsplit(image.url)
            host = (parts.hostname or "").rstrip(".")
        except ValueError:
            return True
        host_path = host + parts.path.lower()
        for pattern in self.patterns:
            if "/" in pattern:
                if host_path.startswith(pattern) or ("." + pattern) in host_path:
                    return False
            elif host == pattern or host.endswith("." + pattern):
                return False
        return not any(token in self.path_words for token in _path_tokens(parts.path))


class ImageFormatFilter(Filter):
    """Drops images whose URL names a known image format that is not kept (gif, svg, ...)."""

    name = "image_bad_format"

    def __init__(self, *, cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        self.formats = frozenset(cfg.image_formats)

    def filter(self, image: ImageNode) -> bool:
        ext = image_extension(image.url)
        return ext not in KNOWN_IMAGE_EXTENSIONS or ext in self.formats


class ImageBoilerplateUrlFilter(Filter):
    """Drops logos, buttons, icons, plugin and widget images by URL path tokens (not substrings:
    "/iconic-photo.jpg" is kept, "/static/site-logo.png" and "/icons/x.png" are dropped)."""

    name = "image_boilerplate_url"

    def __init__(self, *, cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        words = {w.lower() for w in cfg.image_boilerplate_words}
        self.tokens = frozenset(words | {w + "s" for w in words})

    def filter(self, image: ImageNode) -> bool:
        try:
            path = urlsplit(image.url).path
        except ValueError:
            return True
        return not any(token in self.tokens for token in _path_tokens(path))


class ImageSizeFilter(Filter):
    """Drops images whose declared width or height is outside [min_side, max_side]; unknown sizes pass."""

    name = "image_size"

    def __init__(self, *, cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        self.min_side, self.max_side = cfg.image_min_side, cfg.image_max_side

    def filter(self, image: ImageNode) -> bool | tuple[bool, str]:
        sides = [s for s in (image.width, image.height) if s is not None]
        if any(s < self.min_side for s in sides):
            return False, "image_too_small"
        if any(s > self.max_side for s in sides):
            return False, "image_too_large"
        return True


class ImageAspectRatioFilter(Filter):
    """Drops images whose declared long side / short side exceeds the maximum (both sides needed)."""

    name = "image_aspect_ratio"

    def __init__(self, *, cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        self.max_ratio = cfg.image_max_aspect_ratio

    def filter(self, image: ImageNode) -> bool:
        w, h = image.width, image.height
        if not w or not h or w <= 0 or h <= 0:
            return True
        return max(w, h) / min(w, h) <= self.max_ratio


class FrequentImageFilter(Filter):
    """Drops images whose normalised URL is in a set computed by the pipeline (URLs on more than
    `FilterConfig.image_max_documents` documents: logos, buttons, ads)."""

    name = "image_frequent_url"

    def __init__(self, *, frequent_urls: Collection[str]) -> None:
        self.frequent_urls = frequent_urls

    def filter(self, image: ImageNode) -> bool:
        try:
            url = normalize_url(image.url)
        except ValueError:
            url = image.url
        return url not in self.frequent_urls


def image_filters(cfg: FilterConfig = DEFAULT_CONFIG, *,
                  frequent_image_urls: Collection[str] | None = None) -> list[Filter]:
    """The image-node filters in order (tracking pixels first, so a 1x1 GIF counts as a tracker)."""
    steps: list[Filter] = [ImageTrackingPixelFilter(cfg=cfg), ImageFormatFilter(cfg=cfg),
                           ImageBoilerplateUrlFilter(cfg=cfg), ImageSizeFilter(cfg=cfg),
                           ImageAspectRatioFilter(cfg=cfg)]
    if frequent_image_urls:
        steps.append(FrequentImageFilter(frequent_urls=frequent_image_urls))
    return steps


# ----------------------------------------------------------------------------------------------
# Paragraph (text node) filters


class BoilerplateParagraphFilter(Filter):
    """Drops text nodes whose `paragraph_key` is in a set of keys repeated within the domain.

    Figure captions are exempt: a caption describes its own image, so two pages showing similar
    pictures legitimately share caption text; a repeated *image* is caught by the image-URL
    frequency filter instead."""

    name = "paragraph_boilerplate"

    def __init__(self, *, keys: Collection[str]) -> None:
        self.keys = keys

    def filter(self, node: TextNode) -> bool:
        return node.kind == "caption" or paragraph_key(node.text) not in self.keys


class ParagraphWordCountFilter(Filter):
    """Drops paragraph nodes (kind == "paragraph") with too few or too many words; other kinds pass."""

    name = "paragraph_word_count"

    def __init__(self, *, cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        self.min_words, self.max_words = cfg.paragraph_min_words, cfg.paragraph_max_words

    def filter(self, node: TextNode) -> bool | tuple[bool, str]:
        if node.kind != "paragraph":
            return True
        n = word_count(node.text)
        if n < self.min_words:
            return False, "paragraph_too_few_words"
        if n > self.max_words:
            return False, "paragraph_too_many_words"
        return True


def paragraph_filters(cfg: FilterConfig = DEFAULT_CONFIG, *,
                      boilerplate_paragraphs: Collection[str] | None = None) -> list[Filter]:
    """The text-node filters in order."""
    steps: list[Filter] = []
    if boilerplate_paragraphs:
        steps.append(BoilerplateParagraphFilter(keys=boilerplate_paragraphs))
    steps.append(ParagraphWordCountFilter(cfg=cfg))
    return steps


# ----------------------------------------------------------------------------------------------
# Document filters


class DocumentFilter(Filter):
    """A filter over `DocumentStats`; given a `Document` it computes the stats first."""

    def __init__(self, *, cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        self.cfg = cfg

    def filter(self, item: Document | DocumentStats) -> bool | tuple[bool, str]:
        stats = item if isinstance(item, DocumentStats | _TextScores) else document_stats(item, self.cfg)
        return self.check(stats)

    def check(self, stats: DocumentStats) -> bool | tuple[bool, str]:
        raise NotImplementedError


class ScoreRangeFilter(DocumentFilter):
    """Keeps documents whose `DocumentStats.<score>` lies in [minimum, maximum] (None = unbounded)."""

    def __init__(self, *, name: str, score: str, minimum: float | None = None, maximum: float | None = None,
                 low_reason: str | None = None, high_reason: str | None = None,
                 cfg: FilterConfig = DEFAULT_CONFIG) -> None:
        super().__init__(cfg=cfg)
        if score not in {f.name for f in dataclasses.fields(DocumentStats)}:
            raise ValueError(f"ScoreRangeFilter {name!r}: unknown score {score!r}")
        self.name, self.score, self.minimum, self.maximum = name, score, minimum, maximum
        self.low_reason, self.high_reason = low_reason or name, high_reason or name

    def check(self, stats: DocumentStats) -> bool | tuple[bool, str]:
        value = getattr(stats, self.score)
        if self.minimum is not None and value < self.minimum:
            return False, self.low_reason
        if self.maximum is not None and value > self.maximum:
            return False, self.high_reason
        return True

    def __repr__(self) -> str:
        return f"ScoreRangeFilter(name={self.name!r}, {self.minimum} <= {self.score} <= {self.maximum})"


class LanguageFilter(DocumentFilter):
    """Keeps documents in one of `cfg.languages` (if set) with langid probability >= the minimum."""

    name = "doc_language"

    def check(self, stats: DocumentStats) -> bool | tuple[bool, str]:
        if self.cfg.languages is not None and stats.language not in self.cfg.languages:
            return False, "doc_language"
        if stats.language_score < self.cfg.min_language_score:
            return False, "doc_language_score"
        return True


def document_filters(cfg: FilterConfig = DEFAULT_CONFIG) -> list[Filter]:
    """The document filters in order. Language comes before the English-only ones (stop words,
    punctuation, top word, article order, content-word repetition) so that a French page is
    counted as `doc_language`, not as `doc_stop_word_ratio`."""
    def rng(name: str, score: str, lo: float | None, hi: float | None, low: str | None = None,
            high: str | None = None) -> ScoreRangeFilter:
        return ScoreRangeFilter(name=name, score=score, minimum=lo, maximum=hi, low_reason=low,
                                high_reason=high, cfg=cfg)

    return [
        rng("doc_image_count", "image_count", cfg.doc_min_images, cfg.doc_max_images,
            "doc_too_few_images", "doc_too_many_images"),
        rng("doc_word_count", "word_count", cfg.doc_min_words, cfg.doc_max_words,
            "doc_too_few_words", "doc_too_many_words"),
        rng("doc_mean_word_length", "mean_word_length", cfg.min_mean_word_length, cfg.max_mean_word_length),
        rng("doc_symbol_word_ratio", "symbol_word_ratio", None, cfg.max_symbol_word_ratio),
        rng("doc_alpha_word_ratio", "alpha_word_ratio", cfg.min_alpha_word_ratio, None),
        rng("doc_duplicate_lines", "duplicate_line_fraction", None, cfg.max_duplicate_line_fraction),
        rng("doc_char_repetition", "char_repetition", None, cfg.max_char_repetition),
        rng("doc_word_repetition", "word_repetition", None, cfg.max_word_repetition),
        rng("doc_special_char_ratio", "special_char_ratio", None, cfg.max_special_char_ratio),
        rng("doc_symbol_runs", "symbol_run_ratio", None, cfg.max_symbol_run_ratio),
        rng("doc_uppercase_words", "uppercase_word_ratio", None, cfg.max_uppercase_word_ratio),
        LanguageFilter(cfg=cfg),
        rng("doc_stop_word_ratio", "stop_word_ratio", cfg.min_stop_word_ratio, None),
        rng("doc_punctuation_ratio", "punctuation_ratio", cfg.min_punctuation_ratio, None),
        rng("doc_top_word_fraction", "top_word_fraction", None, cfg.max_top_word_fraction),
        rng("doc_article_disorder", "article_disorder", None, cfg.max_article_disorder),
        rng("doc_content_word_repetition", "content_word_repetition", cfg.min_content_word_repetition, None),
    ]


# ----------------------------------------------------------------------------------------------
# Whole-document application


@functools.lru_cache(maxsize=16)
def _filter_chains(cfg: FilterConfig) -> tuple[tuple[Filter, ...], tuple[Filter, ...], tuple[Filter, ...]]:
    """The image, paragraph and document filters of `cfg` without the corpus-wide ones, built once
    per configuration (the steps hold only thresholds)."""
    return tuple(image_filters(cfg)), tuple(paragraph_filters(cfg)), tuple(document_filters(cfg))


def apply_filters(doc: Document, cfg: FilterConfig = DEFAULT_CONFIG, counter: Counter | None = None, *,
                  frequent_image_urls: Collection[str] | None = None,
                  boilerplate_paragraphs: Collection[str] | None = None,
                  known_stats: DocumentStats | None = None,
                  ) -> tuple[Document | None, str | None]:
    """Run node filters (dropping nodes) then document filters (dropping the document).

    Returns `(kept_document, None)` or `(None, reason)`. Every drop, node or document, is counted
    as `counter[reason] += 1`. The kept document is a new `Document` with the surviving nodes,
    `language` set to the detected language and `metadata["filter_scores"] = document_scores`.
    `frequent_image_urls` (normalised URLs) and `boilerplate_paragraphs` (`paragraph_key`s for this
    document's domain) come from the pipeline's cross-document counts; omit them to skip those checks.
    Video nodes are kept untouched.

    `known_stats`: the `DocumentStats` of `doc`'s text under `cfg`, when the caller has them (a
    document judged before, see `judged_stats`). If no text node is dropped the text is unchanged,
    so they are reused with only the image count updated, instead of scoring the text again.
    """
    counter = counter if counter is not None else Counter()
    img_steps, text_steps, doc_steps = _filter_chains(cfg)
    if frequent_image_urls:
        img_steps = [*img_steps, FrequentImageFilter(frequent_urls=frequent_image_urls)]
    if boilerplate_paragraphs:
        text_steps = [BoilerplateParagraphFilter(keys=boilerplate_paragraphs), *text_steps]
    # The word counts of all paragraphs in one pass (the word-count filter reads them from
    # `word_count`'s memo).
    word_counts([node.text for node in doc.nodes if isinstance(node, TextNode) and node.kind == "paragraph"])
    nodes: list[Node] = []
    text_changed = False
    for node in doc.nodes:
        if isinstance(node, ImageNode):
            if run_filters(img_steps, node, counter) is not None:
                continue
        elif isinstance(node, TextNode):
            if not node.text.strip() or run_filters(text_steps, node, counter) is not None:
                text_changed = True
                continue
        nodes.append(node)
    kept = Document(url=doc.url, nodes=nodes, title=doc.title, language=doc.language,
                    metadata=dict(doc.metadata), dropped_images=dict(doc.dropped_images))
    if known_stats is not None and not text_changed:
        stats = dataclasses.replace(known_stats, image_count=len(kept.images))
    else:
        # scored lazily: the filters read only the scores up to the first that drops the document
        stats = _TextScores(judged_text(kept, cfg), len(kept.images), cfg)
    reason = run_filters(doc_steps, stats, counter)
    if reason is not None:
        return None, reason
    if isinstance(stats, _TextScores):
        stats = stats.stats()
    kept.language = stats.language
    kept.metadata["filter_scores"] = stats.scores()
    return kept, None


# ----------------------------------------------------------------------------------------------
# After download (img2dataset)


def is_single_colour(image: Any) -> bool:
    """True if a PIL image has one colour only (every band's min == max)."""
    extrema = image.getextrema()
    if extrema and not isinstance(extrema[0], tuple):  # single-band image: (min, max)
        extrema = (extrema,)
    return all(lo == hi for lo, hi in extrema)


def downloaded_image_filter(width: int, height: int, fmt: str, is_single_colour: bool, *,
                            cfg: FilterConfig = DEFAULT_CONFIG) -> Verdict:
    """Judge a downloaded, decoded image (FL rules). `fmt` is the decoded format (PIL's "JPEG",
    "PNG", "WEBP" or an extension); returns True or (False, reason)."""
    fmt_norm = fmt.lower().lstrip(".")
    fmt_norm = {"jpeg": "jpg", "jpe": "jpg", "jfif": "jpg"}.get(fmt_norm, fmt_norm)
    allowed = {{"jpeg": "jpg"}.get(f, f) for f in cfg.image_formats}
    if fmt_norm not in allowed:
        return False, "image_download_format"
    if min(width, height) < cfg.download_min_side:
        return False, "image_download_too_small"
    if max(width, height) > cfg.image_max_side:
        return False, "image_download_too_large"
    if max(width, height) / min(width, height) > cfg.download_max_aspect_ratio:
        return False, "image_download_aspect_ratio"
    if cfg.drop_single_colour and is_single_colour:
        return False, "image_single_colour"
    return True
