"""Main-content extraction on literal pages: boilerplate removed, text normalised, page order kept."""

from __future__ import annotations

import pytest
from flamboyance.preprocess import ExtractionError, extract_document
from flamboyance.preprocess.document import Document, ImageNode, TextNode

PAGE_URL = "https://www.example.org/news/festival.html"

ARTICLE = """<!DOCTYPE html>
<html lang="en-GB">
<head>
  <meta charset="utf-8">
  <title>The River Festival Returns | Daily Example</title>
  <base href="https://cdn.example.org/assets/">
  <script>var tracking = "do not extract me";</script>
  <style>p { color: red; }</style>
</head>
<body>
  <header class="site-header">
    <a href="/"><img src="logo.png" class="site-logo" alt="Daily Example"></a>
    <nav><ul><li><a href="/news">News</a></li><li><a href="/sport">Sport</a></li></ul></nav>
  </header>
  <div id="cookie-banner">We use cookies to improve your experience. <button>Accept all</button></div>
  <main>
    <article class="story">
      <h1>The River Festival Returns</h1>
      <p class="byline">By Jane Doe</p>
      <p>The river festival returned to the old harbour this weekend, drawing thousands of visitors,
         boats and musicians from across the region.</p>
      <figure>
        <img src="data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="
             data-src="photos/boats.jpg" width="800" height="600" alt="Boats on the river">
        <figcaption>Boats gathered at the harbour on Saturday.</figcaption>
      </figure>
      <p>Organisers said the   crowds were the largest since the festival began, with
         food stalls, concerts and a night-time lantern parade along the water.</p>
      <h2>A night of lanterns</h2>
      <p>More than two hundred lanterns floated down the river, each one decorated by a local school, club
         or family.</p>
      <picture>
        <source srcset="/media/lanterns-800.webp 800w, /media/lanterns-1600.webp 1600w" type="image/webp">
        <img srcset="lanterns-small.jpg 480w, lanterns-large.jpg 1200w" alt="Lanterns">
      </picture>
      <ul>
        <li>Saturday: boat parade and concerts on the quay.</li>
        <li>Sunday: lantern parade, fireworks and the closing ceremony.</li>
      </ul>
      <p>The festival will return next summer, the council confirmed on Monday evening.</p>
      <div class="share-tools"><a href="https://twitter.com/share">Share on Twitter</a>
        <a href="https://facebook.com/share">Share on Facebook</a></div>
    </article>
    <section id="comments"><h3>Comments</h3>
      <p>Great festival, we loved the boats and the music, see you next year everyone!</p></section>
  </main>
  <aside class="sidebar"><h3>Most read</h3><ul>
    <li><a href="/a">Another story about something else entirely</a></li>
    <li><a href="/b">Yet another story nobody asked for here</a></li></ul></aside>
  <div style="display:none"><p>Hidden text that must never appear in the document at all.</p></div>
  <footer><p>Copyright 2026 Daily Example. All rights reserved. Contact us at the usual address.</p></footer>
</body>
</html>
"""

EXPECTED_NODES = [
    TextNode(text="The river festival returned to the old harbour this weekend, drawing thousands of visitors, "
                  "boats and musicians from across the region."),
    ImageNode(url="https://cdn.example.org/assets/photos/boats.jpg", alt="Boats on the river",
              caption="Boats gathered at the harbour on Saturday.", width=800, height=600),
    TextNode(text="Organisers said the crowds were the largest since the festival began, with food stalls, "
                  "concerts and a night-time lantern parade along the water."),
    TextNode(text="A night of lanterns", kind="heading"),
    TextNode(text="More than two hundred lanterns floated down the river, each one decorated by a local school, "
                  "club or family."),
    ImageNode(url="https://cdn.example.org/assets/lanterns-large.jpg", alt="Lanterns"),
    TextNode(text="Saturday: boat parade and concerts on the quay.", kind="list_item"),
    TextNode(text="Sunday: lantern parade, fireworks and the closing ceremony.", kind="list_item"),
    TextNode(text="The festival will return next summer, the council confirmed on Monday evening."),
]


def test_article_nodes_exactly_in_page_order():
    doc = extract_document(ARTICLE, PAGE_URL)
    assert doc.nodes == EXPECTED_NODES
    assert doc.title == "The River Festival Returns | Daily Example"
    assert doc.language == "en"
    assert doc.url == PAGE_URL


def test_boilerplate_never_reaches_the_text():
    text = extract_document(ARTICLE, PAGE_URL).text()
    for junk in ("tracking", "color: red", "News", "cookies", "Accept all", "Jane Doe", "Share on",
                 "Great festival", "Most read", "Another story", "Hidden text", "Copyright"):
        assert junk not in text, junk


def test_captions_as_text_option_adds_a_caption_node():
    import dataclasses

    from flamboyance.preprocess.extract import DEFAULT_CONFIG

    config = dataclasses.replace(DEFAULT_CONFIG, captions_as_text=True)
    nodes = extract_document(ARTICLE, PAGE_URL, config=config).nodes
    assert nodes[2] == TextNode(text="Boats gathered at the harbour on Saturday.", kind="caption")
    assert nodes[:2] + nodes[3:] == EXPECTED_NODES


