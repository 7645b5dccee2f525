"""The vectorised filter statistics, MinHash and language features against plain reference
implementations (the straightforward definitions), on random texts with small and large alphabets."""

from __future__ import annotations

import hashlib
import math
import random
import re
import sys
import unicodedata
from collections import Counter

import numpy as np
import pytest
from flamboyance.preprocess import dedup, filters, language
from flamboyance.preprocess.filters import (
    PUNCTUATION,
    STOP_WORDS,
    char_repetition_ratio,
    text_stats,
    word_count,
    word_counts,
    word_repetition_ratio,
    words_of,
)

ALPHABETS = [
    "ab ",
    "abcdefghij klmnop\n",
    "The quick brown fox, jumps over... the lazy dog! 0123456789 #'’“”—…\n\t",
    "aäbcçdeéfghiİjklmnoöpqrsßtuüvwxyz ABCÄÖÜ .,;:!?…'_-©®™¹²½ﬁ"
    "\u0301\u00a0\u2009\u3000\x1c\x85\u2028",
    "".join(chr(c) for c in range(0x20, 0x250)) + " \n",  # a few hundred distinct characters
    "日本語のテキスト、漢字とかなカナ。Русский текст. "
    "😀👍🏽 مرحبا हिन्दी ",
]


def random_texts(count: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "a", "\n\n", "ab" * 40, "x" * 25]
    for alphabet in ALPHABETS:
        for _ in range(count):
            pool = alphabet if rng.random() < 0.5 else rng.sample(alphabet, min(len(alphabet), 12))
            piece = "".join(rng.choice(pool) for _ in range(rng.randint(1, 60)))
            texts.append(" ".join(piece if rng.random() < 0.5 else rng.choice(ALPHABETS[2].split())
                                  for _ in range(rng.randint(1, 40))))
    return texts


# ---------------------------------------------------------------- references (the definitions)


def ref_is_special(ch: str) -> bool:
    return unicodedata.category(ch)[0] not in "LM"


def ref_words(text: str) -> list[str]:
    out = []
    for token in text.lower().split():
        token = token.strip("".join(ch for ch in set(token) if ref_is_special(ch)))
        if token:
            out.append(token)
    return out


def ref_char_repetition(text: str, n: int) -> float:
    grams = Counter(text[i:i + n] for i in range(len(text) - n + 1))
    if not grams:
        return 0.0
    freqs = sorted(grams.values(), reverse=True)
    k = min(math.isqrt(len(freqs)), sum(f > 1 for f in freqs))
    return sum(freqs[:k]) / (len(text) - n + 1)


def ref_word_repetition(words: list[str], n: int) -> float:
    if len(words) < n:
        return 0.0
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return sum(f for f in counts.values() if f > 1) / (len(words) - n + 1)


def ref_stats(text: str) -> dict[str, float]:
    words = ref_words(text)
    tokens = text.split()
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    punct = re.findall(r"[\w']+|[" + re.escape(PUNCTUATION) + "]", text)
    return {
        "word_count": len(words),
        "mean_word_length": sum(map(len, words)) / len(words) if words else 0.0,
        "alpha_word_ratio": sum(any(c.isalpha() for c in t) for t in tokens) / len(tokens) if tokens else 0.0,
        "duplicate_line_fraction": (len(lines) - len(set(lines))) / len(lines) if lines else 0.0,
        "char_repetition": ref_char_repetition(text, 10),
        "word_repetition": ref_word_repetition(words, 5),
        "special_char_ratio": sum(map(ref_is_special, text)) / len(text) if text else 0.0,
        "stop_word_ratio": sum(w in STOP_WORDS for w in words) / len(words) if words else 0.0,
        "punctuation_ratio": sum(t in PUNCTUATION for t in punct) / len(punct) if punct else 0.0,
    }


def test_lower_casing_keeps_character_classes():
    """The filters classify the characters of a text, not of its lower-cased form: valid because
    lower-casing maps special characters to special ones, whitespace to whitespace, and others to
    others (checked over all of Unicode, for this Python's Unicode database)."""
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        lowered = ch.lower()
        if lowered != ch:
            assert all(ref_is_special(c) == ref_is_special(ch) for c in lowered), hex(code)
            assert all(c.isspace() == ch.isspace() for c in lowered), hex(code)


@pytest.mark.parametrize("text", random_texts())
def test_text_stats_match_the_definitions(text):
    stats = text_stats(text)
    for name, value in ref_stats(text).items():
        assert getattr(stats, name) == value, name
    assert words_of(text) == ref_words(text)
    assert word_count(text) == len(ref_words(text))


