"""Language identification with `langid` (its model ships inside the PyPI package).

Scores are normalised probabilities (`norm_probs=True`), so the OBELICS cut-off "language score
>= 0.8" means what it says. The identifier is built once per process and cached.

`detect_language` gives langid's answer (same language, same probability) at a fraction of the
cost of `LanguageIdentifier.classify`: the byte automaton's states are found with whole-array
operations instead of a byte-by-byte walk (see `_feature_counts`), only the features the text
actually has enter the naive Bayes product (langid multiplies a dense count vector into its
7480 x 97 float32 table, which numpy first converts whole to float64), and only the leading
languages' probabilities are normalised.

Building the identifier means base64-decoding, bz2-decompressing and unpickling langid's model
string (about 1.2 s), in every process. The decoded arrays are therefore also kept as an
uncompressed `.npz` in the user's cache directory (`$XDG_CACHE_HOME/flamboyance/`, default
`~/.cache/flamboyance/`), named by a hash of the model string, so later processes load them in
milliseconds. The cache is best effort: an unwritable directory or an unreadable file means the
slow path, never an error, and the identifier is the same either way.
"""

from __future__ import annotations

import array
import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

import numpy as np

UNKNOWN_LANGUAGE = "und"
"""ISO 639 code for 'undetermined': returned for text without any letters."""

_CACHE_FORMAT = 1
"""Version of the cached file's layout (part of its name)."""


def cache_dir() -> Path:
    """This package's per-user cache directory: `$XDG_CACHE_HOME/flamboyance` (an absolute
    XDG_CACHE_HOME only, as the XDG spec asks), else `~/.cache/flamboyance`."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "flamboyance"


def _model_cache_path(model: bytes) -> Path:
    digest = hashlib.blake2b(model, digest_size=16).hexdigest()
    return cache_dir() / f"langid-{digest}-v{_CACHE_FORMAT}.npz"


def _model_arrays(identifier) -> dict[str, np.ndarray]:
    """The identifier's model as plain arrays (`tk_output`, a dict state -> tuple of feature
    indices, as the states, their output counts and the concatenated outputs)."""
    outputs = identifier.tk_output
    return {
        "nb_ptc": np.asarray(identifier.nb_ptc),
        "nb_pc": np.asarray(identifier.nb_pc),
        "nb_classes": np.array(list(identifier.nb_classes), dtype=str),
        "tk_nextmove": np.frombuffer(identifier.tk_nextmove, dtype=np.uint16),
        "out_states": np.fromiter(outputs.keys(), dtype=np.int64, count=len(outputs)),
        "out_counts": np.fromiter(map(len, outputs.values()), dtype=np.int64, count=len(outputs)),
        "out_features": np.array([f for features in outputs.values() for f in features], dtype=np.int64),
    }


def _store_model(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache file atomically (a temporary file in the same directory, then
    `os.replace`), so a concurrent reader sees the whole file or none; errors are ignored."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp",
                                         delete=False) as handle:
            tmp = handle.name
            np.savez(handle, **arrays)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _load_model(path: Path):
    """The identifier from a cache file, or None if there is none or it is unusable."""
    from langid.langid import LanguageIdentifier

    try:
        with np.load(path, allow_pickle=False) as data:
            nb_ptc, nb_pc, nb_classes = data["nb_ptc"], data["nb_pc"], data["nb_classes"].tolist()
            nextmove, states = data["tk_nextmove"], data["out_states"].tolist()
            counts, features = data["out_counts"].tolist(), data["out_features"].tolist()
    except Exception:  # noqa: BLE001 -- missing, truncated or corrupt: any failure means "no cache"
        return None
    if (nb_ptc.ndim != 2 or nb_ptc.shape[1] != len(nb_pc) or len(nb_classes) != len(nb_pc)
            or nextmove.dtype != np.uint16 or len(nextmove) % 256 or len(states) != len(counts)
            or sum(counts) != len(features) or any(not 0 <= f < len(nb_ptc) for f in features)):
        return None
    outputs: dict[int, tuple[int, ...]] = {}
    start = 0
    for state, count in zip(states, counts):
        outputs[state] = tuple(features[start:start + count])
        start += count
    tk_nextmove = array.array("H")
    tk_nextmove.frombytes(nextmove.tobytes())
    return LanguageIdentifier(nb_ptc, nb_pc, len(nb_ptc), nb_classes, tk_nextmove, outputs, norm_probs=True)


@functools.cache
def _identifier():
    """langid's `LanguageIdentifier` (normalised probabilities), from the cache file when there
    is a usable one, else from langid's model string (and then cached for the next process)."""
    from langid.langid import LanguageIdentifier, model

    path = _model_cache_path(model)
    identifier = _load_model(path)
    if identifier is None:
        identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        _store_model(path, _model_arrays(identifier))
    return identifier


