"""Filters: one test per drop reason on literal inputs, keep cases, configurable thresholds."""

from collections import Counter

import pytest
from flamboyance.preprocess.dedup import normalize_url, paragraph_key
from flamboyance.preprocess.document import Document, ImageNode, TextNode, VideoNode
from flamboyance.preprocess.filters import (
    DEFAULT_CONFIG,
    FilterConfig,
    apply_filters,
    char_repetition_ratio,
    document_filters,
    document_scores,
    downloaded_image_filter,
    image_filters,
    is_single_colour,
    paragraph_filters,
    text_stats,
    word_repetition_ratio,
    words_of,
)
from flamboyance.preprocess.language import detect_language
from flamboyance.preprocess.steps import run_filters

GOOD = [
    "The red circle sits in the middle of the picture, and it is surrounded by a thin blue line.",
    "Our team visited the museum last weekend, and we were surprised by how many paintings were on display.",
    "After lunch we walked along the river to the old bridge, where a small market sells fresh bread.",
    "The guide explained the history of each painting, and the children asked many questions about the artists.",
    "In the evening we had dinner at a little restaurant near the harbour, where the fish was excellent.",
    "On the last day it rained, so we stayed inside and read books about the places we had seen.",
]
PHOTO = ImageNode(url="https://example.com/img/photo.jpg", width=640, height=480)


def doc_of(*paragraphs, images=(PHOTO,)):
    return Document(url="https://example.com/page", nodes=[*images, *(TextNode(text=p) for p in paragraphs)])


def doc_reason(*paragraphs, cfg=DEFAULT_CONFIG, images=(PHOTO,)):
    counter = Counter()
    kept, reason = apply_filters(doc_of(*paragraphs, images=images), cfg, counter)
    assert (kept is None) == (reason is not None)
    if reason is not None:
        assert counter == Counter({reason: 1})
    return reason


def image_reason(image, cfg=DEFAULT_CONFIG):
    counter = Counter()
    reason = run_filters(image_filters(cfg), image, counter)
    assert counter == (Counter({reason: 1}) if reason else Counter())
    return reason


# ---------------------------------------------------------------- keep


def test_good_document_is_kept_with_scores_and_language():
    doc = Document(url="https://example.com/page", title="A day out", metadata={"warc": "x.warc.gz"},
                   nodes=[TextNode(text=GOOD[0]), PHOTO, TextNode(text=GOOD[1]),
                          ImageNode(url="https://example.com/img/b.png"), *(TextNode(text=p) for p in GOOD[2:])])
    counter = Counter()
    kept, reason = apply_filters(doc, DEFAULT_CONFIG, counter)
    assert reason is None and counter == Counter()
    assert kept.nodes == doc.nodes and kept.title == "A day out" and kept.language == "en"
    assert kept.metadata["warc"] == "x.warc.gz"
    assert kept.metadata["filter_scores"] == document_scores(doc)
    assert kept.metadata["filter_scores"]["word_count"] == 109.0
    assert kept.metadata["filter_scores"]["image_count"] == 2.0
    assert doc.metadata == {"warc": "x.warc.gz"}  # input untouched


def test_good_image_urls_are_kept():
    for url in ["https://example.com/img/photo.jpg", "https://example.com/img/photo.WEBP",
                "https://example.com/iconic-moments/team.png", "https://cdn.example.com/get?id=42",
                "https://example.com/img/photo.jpeg?w=800"]:
        assert image_reason(ImageNode(url=url, width=800, height=600)) is None, url
    assert image_reason(ImageNode(url="https://example.com/a.jpg")) is None  # unknown size passes


def test_node_filters_drop_nodes_and_count_reasons():
    doc = Document(url="https://example.com/page", nodes=[
        ImageNode(url="https://example.com/static/logo.png"),
        TextNode(text="Menu"),  # paragraph with 1 word
        TextNode(text="Menu", kind="heading"),  # headings are not word-count filtered
        PHOTO,
        ImageNode(url="https://example.com/a.gif"),
        VideoNode(sources=("https://example.com/v.mp4",)),
        *(TextNode(text=p) for p in GOOD),
        ImageNode(url="https://example.com/small.jpg", width=100, height=100),
    ])
    counter = Counter()
    kept, reason = apply_filters(doc, DEFAULT_CONFIG, counter)
    assert reason is None
    assert counter == Counter({"image_boilerplate_url": 1, "paragraph_too_few_words": 1,
                               "image_bad_format": 1, "image_too_small": 1})
    assert kept.nodes == [doc.nodes[2], PHOTO, doc.nodes[5], *doc.nodes[6:12]]