def test_to_dict_is_obelics_layout_and_round_trips():
    doc = extract_document(ARTICLE, PAGE_URL)
    data = doc.to_dict()
    assert data["images"] == [None, "https://cdn.example.org/assets/photos/boats.jpg", None, None, None,
                              "https://cdn.example.org/assets/lanterns-large.jpg", None, None, None]
    assert [t is None for t in data["texts"]] == [i is not None for i in data["images"]]
    assert data["metadata"][1] == {"alt": "Boats on the river", "caption": "Boats gathered at the harbour on Saturday.",
                                   "width": 800, "height": 600}
    again = Document.from_dict(data)
    assert [n.text if isinstance(n, TextNode) else n for n in again.nodes] == \
           [n.text if isinstance(n, TextNode) else n for n in doc.nodes]


def _page(body: str, title: str = "Some page") -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


LONG = ("This paragraph carries the article, with commas, clauses, and enough words to be scored as "
        "the main content of the page by any sensible extractor.")


def test_main_container_chosen_over_link_lists():
    links = "".join(f'<li><a href="/x{i}">Link number {i} to another page on this site</a></li>' for i in range(30))
    body = (f'<div class="menu-block"><ul>{links}</ul></div>'
            f'<div class="content"><p>{LONG}</p><p>{LONG} Second.</p><p>{LONG} Third.</p></div>'
            f'<div class="related"><ul>{links}</ul></div>')
    doc = extract_document(_page(body), PAGE_URL)
    assert doc.nodes == [TextNode(text=LONG), TextNode(text=LONG + " Second."), TextNode(text=LONG + " Third.")]


def test_whitespace_and_unicode_normalised():
    # Decomposed e + combining acute -> NFC; nbsp, zero-width space, soft hyphen, tabs and newlines.
    body = f"<article><p>Cafe\u0301\u00a0au\tlait,\n\n  ze\u200bro wi\u00addth. {LONG}</p></article>"
    doc = extract_document(_page(body), PAGE_URL)
    assert doc.nodes == [TextNode(text=f"Caf\u00e9 au lait, zero width. {LONG}")]


def test_br_splits_lines_inside_one_block_and_inline_tags_do_not_split_words():
    body = f"<article><p>{LONG}</p><p>first <b>bo</b>ld line<br>second line<br><br>third</p></article>"
    doc = extract_document(_page(body), PAGE_URL)
    assert doc.nodes == [TextNode(text=LONG), TextNode(text="first bold line\nsecond line\nthird")]


def test_headings_quotes_preformatted_and_tables_get_their_kinds():
    body = (f"<article><h2>Section title</h2><p>{LONG}</p><blockquote>{LONG} Quoted.</blockquote>"
            "<pre>def f(x):\n    return x</pre>"
            "<table><tr><th>Year</th><th>Boats</th></tr><tr><td>2025</td><td>112</td></tr>"
            "<tr><td>2026</td><td>140</td></tr><tr><td>2027</td><td>151</td></tr></table></article>")
    doc = extract_document(_page(body), PAGE_URL)
    assert doc.nodes == [
        TextNode(text="Section title", kind="heading"), TextNode(text=LONG),
        TextNode(text=LONG + " Quoted.", kind="quote"),
        TextNode(text="def f(x):\n    return x", kind="preformatted"),
        TextNode(text="Year | Boats", kind="table"), TextNode(text="2025 | 112", kind="table"),
        TextNode(text="2026 | 140", kind="table"), TextNode(text="2027 | 151", kind="table"),
    ]


def test_heading_repeating_the_title_is_dropped():
    body = f"<article><h1>Lanterns over the harbour</h1><p>{LONG}</p></article>"
    doc = extract_document(_page(body, title="Lanterns over the harbour - Daily Example"), PAGE_URL)
    assert doc.nodes == [TextNode(text=LONG)]


def test_hidden_elements_are_removed():
    body = (f"<article><p>{LONG}</p><p hidden>Hidden by attribute, never shown to readers.</p>"
            "<p style='visibility: hidden'>Hidden by style, never shown to readers at all.</p>"
            "<div aria-hidden='true'><p>Hidden from assistive technology and everyone else.</p></div></article>")
    assert extract_document(_page(body), PAGE_URL).nodes == [TextNode(text=LONG)]


def test_short_page_still_yields_its_text():
    # Under the 500-character threshold the extractor retries with fewer removals; the text survives.
    doc = extract_document(_page("<div class='sidebar'><p>Only a short note lives here.</p></div>"), PAGE_URL)
    assert doc.nodes == [TextNode(text="Only a short note lives here.")]


def test_page_without_content_is_rejected_with_a_reason():
    with pytest.raises(ExtractionError) as info:
        extract_document(_page("<script>var a = 1;</script><nav><a href='/'>Home</a></nav>"), PAGE_URL)
    assert info.value.reason == "no_main_content"
    assert PAGE_URL in str(info.value)


