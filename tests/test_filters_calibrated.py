"""The calibrated document filters: each new drop reason on a small literal document, the score
definitions on literals, and long documents kept."""

from collections import Counter

from flamboyance.preprocess.document import Document, TextNode
from flamboyance.preprocess.filters import (
    DEFAULT_CONFIG,
    FilterConfig,
    apply_filters,
    article_disorder,
    content_word_repetition,
    document_filters,
    judged_text,
    text_stats,
    top_word_fraction,
    words_of,
)
from flamboyance.preprocess.steps import run_filters

# Six ordinary English sentences (kept by every filter).
STORY = [
    "The red circle sits in the middle of the picture, and it is surrounded by a thin blue line.",
    "Our team visited the museum last weekend, and we were surprised by how many paintings were on display.",
    "After lunch we walked along the river to the old bridge, where a small market sells fresh bread.",
    "The guide explained the history of each painting, and the children asked many questions about the artists.",
    "In the evening we had dinner at a little restaurant near the harbour, where the fish was excellent.",
    "On the last day it rained, so we stayed inside and read books about the places we had seen.",
]
NO_IMAGES = FilterConfig(doc_min_images=0)


def reason(*paragraphs: str, cfg: FilterConfig = NO_IMAGES) -> str | None:
    counter: Counter = Counter()
    doc = Document(url="https://example.com/a", nodes=[TextNode(text=p) for p in paragraphs])
    kept, why = apply_filters(doc, cfg, counter)
    assert (kept is None) == (why is not None)
    assert counter == (Counter({why: 1}) if why else Counter())
    return why


def test_ordinary_prose_is_kept():
    assert reason(*STORY) is None


def test_thresholds_are_the_calibrated_ones():
    assert (DEFAULT_CONFIG.doc_max_words, DEFAULT_CONFIG.min_stop_word_ratio, DEFAULT_CONFIG.max_word_repetition,
            DEFAULT_CONFIG.max_duplicate_line_fraction, DEFAULT_CONFIG.max_char_repetition,
            DEFAULT_CONFIG.max_special_char_ratio, DEFAULT_CONFIG.min_alpha_word_ratio) == \
        (100_000, 0.2, 0.3, 0.5, 0.2, 0.4, 0.7)


def test_long_document_is_not_dropped_for_its_length():
    # 3,600 words (over the old 2,000 cap): the word-count filter alone keeps it
    stats = text_stats("\n".join(["word " * 300] * 12))
    assert stats.word_count == 3600
    word_count_filter = next(f for f in document_filters() if f.name == "doc_word_count")
    assert run_filters([word_count_filter], stats) is None


def test_stop_word_ratio_between_old_and_new_threshold_is_kept():
    # a news brief dense in names: 0.25 of its words are stop words (OBELICS' 0.35 dropped it)
    text = ("Reuters reported that Barclays, HSBC and Lloyds shares fell sharply on Monday after regulators "
            "in London announced new capital rules for British lenders, analysts at Morgan Stanley said.")
    assert 0.2 <= text_stats(text).stop_word_ratio < 0.35
    assert reason(text) is None


def test_doc_symbol_runs():
    text = " ".join(f"★★★★★★★★★★ {s} ==========" for s in STORY[:3])
    assert reason(text) == "doc_symbol_runs"


def test_doc_uppercase_words():
    assert reason(*(s.upper() for s in STORY)) == "doc_uppercase_words"


def test_doc_top_word_fraction():
    # a real paragraph with "shoes" stuffed after it: 22 of 120 words
    words = (STORY[0] + " " + STORY[1] + " " + STORY[2] + " " + STORY[3] + " " + STORY[4]).split()
    stuffed = " ".join(words + ["best", "shoes", "for", "cheap", "shoes", "online", "with", "our", "shoes"] * 8)
    assert 0.1 < top_word_fraction(words_of(stuffed))
    assert reason(stuffed, cfg=FilterConfig(doc_min_images=0, max_word_repetition=1.0, max_char_repetition=1.0)) \
        == "doc_top_word_fraction"


