"""Hostile input: every page gives a document or an ExtractionError with a reason, in bounded time."""

from __future__ import annotations

import dataclasses
import random
import time

import pytest
from flamboyance.preprocess import ExtractConfig, ExtractionError, extract_document
from flamboyance.preprocess.document import TextNode

URL = "http://hostile.example/page.html"
TOP = "Top paragraph, written before the hostile part begins, with enough words to count."


def timed(html, config: ExtractConfig | None = None, *, bound: float):
    """Run the extractor; return (document or ExtractionError, seconds) and enforce the time bound."""
    started = time.perf_counter()
    try:
        result = extract_document(html, URL, **({"config": config} if config else {}))
    except ExtractionError as exc:
        result = exc
    seconds = time.perf_counter() - started
    assert seconds < bound, f"took {seconds:.1f}s (bound {bound}s)"
    return result


@pytest.mark.parametrize("html", [b"", "", "   \n\t ", b"\n\n"])
def test_empty_input_is_rejected_as_empty(html):
    result = timed(html, bound=1)
    assert isinstance(result, ExtractionError)
    assert result.reason == "empty"


def test_oversized_input_is_rejected_before_parsing():
    config = ExtractConfig(max_bytes=1000)
    for html in ("<p>" + "a" * 1000 + "</p>", b"<p>" + b"a" * 1000 + b"</p>"):
        result = timed(html, config, bound=1)
        assert isinstance(result, ExtractionError)
        assert result.reason == "too_large"
        assert "max_bytes=1000" in str(result)


def test_text_node_over_10_mb_is_not_silently_dropped():
    # libxml2 without huge_tree returns an EMPTY tree for a text node over 10 MB.
    words = "word " * (2_100_000)  # 10.5 MB in one text node
    html = f"<html><body><p>{words}</p></body></html>"
    rejected = timed(html, bound=5)
    assert isinstance(rejected, ExtractionError) and rejected.reason == "too_large"
    doc = timed(html, ExtractConfig(max_bytes=16 * 2**20), bound=30)
    assert len(doc.nodes) == 1
    assert doc.nodes[0].text == words.strip()


def test_100k_deep_nesting():
    html = f"<html><body><p>{TOP}</p>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "</body></html>"
    doc = timed(html, bound=20)
    # The parser stops nesting at its depth limit; what it kept is extracted, nothing crashes.
    assert doc.nodes == [TextNode(text=TOP)]
    only_deep = "<html><body>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "</body></html>"
    result = timed(only_deep, bound=20)
    assert isinstance(result, ExtractionError) and result.reason == "no_main_content"


def test_100k_img_tags_are_capped():
    html = f"<html><body><p>{TOP}</p>" + "".join(f'<img src="/i/{i}.jpg">' for i in range(100_000)) + "</body></html>"
    doc = timed(html, bound=40)
    assert len(doc.images) == 1000
    assert doc.images[0].url == "http://hostile.example/i/0.jpg"
    assert doc.images[-1].url == "http://hostile.example/i/999.jpg"
    assert doc.metadata["images_dropped"] == 99_000
    assert doc.nodes[0] == TextNode(text=TOP)


def test_element_count_cap():
    html = "<html><body>" + "<span>x</span>" * 5000 + "</body></html>"
    result = timed(html, ExtractConfig(max_elements=1000), bound=5)
    assert isinstance(result, ExtractionError) and result.reason == "too_many_nodes"


def test_random_bytes_never_crash():
    rng = random.Random(1234)
    reasons = set()
    for size in (1, 7, 100, 5000, 50_000):
        for _ in range(3):
            data = bytes(rng.randrange(256) for _ in range(size))
            result = timed(data, bound=10)
            if isinstance(result, ExtractionError):
                reasons.add(result.reason)
            else:
                assert result.nodes, "a document is never empty"
    assert reasons <= {"empty", "no_main_content", "unparseable"}


def test_markup_soup_never_crashes():
    soups = ["<", "<<<>>>", "</p></div></body>", "<html><body><p>unclosed <b><i>tags, nested, here",
             "<?xml version='1.0' encoding='latin-1'?><p>xml declaration in a str, with words</p>",
             "<p>nul\x00bytes\x00inside the paragraph text</p>", "<svg><p>inside svg</p></svg>",
             "<table>" * 500 + "cell" + "</table>" * 500, "<script>" + "x" * 1000]
    for soup in soups:
        result = timed(soup, bound=5)
        assert isinstance(result, ExtractionError) or result.nodes
    assert timed("<p>nul\x00bytes\x00inside the paragraph text</p>", bound=5).text() == \
        "nulbytesinside the paragraph text"


def test_non_html_input_type_is_a_type_error():
    with pytest.raises(TypeError, match="must be str or bytes"):
        extract_document(12345, URL)  # type: ignore[arg-type]


def test_config_is_a_frozen_keyword_only_dataclass():
    with pytest.raises(TypeError):
        ExtractConfig(1000)  # type: ignore[misc]
    config = ExtractConfig(max_bytes=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_bytes = 20  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_bytes must be >= 1"):
        ExtractConfig(max_bytes=0)
    with pytest.raises(ValueError, match="max_images must be >= 0"):
        ExtractConfig(max_images=-1)


def test_deeply_nested_layout_tables():
    # Conditional cleaning asks "is this a data table?" of every ancestor: memoised, so linear.
    level = "<table><tr><td><div>Nested words, here, and there <a href='/x'>link</a>"
    html = "<html><body>" + level * 300 + "</div></td></tr></table>" * 300 + "</body></html>"
    doc = timed(html, bound=15)
    assert doc.nodes == [TextNode(text="Nested words, here, and there link")] * 300


@pytest.mark.parametrize("wrapper", ["div", "div class='caption'", "form", "section class='share'", "td"])
def test_big_text_under_deep_nesting_is_linear(wrapper):
    # Every rule reads text sizes from one bottom-up pass; re-reading each level's subtree text
    # would be 1,500 x 1.8 MB here.
    tag = wrapper.split()[0]
    words = "word, " * 300_000
    html = f"<html><body>{f'<{wrapper}>' * 1500}<p>{words}</p>{f'</{tag}>' * 1500}</body></html>"
    doc = timed(html, bound=20)
    assert doc.nodes == [TextNode(text=words.strip())]