def test_text_around_the_chosen_container_is_not_included():
    body = (f"Loose text before.<div id='wrap'><article><p>{LONG}</p><p>{LONG} Second.</p></article>"
            "<aside>Aside text.</aside></div>Loose trailing text of the page layout, after the article.")
    assert extract_document(_page(body), PAGE_URL).nodes == [TextNode(text=LONG), TextNode(text=LONG + " Second.")]


# ---------------------------------------------------------------- link-dense paragraphs, edit links, tails

LEAD = ('<p><a href="/wiki/Mozilla">Mozilla</a> is a <a href="/wiki/Free_software">free software community</a> '
        '<a href="/wiki/1998">founded in 1998</a> by <a href="/wiki/Netscape">members of Netscape</a>.</p>')


def _wiki(body: str) -> str:
    # over 500 characters of text, so the first extraction attempt (all cleaning rules on) is kept
    return _page(f"<div id='content' class='mw-body-content'>{body}"
                 + "".join(f"<p>{LONG} Part {i}.</p>" for i in range(4)) + "</div>", title="Mozilla - Wikipedia")


WIKI_TAIL = [f"{LONG} Part {i}." for i in range(4)]


def test_link_dense_lead_sentence_is_kept():
    # 58 of 64 visible characters are link text (> 0.8), but it is a sentence around four links
    texts = [n.text for n in extract_document(_wiki(LEAD), PAGE_URL).texts]
    assert texts[0] == "Mozilla is a free software community founded in 1998 by members of Netscape."


def test_headline_link_and_link_list_paragraphs_are_still_dropped():
    body = ('<p><a href="/other-story">Firefox market share falls again in Europe this year</a></p>'
            '<p><a href="/a">Firefox</a>, <a href="/b">Thunderbird</a>, <a href="/c">SeaMonkey</a> and '
            '<a href="/d">Bugzilla</a></p>')
    assert [n.text for n in extract_document(_wiki(body), PAGE_URL).texts] == WIKI_TAIL


def test_edit_section_links_are_removed_from_headings():
    body = ('<h2><span class="mw-headline">History</span><span class="mw-editsection">'
            '<span class="mw-editsection-bracket">[</span><a href="/w/index.php?title=Mozilla&amp;action=edit'
            '&amp;section=1">edit</a><span class="mw-editsection-bracket">]</span></span></h2>'
            f'<p>{LONG} History.</p>'
            '<h2>Values <span>[<a href="/w?title=V&amp;veaction=edit">edit</a> | <a href="/v/change">modify</a>]'
            f'</span></h2><p>{LONG} Values.</p>'
            f'<h3><a href="/guide/edit">Edit</a></h3><p>{LONG} Editing.</p>')
    headings = [n.text for n in extract_document(_wiki(body), PAGE_URL).texts if n.kind == "heading"]
    assert headings == ["History", "Values", "Edit"]  # a heading that is only the word stays


def test_promo_line_needs_a_link():
    body = (f"<p>See the following example:</p><p>{LONG} Example.</p>"
            f"<p>Read more: <a href='/other'>An unrelated story about something else</a></p>")
    texts = [n.text for n in extract_document(_wiki(body), PAGE_URL).texts]
    assert texts == ["See the following example:", LONG + " Example.", *WIKI_TAIL]


def test_stray_trailing_word_is_trimmed_after_a_long_text():
    article = "".join(f"<p>{LONG} Part {i}.</p>" for i in range(5))  # 5 x 25 words
    texts = [n.text for n in extract_document(_page(f"<article>{article}<p>Featured</p></article>"), PAGE_URL).texts]
    assert texts == [f"{LONG} Part {i}." for i in range(5)]
    # after a short text a single closing word is kept (it may be all there is)
    short = _page(f"<article><p>{LONG}</p><p>Thanks</p></article>")
    assert [n.text for n in extract_document(short, PAGE_URL).texts] == [LONG, "Thanks"]


def test_heading_parts_are_not_unlikely_candidates():
    # The anchor id of a Wikipedia headline is its text: "promotion" is not a promo box.
    body = ('<h3><span class="mw-headline" id="Eich_CEO_promotion_controversy">Eich CEO promotion controversy'
            f'</span></h3><p>{LONG} Controversy.</p><div id="promo-box">Subscribe to our daily promotions</div>')
    texts = [n.text for n in extract_document(_wiki(body), PAGE_URL).texts]
    assert texts == ["Eich CEO promotion controversy", LONG + " Controversy.", *WIKI_TAIL]


def test_article_element_has_no_bonus_over_its_best_block():
    # As in Readability, <article> scores only through its paragraphs: the first block wins, its
    # sibling block joins it, the headings between them (not scored) stay out.
    blocks = [f"<div><p>{LONG}, part {i}, one.</p><p>{LONG}, part {i}, two.</p></div>" for i in range(2)]
    page = _page(f"<article><h1>Lorem</h1>{blocks[0]}<h2>Foo</h2>{blocks[1]}</article>")
    texts = [n.text for n in extract_document(page, PAGE_URL).texts]
    assert texts == [f"{LONG}, part {i}, {n}." for i in range(2) for n in ("one", "two")]