class _Automaton(NamedTuple):
    """langid's byte automaton in array form, for `_feature_counts`."""

    nextmove: np.ndarray
    """(state << 8) + byte -> next state (langid's `tk_nextmove`, as uint16)."""
    depth: int
    """Length of the longest feature (the automaton's deepest state)."""
    out_start: np.ndarray
    """State -> start of its features in `out_features`."""
    out_count: np.ndarray
    """State -> number of features it emits."""
    out_features: np.ndarray
    """The features emitted by every state, concatenated."""


@functools.cache
def _automaton() -> _Automaton:
    identifier = _identifier()
    nextmove = np.frombuffer(identifier.tk_nextmove, dtype=np.uint16)
    table = nextmove.reshape(-1, 256)
    # Breadth-first depths: a state's depth is the length of the shortest input reaching it.
    seen = np.zeros(len(table), dtype=bool)
    seen[0] = True
    frontier, depth = np.array([0]), 0
    while True:
        reached = np.zeros(len(table), dtype=bool)
        reached[table[frontier]] = True
        frontier = np.flatnonzero(reached & ~seen)
        if not len(frontier):
            break
        seen[frontier] = True
        depth += 1
    out_count = np.zeros(len(table), dtype=np.intp)
    out_start = np.zeros(len(table), dtype=np.intp)
    features: list[int] = []
    for state, emitted in identifier.tk_output.items():
        out_start[state], out_count[state] = len(features), len(emitted)
        features.extend(emitted)
    return _Automaton(nextmove, max(depth, 1), out_start, out_count, np.array(features, dtype=np.intp))


