"""The extractor measures each page once and keeps the figures up to date through removals;
they must equal a fresh measurement of the pruned tree (else scoring silently drifts)."""

from __future__ import annotations

import pytest
from flamboyance.preprocess import extract
from flamboyance.preprocess.extract import DEFAULT_CONFIG, _Effects, _Flags, _Page, _prepare, _Stats
from test_extract_content import ARTICLE

NESTED = ("<html><head><title>Nested</title></head><body><div class='wrap'>"
          "<article><header><h1>Nested</h1><p class='byline'>By A. Writer</p>"
          "<figure><img src='/lead.jpg'><figcaption>Lead, with commas, here</figcaption></figure></header>"
          "<p>Text with <a href='#n1'>an anchor <span class='hidden' hidden>gone</span> link</a>, more, text.</p>"
          "<div class='share-bar'><a href='/s'>Share</a></div><div><p>Block, one.</p>Loose <b>inline</b></div>"
          "<ul><li><a href='/x'>related <em style='display:none'>hidden</em></a></li></ul></article>"
          "<aside><p>Aside, text.</p></aside><footer>Foot</footer></div></body></html>")


@pytest.mark.parametrize("html", [ARTICLE, NESTED], ids=["article", "nested"])
@pytest.mark.parametrize("flags", [_Flags(), _Flags(False, False, False)], ids=["strict", "relaxed"])
def test_maintained_statistics_equal_a_fresh_measurement(html, flags):
    page = _Page(html, "https://example.org/a.html", DEFAULT_CONFIG)
    root = page.parse()
    page._read_head(root)
    body = root.find("body")
    kept = _prepare(body, flags, page.title, _Effects())
    fresh = _Stats(body)
    assert set(fresh.text) <= set(kept.text)
    for el in fresh.text:
        assert (kept.text[el], kept.commas[el], kept.block[el]) == (fresh.text[el], fresh.commas[el], fresh.block[el])
        assert kept.link[el] == pytest.approx(fresh.link[el])


def test_detailed_counts_follow_removals():
    root = extract.etree.fromstring(
        b"<div><ul><li>a</li><li>b</li></ul><p>x, y</p><div><img src='i.png'><h2>Head</h2></div></div>",
        extract._parser())
    content = root.find(".//body/div")
    stats = _Stats(content, detailed=True)
    inner = content.find("div")
    assert stats.counts[content][extract._C_IMG] == 1
    assert stats.counts[content][extract._C_HEADING_TEXT] == 4
    stats.remove(inner, content)
    extract._drop(inner)
    fresh = _Stats(content, detailed=True)
    assert stats.counts[content] == fresh.counts[content]
    assert (stats.text[content], stats.commas[content]) == (fresh.text[content], fresh.commas[content])