# ---------------------------------------------------------------- image reasons


def test_image_tracking_pixel_declared_1x1():
    assert image_reason(ImageNode(url="https://example.com/t.gif", width=1, height=1)) == "image_tracking_pixel"


def test_image_tracking_pixel_known_tracker():
    assert image_reason(ImageNode(url="https://www.facebook.com/tr?id=1&ev=PageView")) == "image_tracking_pixel"
    assert image_reason(ImageNode(url="https://stats.g.doubleclick.net/x.jpg")) == "image_tracking_pixel"
    assert image_reason(ImageNode(url="https://example.com/trackingPixel.jpg")) == "image_tracking_pixel"


def test_image_bad_format():
    assert image_reason(ImageNode(url="https://example.com/anim.gif", width=400, height=300)) == "image_bad_format"
    assert image_reason(ImageNode(url="data:image/svg+xml;base64,PHN2Zz4=")) == "image_bad_format"


def test_image_boilerplate_url():
    for url in ["https://example.com/static/logo.png", "https://example.com/icons/share.png",
                "https://example.com/wp-content/plugins/x/img.jpg", "https://example.com/img/siteLogo.jpg",
                "https://example.com/buy_button_2x.png"]:
        assert image_reason(ImageNode(url=url, width=400, height=300)) == "image_boilerplate_url", url


def test_image_too_small():
    assert image_reason(ImageNode(url="https://example.com/a.jpg", width=149, height=400)) == "image_too_small"
    assert image_reason(ImageNode(url="https://example.com/a.jpg", height=100)) == "image_too_small"


def test_image_too_large():
    assert image_reason(ImageNode(url="https://example.com/a.jpg", width=20001, height=15000)) == "image_too_large"


def test_image_aspect_ratio():
    assert image_reason(ImageNode(url="https://example.com/a.jpg", width=900, height=300)) == "image_aspect_ratio"
    assert image_reason(ImageNode(url="https://example.com/a.jpg", width=600, height=300)) is None  # exactly 2


def test_image_frequent_url():
    frequent = {normalize_url("https://example.com/banner.jpg")}
    steps = image_filters(DEFAULT_CONFIG, frequent_image_urls=frequent)
    counter = Counter()
    assert run_filters(steps, ImageNode(url="HTTPS://EXAMPLE.com/banner.jpg#x"), counter) == "image_frequent_url"
    assert run_filters(steps, PHOTO, counter) is None
    assert counter == Counter({"image_frequent_url": 1})


# ---------------------------------------------------------------- paragraph reasons


def test_paragraph_too_few_words():
    counter = Counter()
    assert run_filters(paragraph_filters(), TextNode(text="Read more here."), counter) == "paragraph_too_few_words"
    assert run_filters(paragraph_filters(), TextNode(text="Read more here.", kind="caption"), counter) is None
    assert run_filters(paragraph_filters(), TextNode(text="Read more here now."), counter) is None
    assert counter == Counter({"paragraph_too_few_words": 1})


def test_paragraph_too_many_words():
    text = " ".join(["word"] * 1001)
    assert run_filters(paragraph_filters(), TextNode(text=text)) == "paragraph_too_many_words"
    assert run_filters(paragraph_filters(), TextNode(text=text, kind="table")) is None


def test_paragraph_boilerplate():
    footer = "Copyright 2024 Example Media. All rights reserved."
    steps = paragraph_filters(boilerplate_paragraphs={paragraph_key(footer)})
    assert run_filters(steps, TextNode(text="copyright 2025 example media.  all rights reserved.")) == \
        "paragraph_boilerplate"
    assert run_filters(steps, TextNode(text=GOOD[0])) is None


def test_repeated_caption_is_not_paragraph_boilerplate():
    caption = "A small red circle on a white background."
    steps = paragraph_filters(boilerplate_paragraphs={paragraph_key(caption)})
    assert run_filters(steps, TextNode(text=caption, kind="caption")) is None
    assert run_filters(steps, TextNode(text=caption)) == "paragraph_boilerplate"


# ---------------------------------------------------------------- document reasons


def test_doc_too_few_images():
    assert doc_reason(*GOOD, images=()) == "doc_too_few_images"


def test_doc_too_few_images_after_node_filtering():
    counter = Counter()
    kept, reason = apply_filters(doc_of(*GOOD, images=(ImageNode(url="https://example.com/logo.png"),)),
                                 DEFAULT_CONFIG, counter)
    assert kept is None and reason == "doc_too_few_images"
    assert counter == Counter({"image_boilerplate_url": 1, "doc_too_few_images": 1})