def _feature_counts(automaton: _Automaton, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """langid's feature vector of `data` in sparse form: sorted feature indices and their counts.

    langid walks its automaton byte by byte and adds up the features each state emits. The
    automaton recognises byte n-grams up to `depth` long (an Aho-Corasick machine), so its state
    after a byte is the longest suffix, among the feature prefixes, of the input so far; that
    suffix lies within the last `depth` bytes, so walking just those bytes from the start state
    reaches the same state. Every position's state is thus `depth` whole-array lookups away, and
    the counts are those of langid: each state's features times the number of times it is reached.
    """
    nextmove, depth = automaton.nextmove, automaton.depth
    codes = np.frombuffer(data, dtype=np.uint8).astype(np.intp)
    walk = nextmove[codes]  # walk[i]: the state after reading codes[i:i + 1] from the start
    states = [walk[:1]]
    for k in range(1, depth):
        walk = nextmove[(walk[:-1].astype(np.intp) << 8) + codes[k:]]  # ... codes[i:i + k + 1]
        if k < depth - 1:
            states.append(walk[:1])  # the state after the first k + 1 bytes
    states.append(walk)  # the state after byte i + depth - 1, for every i
    visits = np.bincount(np.concatenate(states))
    reached = np.flatnonzero(visits)
    counts = automaton.out_count[reached]
    reached, counts = reached[counts > 0], counts[counts > 0]
    # the features of every reached state, each weighted by the state's visits
    ends = np.cumsum(counts)
    firsts = automaton.out_start[reached] - (ends - counts)  # out_start minus the slots before
    slots = np.arange(ends[-1] if len(ends) else 0) + np.repeat(firsts, counts)
    dense = np.bincount(automaton.out_features[slots], weights=np.repeat(visits[reached], counts))
    indices = np.flatnonzero(dense)
    return indices, dense[indices].astype(np.uint32)


def detect_language(text: str) -> tuple[str, float]:
    """Return `(iso_639_1_code, probability)` of the most likely language of `text`.

    Newlines are folded to spaces first. Text without a single letter gives `("und", 0.0)`.
    """
    if not any(ch.isalpha() for ch in text):
        return UNKNOWN_LANGUAGE, 0.0
    identifier = _identifier()
    indices, counts = _feature_counts(_automaton(), " ".join(text.split()).encode("utf-8"))
    log_probs = np.dot(counts, identifier.nb_ptc[indices]) + identifier.nb_pc  # (languages,)
    # langid normalises every row of exp(log_probs[None, :] - log_probs[:, None]) and takes the
    # argmax; only rows within reach of the maximum can win, so only those are computed (same
    # formula, same summation order: the same floats).
    candidates = np.flatnonzero(log_probs >= log_probs.max() - 64.0)
    probs = [1 / np.exp(log_probs - log_probs[i]).sum() for i in candidates]
    best = int(np.argmax(probs))
    return str(identifier.nb_classes[candidates[best]]), float(probs[best])


FUNCTION_WORDS: dict[str, frozenset[str]] = {lang: frozenset(words.split()) for lang, words in {
    "en": "the of and to with for from by this that these those was were his her their its are has have had "
          "who which after during into about over under been being they she you it",
    "fr": "le la les des du et est une pour dans sur avec au aux qui que ce cette pas sont par",
    "de": "der die das und ist nicht mit von für auf ein eine den dem im zu bei sich des",
    "es": "el la los las del y en que por con para una un es al se su",
    "it": "il lo la gli le di del della e che per con una un è nel alla dei delle",
    "pt": "o os as da do das dos e que em para com um uma não no na",
    "nl": "de het een en van op met voor niet zijn bij aan naar ook wordt",
    "pl": "i w z na do się że nie jest to",
    "tr": "ve bir bu ile için da de",
    "id": "dan yang di ini itu dengan untuk",
    "ms": "dan yang di ini itu dengan untuk",
    "sv": "och att det som en på är av för med till",
    "da": "og at det som en på er af for med til",
    "no": "og at det som en på er av for med til",
}.items()}
"""A few function words of common Latin-script languages, lower-case: evidence of the language
that proper names (the bulk of short captions: "Benoit Tessier/Reuters") do not give."""
_WORD_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def latin_fraction(text: str) -> float:
    """Fraction of the letters of `text` that are Latin script (ASCII letters and the Latin
    Unicode blocks); 1.0 for text without letters."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for ch in letters if ch < "\u0250" or "\u1e00" <= ch <= "\u1eff") / len(letters)


def short_text_language_ok(text: str, languages: Collection[str], *, min_score: float = 0.9) -> bool:
    """Whether a short text (a caption, a title) may be in one of `languages`.

    langid alone misjudges short texts made mostly of names ("Albert Einstein's business
    focus" -> de 0.99999), so a text is judged to be in another language only on evidence: langid
    names a language outside `languages` with probability >= `min_score`, and the text has a
    function word of that language (`FUNCTION_WORDS`) and none of the wanted languages'. A text
    whose letters are mostly in another script than Latin is not in a Latin-script language
    whatever langid says (a Russian caption for English): with only Latin-script `languages` it
    is judged by script alone. Text without letters is not judged (True).
    """
    if not any(ch.isalpha() for ch in text):
        return True
    if latin_fraction(text) < 0.5:
        # mostly another script: a script says enough even for one word ("Москва"); when a wanted
        # language is itself not Latin-script, langid decides
        if all(code in _LATIN_LANGUAGES for code in languages):
            return False
        lang, score = detect_language(text)
        return lang in languages or score < min_score
    lang, score = detect_language(text)
    if lang in languages or score < min_score:
        return True
    words = {w.lower() for w in _WORD_RE.findall(text)}
    if any(words & FUNCTION_WORDS.get(code, frozenset()) for code in languages):
        return True
    return not words & FUNCTION_WORDS.get(lang, frozenset())


_LATIN_LANGUAGES = frozenset(FUNCTION_WORDS) | frozenset(
    "af az br bs ca cs cy eo et eu fi fo ga gl hr ht hu is jv ku la lb lt lv mg mt nb nn oc qu ro rw sk sl sq sw "
    "tl vi vo wa xh zu".split())
"""ISO 639-1 codes of langid's languages written in Latin script."""