def test_word_counts_of_many_texts():
    texts = [t for t in random_texts(seed=1) if t]
    assert word_counts(texts) == [len(ref_words(t)) for t in texts]
    assert word_counts([]) == []


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 13])
def test_repetition_ratios_match_the_definitions(n):
    for text in random_texts(6, seed=n):
        assert char_repetition_ratio(text, n) == ref_char_repetition(text, n)
        words = text.split()
        assert word_repetition_ratio(words, n) == ref_word_repetition(words, n)


def test_ngram_keys_renumber_large_alphabets():
    rng = np.random.default_rng(0)
    for base in (2, 84, 85, 300, 70000):
        ranks = rng.integers(0, base, 3000)
        ranks[1000:1500] = ranks[:500]  # repeats
        for n in (1, 4, 10, 16):
            keys = filters._ngram_keys(ranks, base, n)
            grams = [tuple(ranks[i:i + n]) for i in range(len(ranks) - n + 1)]
            first: dict = {}
            assert all(first.setdefault(g, k) == k for g, k in zip(grams, keys.tolist()))
            assert len(set(keys.tolist())) == len(set(grams))


# ---------------------------------------------------------------- MinHash


def ref_splitmix(x: int) -> int:
    m = (1 << 64) - 1
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & m
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def ref_signature(text: str, num_perm: int, ngram: int, seed: int) -> list[int]:
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())
    hashes = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in words]
    shingles = set()
    for i in range(max(len(words) - ngram + 1, 1) if words else 0):
        acc = 0
        for h in hashes[i:i + ngram]:
            acc = ref_splitmix(acc ^ h)
        shingles.add(acc)
    m = (1 << 64) - 1
    base = (seed * 0x9E3779B97F4A7C15) & m
    keys = [ref_splitmix(((i * 0x9E3779B97F4A7C15) + base) & m) for i in range(1, num_perm + 1)]
    return [min((ref_splitmix(s ^ a) for s in shingles), default=m) for a in keys]


EXTRA_TEXTS = ["a «quoted» word — and ‘more’…", "x\ud800y z"]


@pytest.mark.parametrize("text", random_texts(3, seed=7) + EXTRA_TEXTS)
def test_minhash_matches_the_definition(text):
    for num_perm, ngram, seed in [(112, 5, 1), (16, 2, 7), (3, 1, 0)]:
        assert dedup.minhash_signature(text, num_perm=num_perm, ngram=ngram, seed=seed).tolist() == \
            ref_signature(text, num_perm, ngram, seed)


def test_minhash_of_long_text_spans_several_blocks():
    words = [f"w{i % 997}" for i in range(5000)]
    text = " ".join(words)
    assert dedup.minhash_signature(text, num_perm=20).tolist() == ref_signature(text, 20, 5, 1)


def test_minhash_words_with_many_separators_fall_back_to_the_regex():
    text = " ".join(f"a{chr(0x2190 + i)}b" for i in range(dedup._MAX_SEPARATORS + 10))  # arrows
    assert dedup._words(text) == [w.encode() for w in re.findall(r"\w+", text.lower())]


# ---------------------------------------------------------------- language


@pytest.mark.parametrize("text", random_texts(2, seed=3))
def test_language_features_are_langids(text):
    identifier = language._identifier()
    data = " ".join(text.split()).encode("utf-8", "surrogatepass")
    dense = np.asarray(identifier.instance2fv(data))
    indices, counts = language._feature_counts(language._automaton(), data)
    assert indices.tolist() == np.flatnonzero(dense).tolist()
    assert counts.tolist() == dense[indices].astype(np.uint32).tolist()


