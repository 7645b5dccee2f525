"""Language identification: langid's exact answer, the bounded prefix, and the fast word count."""

from __future__ import annotations

import pytest
from flamboyance.preprocess.filters import FilterConfig, text_stats, word_count, words_of
from flamboyance.preprocess.language import UNKNOWN_LANGUAGE, _identifier, detect_language

TEXTS = [
    "The quick brown fox jumps over the lazy dog while the children watch from the garden.",
    "Le renard brun rapide saute par-dessus le chien paresseux pendant que les enfants regardent.",
    "Der schnelle braune Fuchs springt über den faulen Hund, während die Kinder zuschauen.",
    "素早い茶色の狐が怠け者の犬を飛び越える。",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "ok",
    "a\nb\tc  d",
    "mixed English text avec un peu de français und ein bisschen Deutsch " * 20,
]


@pytest.mark.parametrize("text", TEXTS)
def test_detect_language_is_langids_answer(text: str) -> None:
    expected = _identifier().classify(" ".join(text.split()))
    assert detect_language(text) == (str(expected[0]), float(expected[1]))


def test_text_without_letters_is_undetermined() -> None:
    assert detect_language("1234 -- 5678 !!") == (UNKNOWN_LANGUAGE, 0.0)


def test_language_reads_a_bounded_prefix() -> None:
    english = "The gardeners planted a row of young apple trees along the old stone wall this spring. "
    french = "Les jardiniers ont planté une rangée de jeunes pommiers le long du vieux mur de pierre. "
    text = english * 4 + french * 40
    cut = len(english) * 4
    assert detect_language(text[:cut])[0] == "en" and detect_language(text)[0] == "fr"
    short = text_stats(text, cfg=FilterConfig(language_max_chars=cut))
    assert (short.language, short.language_score) == detect_language(text[:cut])
    full = text_stats(text, cfg=FilterConfig(language_max_chars=len(text)))
    assert (full.language, full.language_score) == detect_language(text)
    with pytest.raises(ValueError, match="language_max_chars"):
        FilterConfig(language_max_chars=0)


@pytest.mark.parametrize("text", ["", "  ", "-- 2023 --", "Hello, world!", "İstanbul ÇAĞ naïve e\u0301",
                                  "«quoted» (paren) x\u00a0y\u3000z", "a...b … #tag", "日本語 テキスト。"])
def test_word_count_matches_words_of(text: str) -> None:
    assert word_count(text) == len(words_of(text))


def test_known_stats_are_reused_only_while_the_text_is_unchanged() -> None:
    from collections import Counter

    from flamboyance.preprocess.dedup import paragraph_key
    from flamboyance.preprocess.document import Document, ImageNode, TextNode
    from flamboyance.preprocess.filters import apply_filters, judged_stats

    body = ("The gardeners planted a row of young apple trees along the old stone wall, and they "
            "watered them every evening until the first leaves appeared in the spring.")
    more = ("By the end of summer the branches were heavy with fruit, so the whole village came "
            "to help with the harvest and to share a long lunch under the trees.")
    footer = "Subscribe to our newsletter for more stories about gardens and the people who tend them."
    doc = Document(url="http://example.com/a", nodes=[
        TextNode(text=body), ImageNode(url="http://example.com/a.jpg"), TextNode(text=more),
        ImageNode(url="http://example.com/b.jpg"), TextNode(text=footer)])
    judged, reason = apply_filters(doc)
    assert reason is None and judged_stats(judged) is not None and judged_stats(doc) is None
    for extra in ({"frequent_image_urls": {"http://example.com/b.jpg"}},
                  {"boilerplate_paragraphs": {paragraph_key(footer)}}):
        plain, fast = Counter(), Counter()
        expected = apply_filters(judged, counter=plain, **extra)
        assert apply_filters(judged, counter=fast, known_stats=judged_stats(judged), **extra) == expected
        assert plain == fast and expected[0] is not None
    assert apply_filters(judged, frequent_image_urls={"http://example.com/b.jpg"})[0].metadata[
        "filter_scores"]["image_count"] == 1.0