def test_doc_article_disorder():
    # the words of real sentences, shuffled: "the" meets "of", "and", a full stop ...
    shuffled = ("Circle the red of sits middle in the the picture and, it by is a surrounded the line thin blue. "
                "Team the our museum visited the weekend last and the were surprised we the by a paintings the. "
                "Lunch after the walked we along river the to old the bridge, where a market small sells a bread.")
    assert article_disorder(shuffled) > 0.1
    assert reason(shuffled) == "doc_article_disorder"


def test_doc_content_word_repetition():
    # grammar kept, every content word a different dictionary word: no topic comes back
    nouns = iter("""apple bridge candle dragon engine forest garden harbour island jacket kettle lantern meadow
        needle orchard pepper quartz ribbon saddle ticket umbrella valley wagon yacht zebra anchor basket cactus
        dolphin feather glacier hammer igloo jungle kayak lemon mirror nickel oyster parrot quiver rocket spider
        tunnel violin walnut anvil beacon cobalt desert falcon goblet helmet ivory jigsaw kernel ladder marble
        nectar olive pillow quill raven shovel timber velvet whistle yogurt zipper amber bamboo cedar denim
        ember fossil gravel hazel indigo juniper koala lilac mango nutmeg onyx pebble quinoa radish saffron
        thistle turnip vapor willow yarrow zinc acorn biscuit copper daisy eagle fig""".split())
    sentences = [f"The {next(nouns)} of the {next(nouns)} and a {next(nouns)} in the {next(nouns)} with "
                 f"the {next(nouns)}." for _ in range(20)]  # 100 content words, each once
    assert content_word_repetition(words_of(" ".join(sentences))) == 0.0
    assert reason(*sentences) == "doc_content_word_repetition"


def test_score_definitions_on_literals():
    assert article_disorder("the of the. " * 4, min_articles=10) == 0.0  # 8 articles: not judged
    assert article_disorder("The cat saw the dog and a bird in the tree near an owl. " * 2) == 0.0
    # 12 articles: "the of", "a." and "an and" break (3 per copy)
    assert article_disorder("The cat saw the of dog and a. Then an and bird. " * 3) == 9 / 12
    assert article_disorder("A: yes. A: no. " * 6) == 0.0  # a capital "A" (answers, grades) is not counted
    assert top_word_fraction(["shoes"] * 30 + ["the"] * 70) == 0.3
    assert top_word_fraction(["shoes"] * 30) == 0.0  # under 100 words: not judged
    assert content_word_repetition(["cat"] * 99) == 1.0  # under one window: not judged
    assert content_word_repetition(["cat", "dog"] * 50 + ["bird", "fish", "frog", "newt"] * 25) == 1.0
    window = ["cat", "dog"] * 10 + [f"word{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(80)]
    assert content_word_repetition(window) == 0.2
    stats = text_stats("Hello WORLD, this is NASA. ===== ok")
    assert stats.uppercase_word_ratio == 2 / 6  # WORLD, NASA of Hello WORLD this is NASA ok
    assert stats.symbol_run_ratio == 5 / len("Hello WORLD, this is NASA. ===== ok")


def test_code_blocks_are_left_out_of_the_judged_text_when_prose_is_the_larger_part():
    def code(lines: int) -> TextNode:
        return TextNode(text="\n".join(f"    value_{i} = compute(value_{i - 1}) * 2;  # {'=' * 12}"
                                       for i in range(lines)), kind="preformatted")

    prose = [TextNode(text=s) for s in STORY]  # 111 words
    tutorial = Document(url="https://example.com/t", nodes=[*prose, code(30)])  # 90 words of code
    assert judged_text(tutorial) == "\n".join(STORY)
    assert apply_filters(tutorial, NO_IMAGES)[1] is None
    listing = Document(url="https://example.com/l", nodes=[prose[0], code(60)])  # mostly code: judged whole
    assert judged_text(listing) == listing.text("\n")
    assert apply_filters(listing, NO_IMAGES)[1] == "doc_symbol_word_ratio"  # a "#" per line