def test_doc_too_many_images():
    images = [ImageNode(url=f"https://example.com/img/{i}.jpg") for i in range(31)]
    assert doc_reason(*GOOD, images=images) == "doc_too_many_images"
    assert doc_reason(*GOOD, images=images[:30]) is None


def test_doc_too_few_words():
    assert doc_reason("The cat sat on the mat.") == "doc_too_few_words"


def test_doc_too_many_words():
    paragraph = " ".join(GOOD * 6)  # 654 words
    # the cap bounds the cost of one document; it is far above any real page (long pages are kept)
    assert DEFAULT_CONFIG.doc_max_words == 100_000
    assert doc_reason(*[paragraph] * 153) == "doc_too_many_words"  # 100,062 words
    assert doc_reason(paragraph, paragraph, paragraph, paragraph, cfg=FilterConfig(doc_max_words=2000)) == \
        "doc_too_many_words"


def test_doc_mean_word_length():
    assert doc_reason("I am at it, so we go on by my ox. Is he in? Ok, we do go up.") == "doc_mean_word_length"


def test_doc_symbol_word_ratio():
    text = "We loved the trip to the coast this year and here are the tags: #travel #summer #beach #sea #sun."
    assert doc_reason(text) == "doc_symbol_word_ratio"


def test_doc_alpha_word_ratio():
    assert doc_reason("The scores were 12 15 18 20 22 25 30 and the final was 35 to 40 in the end.") == \
        "doc_alpha_word_ratio"


def test_doc_duplicate_lines():
    # 4 of 7 lines repeat an earlier one (> 0.5); 2 of 6 (Gopher's 0.3 would drop it) is kept
    assert doc_reason(GOOD[0], GOOD[1], GOOD[0], GOOD[1], GOOD[0], GOOD[1], GOOD[2]) == "doc_duplicate_lines"
    assert doc_reason(GOOD[0], GOOD[1], GOOD[0], GOOD[2], GOOD[1], GOOD[3],
                      cfg=FilterConfig(max_word_repetition=1.0)) is None


def test_doc_char_repetition():
    # character-level repetition without repeated word 5-grams (those are `doc_word_repetition`)
    text = " ".join(f"{w} wooooooooooow," for w in (GOOD[0] + " " + GOOD[1]).split())
    assert doc_reason(text) == "doc_char_repetition"


def test_doc_word_repetition():
    s = GOOD
    assert doc_reason(s[0] + " " + s[1] + " " + s[2], s[3] + " " + s[4] + " " + s[5], s[0] + " " + s[3],
                      s[1] + " " + s[4], s[2] + " " + s[5]) == "doc_word_repetition"


def test_doc_special_char_ratio():
    text = ("The model v1.2.3 (build 2024-05-06) ran at 45.6% load; id:7788/x=42, cpu:99% & ram:3.5GB "
            "(peak 7.9GB) at t=12:30:45 on node-17 [rack-4].")
    assert doc_reason(text) == "doc_special_char_ratio"


def test_doc_language():
    text = ("Nous sommes allés au musée le week-end dernier, et nous avons été surpris par le nombre de "
            "tableaux exposés. Le guide a expliqué l'histoire de chaque tableau.")
    assert doc_reason(text) == "doc_language"


def test_doc_language_score():
    text = "The guide said it: Hotel Central, Plaza Mayor, Calle Real, Puerta del Sol, Museo del Prado."
    lang, prob = detect_language(text)
    assert prob < 0.8
    assert doc_reason(text, cfg=FilterConfig(languages=None)) == "doc_language_score"
    assert doc_reason(text, cfg=FilterConfig(languages=(lang,), min_language_score=0.5)) == "doc_stop_word_ratio"


def test_doc_stop_word_ratio():
    text = "Shoes, sneakers, boots, sandals, leather, running, trail, hiking, winter, summer, sale, discount."
    assert doc_reason(text) == "doc_stop_word_ratio"


def test_doc_punctuation_ratio():
    text = ("we went to the park and then we had lunch with our friends in the garden near the lake and it "
            "was a lovely day for all of us")
    assert doc_reason(text) == "doc_punctuation_ratio"


# ---------------------------------------------------------------- scores and config


def test_score_definitions_on_literals():
    assert words_of("Hello, World! 2024 -- it's (fine).") == ["hello", "world", "it's", "fine"]
    assert word_repetition_ratio(list("abcdeabcde"), 5) == 2 / 6  # "abcde" twice among 6 5-grams
    assert char_repetition_ratio("ab" * 10, 10) == 6 / 11  # 2 distinct 10-grams (6 + 5), k = 1
    assert char_repetition_ratio("short", 10) == 0.0
    stats = text_stats("Hello there.\nHello there.\nBye now...", image_count=2)
    assert stats.duplicate_line_fraction == 1 / 3
    assert stats.symbol_word_ratio == 1 / 6
    assert stats.image_count == 2 and stats.word_count == 6
    assert stats.punctuation_ratio == 5 / 11  # 6 word tokens, 5 punctuation tokens (". . . . .")