def test_identifier_cache(tmp_path, monkeypatch):
    from langid.langid import model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = language._model_cache_path(model)
    assert path.parent == tmp_path / "flamboyance" and not path.exists()
    slow = language._load_model(path)
    assert slow is None
    language._identifier.cache_clear()
    language._automaton.cache_clear()
    try:
        first = language._identifier()  # slow path, writes the cache
        assert path.exists() and not list(path.parent.glob("*.tmp"))
        cached = language._load_model(path)
        assert cached is not None
        for name in ("nb_ptc", "nb_pc"):
            assert np.array_equal(getattr(cached, name), getattr(first, name))
            assert getattr(cached, name).dtype == getattr(first, name).dtype
        assert cached.nb_classes == first.nb_classes and cached.tk_output == first.tk_output
        assert cached.tk_nextmove == first.tk_nextmove and cached.nb_numfeats == first.nb_numfeats
        text = "Der schnelle braune Fuchs springt über den faulen Hund."
        assert cached.classify(text) == first.classify(text)

        # a later process reads the file
        language._identifier.cache_clear()
        calls = []
        monkeypatch.setattr(language, "_load_model", lambda p: calls.append(p) or cached)
        assert language._identifier() is cached and calls == [path]
        monkeypatch.undo()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

        # a corrupt file falls back to the model string (and is rewritten)
        path.write_bytes(b"not a zip file")
        assert language._load_model(path) is None
        language._identifier.cache_clear()
        language._automaton.cache_clear()
        again = language._identifier()
        assert again.classify(text) == first.classify(text)
        assert language._load_model(path) is not None
        assert language.detect_language(text)[0] == "de"

        # an unwritable cache directory is no error
        blocker = tmp_path / "file"
        blocker.write_text("x")
        monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
        language._identifier.cache_clear()
        language._automaton.cache_clear()
        assert language._identifier().classify(text) == first.classify(text)
    finally:
        language._identifier.cache_clear()
        language._automaton.cache_clear()


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert language.cache_dir() == tmp_path / "flamboyance"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert language.cache_dir().parts[-2:] == (".cache", "flamboyance")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert language.cache_dir().parts[-2:] == (".cache", "flamboyance")


# ---------------------------------------------------------------- lazy document scores, memoised keys


def _doc(texts: list[str], images: int) -> filters.Document:
    nodes: list = [filters.TextNode(text=t) for t in texts]
    nodes += [filters.ImageNode(url=f"https://example.com/img{i}.jpg", width=400, height=300)
              for i in range(images)]
    return filters.Document(url="https://example.com/page", nodes=nodes)


ENGLISH = ("The quick brown fox jumps over the lazy dog, and then it runs back home to its den. "
           "It was a very good day for all of the animals that live in the forest near the river.")


@pytest.mark.parametrize("doc", [
    _doc([ENGLISH, ENGLISH.upper()], 2),                       # kept
    _doc([ENGLISH], 0),                                        # doc_too_few_images
    _doc([ENGLISH * 15] * 5, 1),                               # doc_too_many_words
    _doc(["Le renard brun saute par-dessus le chien paresseux et rentre chez lui ce soir."] * 2, 1),
    _doc(["#### ... ... ... #### word word word word word word word"], 1),
    _doc(["short"], 1),
])
def test_lazy_scores_judge_like_the_full_stats(doc, monkeypatch):
    """`apply_filters` reads the scores lazily; its verdict, counts and stored scores are those of
    the full `document_stats`, and a document dropped for its images never reaches langid."""
    cfg = filters.FilterConfig()
    kept_nodes = filters.Document(url=doc.url, nodes=[n for n in doc.nodes if not isinstance(n, filters.TextNode)
                                                      or cfg.paragraph_min_words <= filters.word_count(n.text)
                                                      <= cfg.paragraph_max_words])
    full = filters.document_stats(kept_nodes, cfg)
    expected_reason = filters.run_filters(filters.document_filters(cfg), full)
    counter: Counter = Counter()
    kept, reason = filters.apply_filters(doc, cfg, counter)
    assert reason == expected_reason and (reason is None or counter[reason] == 1)
    if kept is not None:
        assert kept.metadata["filter_scores"] == full.scores() and kept.language == full.language
    scores = filters._TextScores(kept_nodes.text("\n"), len(kept_nodes.images), cfg)
    assert scores.stats() == full
    if not kept_nodes.images:
        monkeypatch.setattr(filters, "detect_language", lambda text: pytest.fail("langid called"))
        assert filters.apply_filters(doc, cfg)[1] == "doc_too_few_images"


@pytest.mark.parametrize("text", random_texts(4, seed=11))
def test_tokens_having_finds_each_tokens_first_match(text):
    ids = filters._char_ids(text)  # registers new characters (and grows _ID_FLAGS) first
    flags = filters._ID_FLAGS[ids]
    space = (flags & filters._F_SPACE).astype(bool)
    has = (flags & filters._F_ALPHA).astype(bool)
    expected = []
    for token in re.finditer(r"\S+", text):
        first = next((i for i in range(token.start(), token.end()) if has[i]), None)
        if first is not None and not space[first]:
            expected.append(first)
    assert filters._tokens_having(space, has).tolist() == expected


def ref_paragraph_key(text: str) -> str:
    norm = re.sub(r"\d", "0", " ".join(unicodedata.normalize("NFKC", text).lower().split()))
    return hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest() if norm else ""


def ref_normalize(url: str) -> str:
    try:
        return dedup.normalize_url.__wrapped__(url)
    except ValueError:
        return url.strip()


def test_memoised_text_and_url_keys_match_the_definitions():
    texts = random_texts(3, seed=5) + ["© 2023 Example", "© 2024 Example", "ﬁ ＡＢＣ １２３", "\u0661\u0662 x"]
    for _ in range(2):  # second round from the memos
        assert [dedup.paragraph_key(t) for t in texts] == [ref_paragraph_key(t) for t in texts]
    urls = ["https://Example.com:443/a?utm_source=x&b=2&a=1#f", "https://example.com/img.jpg",
            "relative/path.jpg", "http://[::1", "  https://www.example.com  "]
    doc = filters.Document(url="https://example.com/", nodes=[
        *[filters.TextNode(text=t) for t in texts[:8]], *[filters.ImageNode(url=u) for u in urls]])
    parts = [("T" + " ".join(unicodedata.normalize("NFKC", n.text).lower().split()))
             if isinstance(n, filters.TextNode) else "I" + ref_normalize(n.url) for n in doc.nodes]
    parts = [p for p in parts if p != "T"]
    expected_hash = hashlib.blake2b("\x1e".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    expected_set = hashlib.blake2b("\n".join(sorted({ref_normalize(u) for u in urls})).encode(),
                                   digest_size=16).hexdigest()
    for _ in range(2):
        assert dedup.content_hash(doc) == expected_hash
        assert dedup.image_set_key(doc) == expected_set
        for bad in ("relative/path.jpg", "http://[::1"):  # failures are raised every time
            with pytest.raises(ValueError):
                dedup.normalize_url(bad)


def test_lsh_band_keys_match_the_definition():
    signature = dedup.minhash_signature(ENGLISH)
    expected = [f"{band:02d}:" + hashlib.blake2b(b"".join(int(v).to_bytes(8, "little")
                                                           for v in signature[band * 8:(band + 1) * 8]),
                                                 digest_size=8).hexdigest() for band in range(14)]
    assert dedup.lsh_band_keys(signature) == expected


def test_lazy_scores_in_any_order_register_new_characters_first():
    text = "".join(chr(c) for c in range(0x1E00, 0x1E40)) + " new letters, 1 2 3."
    scores = filters._TextScores(text, 0, filters.FilterConfig())
    assert scores.punctuation_ratio == text_stats(text).punctuation_ratio
    assert scores.stats() == text_stats(text)


CASE_AND_ARTICLE_TOKENS = ["the", "The", "THE", "a", "A", "an", "An", "AN", "of", "they", "dog", "DOG", "Dog", "x",
                           "ǅemal", "ǄEMAL", "ÀÉÎ", "straße", "STRASSE", "ǆ", "Ⅻ", "ⓐⓑ", "ΣΑΣ", "i̇", "_A", "A1B",
                           "--", "-", "’", "'", "'the", "the-", "the’", ".", ",", "!", "?", ";", "!!!!", "----", "…",
                           "####", "''''", "’’’’", "~~~", "___", "a.", "the,", "an!", "0000", "\n", "\t", "\u00a0"]


def case_and_article_texts(count: int = 60, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    texts = ["", "a", "the", "The end.", "AB", "A", "!!!!", "the the the", "a\n", "an"]
    for _ in range(count):
        tokens = [rng.choice(CASE_AND_ARTICLE_TOKENS) for _ in range(rng.randint(1, 80))]
        glue = [rng.choice([" ", " ", " ", "", "\n"]) for _ in tokens]
        texts.append("".join(t + g for t, g in zip(tokens, glue)))
    return texts + random_texts(3, seed=7)


@pytest.mark.parametrize("text", case_and_article_texts())
def test_case_article_and_symbol_scores_match_their_regex_definitions(text):
    """The array versions of the upper-case word ratio, article disorder and symbol runs give
    exactly what the regular expressions that define them give."""
    letters = filters._LETTER_WORD_RE.findall(text)
    upper = sum(map(str.isupper, letters)) / len(letters) if letters else 0.0
    articles = len(filters._ARTICLE_RE.findall(text))
    disorder = len(filters._BROKEN_ARTICLE_RE.findall(text)) / articles if articles >= 1 else 0.0
    runs = sum(len(m.group(0)) for m in filters._SYMBOL_RUN_RE.finditer(text)) / len(text) if text else 0.0
    scores = filters._TextScores(text, 0, filters.FilterConfig())
    assert scores.uppercase_word_ratio == upper
    assert filters.article_disorder(text, min_articles=1) == disorder
    assert scores.symbol_run_ratio == runs