def test_thresholds_are_configurable():
    assert doc_reason(*GOOD, cfg=FilterConfig(doc_min_words=200)) == "doc_too_few_words"
    assert doc_reason(*GOOD, cfg=FilterConfig(doc_max_images=0, doc_min_images=0)) == "doc_too_many_images"
    assert doc_reason(*GOOD, cfg=FilterConfig(min_stop_word_ratio=0.6)) == "doc_stop_word_ratio"
    short = "The black cat slept on the warm mat."
    assert doc_reason(short) == "doc_too_few_words"
    assert doc_reason(short, cfg=FilterConfig(doc_min_words=5)) is None
    loose = FilterConfig(image_min_side=50, image_max_aspect_ratio=4.0, image_formats=("jpg", "GIF"),
                         image_boilerplate_words=())
    assert image_reason(ImageNode(url="https://example.com/logo.gif", width=60, height=200), loose) is None
    assert image_reason(ImageNode(url="https://example.com/a.jpg", width=60, height=300), loose) == \
        "image_aspect_ratio"
    strict_paragraphs = FilterConfig(paragraph_min_words=20)
    assert run_filters(paragraph_filters(strict_paragraphs), TextNode(text=GOOD[0])) == "paragraph_too_few_words"


def test_config_checks():
    with pytest.raises(ValueError, match="document words"):
        FilterConfig(doc_min_words=100, doc_max_words=10)
    with pytest.raises(ValueError, match="max_char_repetition"):
        FilterConfig(max_char_repetition=1.5)
    with pytest.raises(ValueError, match="image_max_aspect_ratio"):
        FilterConfig(image_max_aspect_ratio=0.5)
    with pytest.raises(TypeError):
        FilterConfig(10)  # keyword-only


def test_document_filters_accept_documents_directly():
    steps = document_filters()
    assert all(step(doc_of(*GOOD)) is True for step in steps)
    assert steps[1](doc_of("Too short.")) == (False, "doc_too_few_words")


# ---------------------------------------------------------------- after download


class _FakeImage:
    def __init__(self, extrema):
        self.extrema = extrema

    def getextrema(self):
        return self.extrema


def test_downloaded_image_filter():
    assert downloaded_image_filter(640, 480, "JPEG", False) is True
    assert downloaded_image_filter(64, 64, "png", False) is True
    assert downloaded_image_filter(640, 480, "GIF", False) == (False, "image_download_format")
    assert downloaded_image_filter(63, 480, "WEBP", False) == (False, "image_download_too_small")
    assert downloaded_image_filter(20001, 9000, "JPEG", False) == (False, "image_download_too_large")
    assert downloaded_image_filter(961, 320, "JPEG", False) == (False, "image_download_aspect_ratio")
    assert downloaded_image_filter(640, 480, "JPEG", True) == (False, "image_single_colour")
    assert downloaded_image_filter(640, 480, "JPEG", True, cfg=FilterConfig(drop_single_colour=False)) is True


def test_is_single_colour():
    from PIL import Image

    assert is_single_colour(Image.new("RGB", (8, 8), (200, 10, 10)))
    img = Image.new("RGB", (8, 8), (200, 10, 10))
    img.putpixel((3, 3), (0, 0, 0))
    assert not is_single_colour(img)
    assert is_single_colour(Image.new("L", (4, 4), 7))
    assert not is_single_colour(_FakeImage(((0, 0), (0, 1))))


def test_apply_filters_with_cross_document_sets():
    footer = "Subscribe to our newsletter for more stories every week."
    banner = ImageNode(url="https://example.com/img/banner.jpg?utm_source=x", width=700, height=400)
    doc = Document(url="https://example.com/page",
                   nodes=[banner, PHOTO, TextNode(text=footer, kind="list_item"), *(TextNode(text=p) for p in GOOD)])
    counter = Counter()
    kept, reason = apply_filters(doc, DEFAULT_CONFIG, counter,
                                 frequent_image_urls={normalize_url("https://example.com/img/banner.jpg")},
                                 boilerplate_paragraphs={paragraph_key(footer)})
    assert reason is None
    assert counter == Counter({"image_frequent_url": 1, "paragraph_boilerplate": 1})
    assert kept.nodes == [PHOTO, *(TextNode(text=p) for p in GOOD)]
