"""Main-content extraction: one HTML page -> one interleaved `Document`.

The approach is the readability family's: score the page's paragraphs, credit their ancestors,
pick the best-scoring container (weighted by link density and class/id hints), merge siblings
that belong to the same article, clean the container conditionally, then walk it in page order
emitting text blocks, images and videos.

Stages, each one pass over the tree (no recursion: trees may be 2,000 levels deep). Text sizes,
link text, commas and element counts are measured ONCE per attempt, bottom-up (`_Stats`), and
kept up to date through every removal: no rule re-reads a subtree's text, which would be
quadratic on deeply nested pages.

1. decode and size-check (`too_large`, `empty`), cut start tags to `max_attributes` (libxml2 is
   quadratic in attributes per element), parse with lxml (huge_tree so a 10 MB text node is not
   silently dropped), count elements (`too_many_nodes`), flatten what nests deeper than
   `max_depth`; every stage checks the page's time budget (`time_budget`);
2. prepare: drop scripts/styles/forms/nav/aside/footer, hidden elements, unlikely class/id
   candidates (cookie banners, share bars, comments, ads), bylines, dates, photo credits;
   resolve lazy images (data-src & co., noscript copies, placeholders);
3. score and choose the container (`_choose_content`), retrying with fewer removals when the
   result is short (as Readability does);
4. clean the container conditionally (link-heavy lists, image-only or input-heavy blocks);
5. emit nodes (`_Emitter`).
"""

from __future__ import annotations

import functools
import operator
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin

import lxml.etree as etree
from flamboyance.crawl.markup import bound_attributes
from flamboyance.preprocess.document import Document, ImageNode, Node, TextKind, TextNode, VideoNode
from flamboyance.preprocess.html_text import decode_html, normalize_text, strip_invisible


class ExtractionError(ValueError):
    """A page yields no document. `.reason` is a short counter key (e.g. "no_main_content")."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """Limits and thresholds of `extract_document`."""

    max_bytes: int = 5 * 2**20
    """Pages larger than this (encoded bytes, or characters for str input) raise `too_large`."""
    max_elements: int = 50_000
    """Pages with more elements than this raise `too_many_nodes` (bounds the work per page)."""
    max_attributes: int = 1_000
    """Start tags are cut to this many attributes before parsing (libxml2's work per element is
    quadratic in its attributes); the count cut is `metadata["attributes_dropped"]`."""
    max_depth: int = 256
    """Below this depth the wrappers are unwrapped (their text, leaves and images kept; counted
    in `metadata["elements_flattened"]`): rules that look up the ancestors would otherwise cost
    depth x elements (2,000 nested divs took 4.5 s)."""
    time_budget_s: float | None = 1.0
    """A page still being extracted after this many seconds raises `time_budget` (checked between
    stages; None: no budget). The other limits keep real and hostile pages well under it."""
    max_images: int = 1_000
    """At most this many image nodes per document; the rest are dropped (counted in metadata)."""
    min_paragraph_chars: int = 25
    """Paragraphs with fewer non-whitespace characters than this do not vote for their container."""
    char_threshold: int = 500
    """A result with fewer text characters than this triggers a retry with fewer removals."""
    top_candidates: int = 5
    """How many top-scoring containers are compared when looking for a common ancestor."""
    min_text_chars: int = 1
    """A document with less text than this (and no image or video) raises `no_main_content`."""
    srcset_only_images: bool = True
    """Keep an image whose only URL is in a `srcset` (or `<picture><source>`), taking the largest
    candidate. Readability-style references keep such images as srcset-only <img> tags, which
    src-based scorers cannot see; turning this off trades those images for scorer precision."""
    captions_as_text: bool = False
    """Also emit a figure's caption as a "caption" text node. By default a caption of a figure that
    holds an image or video is only stored on that node (`ImageNode.caption`), so the text stream
    stays the article body (hand-written article bodies leave captions and photo credits out)."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_elements", "max_depth", "top_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExtractConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_images", "max_attributes", "min_paragraph_chars", "char_threshold", "min_text_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"ExtractConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"ExtractConfig.time_budget_s must be > 0 or None, got {self.time_budget_s}")


DEFAULT_CONFIG = ExtractConfig()

# --------------------------------------------------------------------------- vocabulary
_DROP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed",
    "applet", "link", "meta", "head", "title", "base", "form", "input", "button", "select", "textarea",
    "option", "label", "nav", "aside", "footer", "dialog", "map", "area", "audio", "frameset", "frame",
})
# Boilerplate by tag that is only dropped when it is not most of the page (some sites wrap the whole
# page in <header> or <form>).
_SOFT_DROP_TAGS = frozenset({"header", "form"})
# What `_prepare` always removed (the soft ones it keeps when they hold most of the page).
_HARD_DROP_TAGS = _DROP_TAGS - _SOFT_DROP_TAGS
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "center", "dd", "details", "dir", "div", "dl",
    "dt", "fieldset", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hgroup", "hr", "html", "li", "main", "menu", "nav", "ol", "p", "pre", "section", "summary", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "caption", "video", "picture", "listing", "xmp",
    "plaintext",
})
# Children that make a <div> a container rather than a paragraph (Readability's DIV_TO_P set).
_DIV_BLOCK_CHILDREN = frozenset({"blockquote", "dl", "div", "img", "ol", "p", "pre", "table", "ul",
                                 "section", "article", "figure", "h1", "h2", "h3", "h4", "h5", "h6",
                                 "header", "main", "aside", "nav", "footer", "video", "picture"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_KIND: dict[str, TextKind] = {
    **dict.fromkeys(_HEADINGS, "heading"), "li": "list_item", "dt": "list_item", "dd": "list_item",
    "figcaption": "caption", "caption": "caption", "blockquote": "quote", "pre": "preformatted",
    "listing": "preformatted", "xmp": "preformatted", "tr": "table", "table": "table",
}
_TAG_SCORE = {"div": 5, "article": 0, "main": 5, "pre": 3, "td": 3, "blockquote": 3,
              "address": -3, "ol": -3, "ul": -3, "dl": -3, "dd": -3, "dt": -3, "li": -3, "form": -3,
              "h1": -5, "h2": -5, "h3": -5, "h4": -5, "h5": -5, "h6": -5, "th": -5}

# Class/id vocabularies: matched against the LOWERCASED class and id (a case-insensitive regex
# alternation is several times slower, and pages bring tens of thousands of distinct strings).
_UNLIKELY = re.compile(
    r"-ad-|ai2html|banner|breadcrumb|combx|comment|communit|cover-wrap|disqus|extra|footer|gdpr|header"
    r"|legends|menu|related|remark|replies|rss|shoutbox|sidebar|skyscraper|social|sponsor|supplemental"
    r"|ad-break|agegate|pagination|pager|popup|yom-remote|cookie|consent|newsletter|subscribe|signup"
    r"|promo|outbrain|taboola|recommend|trending|most-?popular|navbar|toolbar"
    r"|masthead|paywall|print-only|skip-?link|sr-only|visually-?hidden|screen-reader")
_MAYBE = re.compile(r"and|article|body|column|content|main|mathjax|shadow|story|entry|text")
_POSITIVE = re.compile(r"article|body|content|entry|hentry|h-entry|main|page|pagination|post|text|blog"
                       r"|story|prose")
_NEGATIVE = re.compile(
    r"-ad-|hidden|^hid$| hid$| hid |^hid |banner|combx|comment|com-|contact|footer|gdpr|masthead|media"
    r"|meta|outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|shopping|tags"
    r"|widget|byline|author|dateline|caption-credit|credit|subscribe|newsletter|taboola|teaser")
# Always removed, whatever the retry ladder relaxes: reader comments and photo credits/captions
# outside <figcaption> (short elements only, see `_prepare`).
_COMMENTS = re.compile(r"(^|[\s_-])(comments?|comment-?list|commentlist|disqus(_thread)?|respond|replies"
                       r"|comment-?section|user-?comments)([\s_-]|$)")
_CAPTION_CLASS = re.compile(r"(^|[\s_-])(caption|credits?|photo-?credit|image-?credit|wp-caption-text)s?([\s_-]|$)")
_DATE_CLASS = re.compile(r"(^|[\s_-])(date|dateline|timestamp|published|pubdate|posted-?on|entry-meta|post-meta"
                         r"|article-meta|updated|publish-?date)([\s_-]|$)")
_BYLINE = re.compile(r"byline|author|dateline|writtenby|p-author")
_UNLIKELY_ROLES = frozenset({"menu", "menubar", "complementary", "navigation", "alert", "alertdialog",
                             "dialog", "banner", "contentinfo", "search", "toolbar"})
_SHARE = re.compile(r"(\b|_)(share|sharedaddy|social|sharing)(\b|_)")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
# "READ MORE: <a>...</a>" points at another page: a line like it without a link ("See the
# following example:") introduces the article's own content and stays.
_PROMO_LINE = re.compile(r"(read|see|watch|click|get|sign up|subscribe|more|related|also|don'?t miss)\b"
                         r"[^:.!?]{0,40}(:|\bhere\b)", re.I)
_PROMO_LABEL = re.compile(r"(related|recommended|further reading)\s*$", re.I)
# A block whose whole text is an ad label or a loading message.
_AD_OR_LOADING = re.compile(r"^(ad(vertising|vertisement)?|pub(licité)?|werb(ung)?|广告|Реклама|Anuncio"
                            r"|(loading|正在加载|Загрузка|chargement|cargando)(…|\.\.\.)?)$", re.I)
_COMMAS = re.compile(r"[,\u060c\ufe50\ufe10\ufe11\u2e41\u2e34\u2e32\uff0c]")
_SENTENCE_END = re.compile(r"\.( |$)")

# Higher-resolution copies that win over a real `src`.
_HI_RES_ATTRS = ("data-hi-res-src", "data-full-src", "data-zoom-src")
# Image attributes, most trusted first. Lazy loaders put the real URL in one of these and a
# placeholder (or nothing) in `src`.
_LAZY_SRC_ATTRS = ("data-src", "data-original", "data-lazy-src", "data-lazy", "data-url", "data-hi-res-src",
                   "data-full-src", "data-orig-src", "data-original-src", "data-image", "data-img-src",
                   "data-echo", "data-actualsrc", "data-pagespeed-lazy-src", "data-large-file", "original")
_LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset", "data-original-srcset")
_IMAGE_URL = re.compile(r"^\s*\S+\.(jpe?g|png|webp|gif|avif)(\?\S*)?\s*$", re.I)
_IMAGE_SRCSET = re.compile(r"\.(jpe?g|png|webp|gif|avif)\S*\s+\d", re.I)
_PLACEHOLDER = re.compile(r"^data:|/(?:[\w-]*[-_])?(?:blank|spacer|pixel|placeholder|transparent|lazy-?load|loader"
                          r"|loading|grey|gray|empty|1x1|dot|clear)(?:[-_.][\w-]*)?\.(?:gif|png|svg)(?:\?|#|$)", re.I)
_IMAGE_URL_LIKE = re.compile(r"\.(jpe?g|png|webp|gif|avif)|/", re.I)
_LOGO_WORD = re.compile(r"(^|[^a-z])(logo|icons?|emoji|spinner|sprite|badge|button)([^a-z]|$)")
# Pictures of the author, recognisable from the image's container too (a.headshot > img).
_PORTRAIT_WORD = re.compile(r"(^|[^a-z])(avatar|gravatar|headshot|mugshot|author-?(photo|image|img|pic))([^a-z]|$)")
_DIMENSION = re.compile(r"^\s*(\d{1,6})(\.\d*)?\s*(px)?\s*$", re.I)
_SKIP_SCHEMES = ("javascript:", "data:", "about:", "mailto:", "tel:", "blob:", "#")



# --------------------------------------------------------------------------- public entry point
def extract_document(html: str | bytes, url: str, *, headers: Mapping[str, str] | None = None,
                     config: ExtractConfig = DEFAULT_CONFIG) -> Document:
    """Extract the main content of one page as an ordered interleaved document.

    `html` is the page (bytes are decoded from BOM, the `Content-Type` charset in `headers`,
    `<meta charset>`, UTF-8, then a detector); `url` is the page's URL, used to make image and
    video URLs absolute (a `<base href>` in the page takes precedence).

    Raises `ExtractionError` with `.reason` one of: "empty", "too_large", "unparseable",
    "too_many_nodes", "time_budget", "no_main_content".
    """
    started = time.perf_counter()
    if isinstance(html, bytes | bytearray | memoryview):
        html = bytes(html)
        if len(html) > config.max_bytes:
            raise ExtractionError("too_large", f"{url}: {len(html)} bytes > max_bytes={config.max_bytes}")
        if not html.strip():
            raise ExtractionError("empty", f"{url}: no bytes")
        text, encoding = decode_html(html, headers)
    elif isinstance(html, str):
        if len(html) > config.max_bytes:
            raise ExtractionError("too_large", f"{url}: {len(html)} chars > max_bytes={config.max_bytes}")
        text, encoding = html, None
    else:
        raise TypeError(f"extract_document: html must be str or bytes, got {type(html).__name__} for {url}")
    if not text.strip():
        raise ExtractionError("empty", f"{url}: only whitespace")

    page = _Page(text, url, config, started=started)
    best: tuple[int, list[Node], Counter] | None = None
    # Readability's retry ladder: when the chosen content is short, parse again keeping more.
    previous: _Effects | None = None
    for flags in _ATTEMPTS:
        if previous is not None and not previous.relaxing_matters(flags):
            continue  # the relaxed attempt would repeat the previous one exactly
        effects = _Effects()
        dropped: Counter = Counter()
        nodes = page.extract(flags, effects, dropped)
        size = sum(len(n.text) for n in nodes if isinstance(n, TextNode))
        if best is None or size > best[0]:
            best = (size, nodes, dropped)
        if size >= config.char_threshold:
            break
        previous = effects
    assert best is not None
    nodes, dropped_images = best[1], best[2]
    has_media = any(not isinstance(n, TextNode) for n in nodes)
    if best[0] < config.min_text_chars and not has_media:
        raise ExtractionError("no_main_content", f"{url}: no text, image or video found in the main content")
    # Only deterministic facts here: documents end up in shards that must be byte-reproducible.
    metadata: dict = {}
    if encoding:
        metadata["encoding"] = encoding
    if dropped_images["too_many_images"]:
        metadata["images_dropped"] = dropped_images["too_many_images"]
    metadata.update({k: v for k, v in page.bounded.items() if v})
    return Document(url=url, nodes=nodes, title=page.title, language=page.language, metadata=metadata,
                    dropped_images={k: v for k, v in sorted(dropped_images.items()) if v})


@dataclass(frozen=True)
class _Flags:
    strip_unlikely: bool = True
    weight_classes: bool = True
    clean_conditionally: bool = True


@dataclass
class _Effects:
    """What each relaxable rule removed or changed in one attempt."""

    unlikely_dropped: int = 0
    weights_used: int = 0
    conditionally_dropped: int = 0
    flags: _Flags = field(default_factory=_Flags)

    def relaxing_matters(self, relaxed: _Flags) -> bool:
        return ((self.flags.strip_unlikely and not relaxed.strip_unlikely and self.unlikely_dropped > 0)
                or (self.flags.weight_classes and not relaxed.weight_classes and self.weights_used > 0)
                or (self.flags.clean_conditionally and not relaxed.clean_conditionally
                    and self.conditionally_dropped > 0))


_ATTEMPTS = (_Flags(), _Flags(strip_unlikely=False), _Flags(False, False), _Flags(False, False, False))


# --------------------------------------------------------------------------- one page
@dataclass
class _Page:
    source: str
    url: str
    config: ExtractConfig
    title: str = ""
    language: str | None = None
    base: str = ""
    started: float = 0.0
    bounded: dict[str, int] = field(default_factory=dict)
    _data: bytes | None = None

    def parse(self) -> etree._Element:
        if self._data is None:
            # Scripts and styles are emptied on the way: no stage reads their text.
            source, dropped = bound_attributes(self.source, self.config.max_attributes, empty_scripts=True)
            self.bounded["attributes_dropped"] = dropped
            if "\x00" in source:
                source = source.replace("\x00", "")
            # lxml refuses str input with an XML encoding declaration; bytes plus an explicit
            # UTF-8 parser encoding always work. Surrogates (invalid in UTF-8) are replaced.
            self._data = source.encode("utf-8", "replace")
        try:
            root = etree.fromstring(self._data, _parser())
        except (etree.ParserError, etree.XMLSyntaxError, ValueError) as exc:
            raise ExtractionError("unparseable", f"{self.url}: {exc}") from exc
        if root is None:
            raise ExtractionError("unparseable", f"{self.url}: parser returned no document")
        limit = self.config.max_elements
        count = int(root.xpath("count(//*)"))
        if count > limit:
            raise ExtractionError("too_many_nodes", f"{self.url}: {count} elements > max_elements={limit}")
        # Below the depth limit (<html> is depth 1) only the leaves stay: the wrappers between
        # them are unwrapped, their text kept in place.
        flattened = 0
        for el in root.xpath("/".join(["*"] * (self.config.max_depth - 1)) or "."):
            wrappers = [inner for inner in el.iterdescendants() if len(inner)]
            for inner in wrappers:
                inner.tag = _FLATTENED
                inner.text = " " + inner.text if inner.text else " "  # a block keeps its word breaks
                inner.tail = " " + inner.tail if inner.tail else " "
            if wrappers:
                etree.strip_tags(el, _FLATTENED)
                flattened += len(wrappers)
        self.bounded["elements_flattened"] = flattened
        return root

    def check_time(self, stage: str) -> None:
        """Raise `time_budget` once the page has used its time (`ExtractConfig.time_budget_s`)."""
        budget = self.config.time_budget_s
        if budget is not None and time.perf_counter() - self.started > budget:
            raise ExtractionError("time_budget", f"{self.url}: over time_budget_s={budget} after {stage}")

    def extract(self, flags: _Flags, effects: _Effects, dropped: Counter) -> list[Node]:
        """One attempt's nodes; the page's images left out are counted into `dropped` by reason."""
        effects.flags = flags
        self.check_time("start")
        root = self.parse()
        self.check_time("parse")
        if not self.base:
            self._read_head(root)
        body = root.find("body")
        if body is None:
            body = root
        images = sum(1 for _ in body.iter("img", "amp-img"))
        stats = _prepare(body, flags, self.title, effects)
        self.check_time("prepare")
        content = _choose_content(body, flags, self.config, effects, stats)
        self.check_time("choose_content")
        if content is None:
            dropped["not_main_content"] += images
            return []
        _clean_content(content, flags, effects, dropped)
        self.check_time("clean_content")
        emitter = _Emitter(base=self.base, max_images=self.config.max_images,
                           captions_as_text=self.config.captions_as_text,
                           srcset_only_images=self.config.srcset_only_images, dropped=dropped)
        emitter.walk(content)
        dropped["not_main_content"] += max(0, images - emitter.images_met - dropped["boilerplate_block"])
        return _trim_tail(emitter.nodes, emitter.teasers, dropped)

    def _read_head(self, root: etree._Element) -> None:
        self.base = self.url
        for base in root.iter("base"):
            href = (base.get("href") or "").strip()
            if href and not href.lower().startswith(_SKIP_SCHEMES):
                try:
                    self.base = urljoin(self.url, href)
                except ValueError:  # a malformed href (e.g. an unclosed IPv6 bracket) is ignored
                    pass
            break
        for title in root.iter("title"):
            self.title = normalize_text(_text(title))
            break
        if not self.title:
            for meta in root.iter("meta"):
                if (meta.get("property") or meta.get("name") or "").lower() in ("og:title", "twitter:title"):
                    self.title = normalize_text(meta.get("content") or "")
                    break
        lang = (root.get("lang") or root.get("xml:lang") or "").strip()
        self.language = re.split(r"[-_]", lang)[0].lower() or None if lang else None


_PARSERS = threading.local()
_FLATTENED = "flamboyance-flattened"


def _parser() -> etree.HTMLParser:
    """This thread's HTML parser (lxml parsers must not be shared between threads).

    Plain etree elements: lxml.html's element classes cost a Python call per element touched.
    huge_tree: without it libxml2 silently returns an EMPTY tree for a text node over 10 MB.
    """
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = etree.HTMLParser(huge_tree=True, remove_comments=True, remove_pis=True, encoding="utf-8")
        _PARSERS.parser = parser
    return parser


# --------------------------------------------------------------------------- tree statistics
def _text(el: etree._Element) -> str:
    """An element's text content: its own and its descendants' text, not its tail."""
    return etree.tostring(el, method="text", encoding="unicode", with_tail=False)


def _visible_len(text: str | None) -> int:
    """Number of non-whitespace characters: additive, so merging text nodes (as removing an
    element between them does) never changes a measured length."""
    if not text:
        return 0
    return len("".join(text.split()))


def _class_id(el: etree._Element) -> str:
    cls = el.get("class")
    ident = el.get("id")
    if cls and ident:
        return f"{cls} {ident}"
    return cls or ident or ""


def _class_weight(el: etree._Element) -> int:
    return _value_weight(el.get("class")) + _value_weight(el.get("id"))


@functools.lru_cache(maxsize=8192)
def _value_weight(value: str | None) -> int:
    if not value:
        return 0
    value = value.lower()
    return (25 if _POSITIVE.search(value) else 0) - (25 if _NEGATIVE.search(value) else 0)


# Class/id hints, as bit flags (pages repeat the same class strings, so results are cached).
_H_COMMENTS, _H_CAPTION, _H_BYLINE, _H_UNLIKELY, _H_SHARE, _H_LOGO, _H_PORTRAIT = 1, 2, 4, 8, 16, 32, 64


@functools.lru_cache(maxsize=16384)
def _hints(match: str) -> int:
    match = match.lower()
    flags = 0
    # Each regex runs only when a word every one of its alternatives contains is there: most
    # class strings ("css-1a48zt4", "row") name nothing, and a substring test is far cheaper.
    if ("comment" in match or "disqus" in match or "respond" in match or "replies" in match) \
            and _COMMENTS.search(match):
        flags |= _H_COMMENTS
    if (("caption" in match or "credit" in match) and _CAPTION_CLASS.search(match)) or (
            ("date" in match or "timestamp" in match or "published" in match or "posted" in match
             or "meta" in match) and _DATE_CLASS.search(match)):
        flags |= _H_CAPTION
    if _BYLINE.search(match):
        flags |= _H_BYLINE
    if _UNLIKELY.search(match) and not _MAYBE.search(match):
        flags |= _H_UNLIKELY
    if ("shar" in match or "social" in match) and _SHARE.search(match):
        flags |= _H_SHARE
    if ("logo" in match or "icon" in match or "emoji" in match or "spinner" in match or "sprite" in match
            or "badge" in match or "button" in match) and _LOGO_WORD.search(match):
        flags |= _H_LOGO
    if ("avatar" in match or "headshot" in match or "mugshot" in match or "author" in match) \
            and _PORTRAIT_WORD.search(match):
        flags |= _H_PORTRAIT
    return flags


_SILENT_TAGS = frozenset({"script", "style", "noscript", "template"})  # their text is never shown
# Detailed counters (conditional cleaning): index of each in `_Stats.counts[el]`.
_C_P, _C_IMG, _C_LI, _C_INPUT, _C_VIDEO, _C_TABLE, _C_LIST_TEXT, _C_HEADING_TEXT = range(8)
_N_COUNTS = 8
_COUNTED = {"p": _C_P, "img": _C_IMG, "li": _C_LI, "input": _C_INPUT, "video": _C_VIDEO, "table": _C_TABLE}


def _count_commas(text: str | None) -> int:
    if not text:
        return 0
    if text.isascii():
        return text.count(",")
    return len(_COMMAS.findall(text))


class _Stats:
    """Per-element text length, link-text length, comma count and block-child flag, computed in
    ONE bottom-up pass so that no rule has to re-read a subtree's text (that is quadratic on
    deeply nested pages). With `detailed`, also the counts conditional cleaning needs."""

    __slots__ = ("text", "link", "commas", "block", "counts", "detailed")

    def __init__(self, root: etree._Element, *, detailed: bool = False) -> None:
        self.text: dict[etree._Element, int] = {}
        self.link: dict[etree._Element, float] = {}
        self.commas: dict[etree._Element, int] = {}
        self.block: dict[etree._Element, bool] = {}
        self.counts: dict[etree._Element, list[float]] = {}
        self.detailed = detailed
        self.measure(reversed(list(root.iter())))

    def measure(self, elements: Iterable[etree._Element]) -> None:
        """Measure `elements` (again), children before parents: each one's element children are
        measured already."""
        text, link, commas, block, counts = self.text, self.link, self.commas, self.block, self.counts
        detailed = self.detailed
        block_tags, silent, counted, headings = _DIV_BLOCK_CHILDREN, _SILENT_TAGS, _COUNTED, _HEADINGS
        comma_findall = _COMMAS.findall
        for el in elements:
            tag = el.tag
            if tag.__class__ is not str:
                continue
            if tag in silent:
                text[el], link[el], commas[el], block[el] = 0, 0.0, 0, False
                if detailed:
                    counts[el] = [0.0] * _N_COUNTS
                continue
            # Inlined `_visible_len` / `_count_commas`: this loop runs over every element, and
            # most tails (and half the texts) are indentation.
            own = el.text
            if own and not own.isspace():
                total = len("".join(own.split()))
                n_commas = own.count(",") if own.isascii() else len(comma_findall(own))
            else:
                total = n_commas = 0
            links = 0.0
            has_block = False
            if detailed:
                mine: list[float] | None = None
                for child in el:
                    child_tag = child.tag
                    if child_tag.__class__ is str:
                        size = text[child]
                        total += size
                        links += link[child]
                        n_commas += commas[child]
                        if not has_block:
                            has_block = child_tag in block_tags or block[child]
                        theirs = counts[child]
                        mine = theirs.copy() if mine is None else list(map(operator.add, mine, theirs))
                        index = counted.get(child_tag)
                        if index is not None:
                            mine[index] += 1
                        if child_tag == "ul" or child_tag == "ol":
                            mine[_C_LIST_TEXT] += size
                        elif child_tag in headings:
                            mine[_C_HEADING_TEXT] += size - theirs[_C_HEADING_TEXT]
                    tail = child.tail
                    if tail and not tail.isspace():
                        total += len("".join(tail.split()))
                        n_commas += tail.count(",") if tail.isascii() else len(comma_findall(tail))
                counts[el] = mine if mine is not None else [0.0] * _N_COUNTS
            else:
                for child in el:
                    child_tag = child.tag
                    if child_tag.__class__ is str:
                        total += text[child]
                        links += link[child]
                        n_commas += commas[child]
                        if not has_block:
                            has_block = child_tag in block_tags or block[child]
                    tail = child.tail
                    if tail and not tail.isspace():
                        total += len("".join(tail.split()))
                        n_commas += tail.count(",") if tail.isascii() else len(comma_findall(tail))
            if tag == "a":
                # In-page anchors (footnotes, tables of contents) count less than outbound links.
                links = total * (0.3 if (el.get("href") or "").startswith("#") else 1.0)
            text[el] = total
            link[el] = links
            commas[el] = n_commas
            block[el] = has_block

    def refresh(self, parents: Iterable[etree._Element]) -> None:
        """Measure again, bottom up, `parents` (elements that lost children without `remove`) and
        all their measured ancestors: one pass over the touched chains instead of one walk to the
        root per removal."""
        depth: dict[etree._Element, int] = {}
        for parent in parents:
            chain = []
            node = parent
            while node is not None and node not in depth and node in self.text:
                chain.append(node)
                node = node.getparent()
            level = depth.get(node, 0) if node is not None else 0
            for element in reversed(chain):
                level += 1
                depth[element] = level
        self.measure(sorted(depth, key=depth.__getitem__, reverse=True))

    def density(self, el: etree._Element) -> float:
        total = self.text.get(el, 0)
        return self.link.get(el, 0.0) / total if total else 0.0

    def remove(self, el: etree._Element, stop: etree._Element | None = None) -> None:
        """Account for `el` leaving the tree (call before detaching it): its ancestors, up to
        `stop` inclusive, lose its text, links, commas and counts; their block-child flags are
        recomputed. Its tail stays in the page (`_drop` keeps it), so only its own text goes."""
        self._adjust(el, stop, -1)
        skip: etree._Element | None = el  # at the parent's level, `el` no longer counts
        ancestor = el.getparent()
        while ancestor is not None and ancestor in self.block:
            has_block = any(child is not skip and isinstance(child.tag, str)
                            and (child.tag in _DIV_BLOCK_CHILDREN or self.block.get(child, False))
                            for child in ancestor)
            changed = has_block != self.block[ancestor]
            self.block[ancestor] = has_block
            if not changed or ancestor is stop:
                break
            skip = None
            ancestor = ancestor.getparent()

    def _adjust(self, el: etree._Element, stop: etree._Element | None, sign: int) -> None:
        size, links, n_commas = self.text.get(el, 0), self.link.get(el, 0.0), self.commas.get(el, 0)
        theirs = self.counts.get(el)
        tag = el.tag
        ancestor = el.getparent()
        link_delta = sign * links
        while ancestor is not None:
            if ancestor in self.text:
                self.text[ancestor] += sign * size
                if ancestor.tag == "a":  # a link's link text is all of its text
                    factor = 0.3 if (ancestor.get("href") or "").startswith("#") else 1.0
                    updated = self.text[ancestor] * factor
                    link_delta = updated - self.link[ancestor]
                    self.link[ancestor] = updated
                else:
                    self.link[ancestor] += link_delta
                self.commas[ancestor] += sign * n_commas
                mine = self.counts.get(ancestor)
                if mine is not None and theirs is not None:
                    for i in range(_N_COUNTS):
                        mine[i] += sign * theirs[i]
                    index = _COUNTED.get(tag)
                    if index is not None:
                        mine[index] += sign
                    if tag in ("ul", "ol"):
                        mine[_C_LIST_TEXT] += sign * size
                    elif tag in _HEADINGS:
                        mine[_C_HEADING_TEXT] += sign * (size - theirs[_C_HEADING_TEXT])
            if ancestor is stop:
                break
            ancestor = ancestor.getparent()


def _is_hidden(el: etree._Element) -> bool:
    if el.get("hidden") is not None:
        return True
    style = el.get("style")
    if style and _HIDDEN_STYLE.search(style):
        return True
    if el.get("aria-hidden") == "true" and "fallback-image" not in (el.get("class") or ""):
        return True
    return False


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _set_attr(el: etree._Element, name: str, value: str) -> None:
    """Set an attribute, dropping characters lxml refuses (control characters, lone surrogates)."""
    try:
        el.set(name, value)
    except ValueError:
        el.set(name, _XML_INVALID.sub("", value))


def _set_text(el: etree._Element, which: str, value: str) -> None:
    """Set `.text` or `.tail`; libxml2 keeps control characters it parsed but refuses them back."""
    try:
        setattr(el, which, value)
    except ValueError:
        setattr(el, which, _XML_INVALID.sub("", value))


def _drop(el: etree._Element) -> None:
    """Remove an element but keep its tail text."""
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if tail:
        previous = el.getprevious()
        if previous is not None:
            _set_text(previous, "tail", (previous.tail or "") + tail)
        else:
            _set_text(parent, "text", (parent.text or "") + tail)
    parent.remove(el)


# --------------------------------------------------------------------------- stage 2: prepare
def _prepare(body: etree._Element, flags: _Flags, title: str, effects: _Effects) -> _Stats:
    """Drop boilerplate, hidden and unlikely elements; resolve lazy images. Returns the body's
    statistics after the removals (one measuring pass per attempt, then the touched ancestors
    measured again)."""
    _unwrap_noscript_images(body)
    # Tags always dropped (nav, aside, footer, svg, ...: about half the elements of a news page)
    # go first, in one C pass, so that no later pass touches them. Their tails stay.
    etree.strip_elements(body, *_HARD_DROP_TAGS, with_tail=False)
    stats = _Stats(body)
    lengths = stats.text
    body_text = max(1, lengths.get(body, 0))
    # The walk is pre-order and never looks at an element again, so every length it reads is
    # that of an element none of whose descendants was dropped yet: the statistics can be
    # brought up to date once, at the end, from the parents that lost children.
    emptied: list[etree._Element] = []

    def drop(el: etree._Element) -> None:
        parent = el.getparent()
        if parent is not None:
            emptied.append(parent)
        _drop(el)

    # Explicit pre-order walk that does not descend into dropped subtrees.
    stack = list(reversed(body))
    while stack:
        el = stack.pop()
        tag = el.tag
        if not isinstance(tag, str):
            _drop(el)  # a comment or processing instruction: measured as nothing
            continue
        if tag == "amp-img":  # AMP pages: the same attributes as <img>
            el.tag = tag = "img"
        if tag in _DROP_TAGS or tag in _SOFT_DROP_TAGS:
            if tag == "header" and _has_ancestor(el, ("article", "main")):
                # An article's own header: title, standfirst, byline and dates go, its lead
                # picture or video stays (moved out in front of the header).
                media = _outermost(el, ("figure", "picture", "img", "video"))
                for item in media:
                    item.tail = None
                    el.addprevious(item)
                drop(el)
                stack.extend(reversed(media))
                continue
            if tag in _SOFT_DROP_TAGS:
                # A page wrapped in one <form> or <header> keeps it.
                if lengths.get(el, 0) > 0.5 * body_text:
                    stack.extend(reversed(el))
                    continue
            drop(el)
            continue
        if _is_hidden(el):
            drop(el)
            continue
        role = el.get("role")
        if (role and role.lower() in _UNLIKELY_ROLES) or el.get("aria-modal") == "true":
            drop(el)
            continue
        match = _class_id(el)
        hints = _hints(match) if match else 0
        if hints and tag not in ("article", "main", "body", "html"):
            if hints & _H_COMMENTS and el.find(".//h1") is None:
                drop(el)
                continue
            if hints & _H_CAPTION and lengths.get(el, 0) < 250 and tag != "figcaption" \
                    and tag not in _HEADINGS and el.find(".//img") is None:
                drop(el)
                continue
            if (hints & _H_BYLINE or el.get("rel") == "author" or "author" in (el.get("itemprop") or "")) \
                    and lengths.get(el, 0) < 100 and el.find(".//img") is None:
                drop(el)
                continue
            # Not inside a heading either: a heading stays or goes whole, and the ids of its
            # parts are anchors spelt from its text (Wikipedia's "Eich_CEO_promotion_controversy").
            if (flags.strip_unlikely and tag not in ("a", "img", "figure", "picture", "video")
                    and hints & _H_UNLIKELY
                    and not _has_ancestor(el, ("table", "code", "pre", *_HEADINGS))):
                effects.unlikely_dropped += 1
                drop(el)
                continue
        if tag in _HEADINGS and title and lengths.get(el, 0) <= 2 * len(title) \
                and _similar(normalize_text(_text(el)), title):
            drop(el)
            continue
        if tag == "img":
            _fix_lazy(el)
        stack.extend(reversed(el))
    stats.refresh(emptied)
    return stats


def _outermost(root: etree._Element, tags: tuple[str, ...]) -> list[etree._Element]:
    """Descendants of `root` with one of `tags` that are not inside another such descendant."""
    found: list[etree._Element] = []
    taken: set[etree._Element] = set()
    for el in root.iterdescendants(*tags):
        parent = el.getparent()
        inside = False
        while parent is not None and parent is not root:
            if parent in taken:
                inside = True
                break
            parent = parent.getparent()
        if not inside:
            found.append(el)
            taken.add(el)
    return found


def _has_ancestor(el: etree._Element, tags: tuple[str, ...], limit: int = 64) -> bool:
    parent = el.getparent()
    depth = 0
    while parent is not None and depth < limit:
        if parent.tag in tags:
            return True
        parent = parent.getparent()
        depth += 1
    return False


def _similar(heading: str, title: str) -> bool:
    """Whether a heading repeats the page title (the title may add a site name)."""
    if not heading or len(heading) < 8:
        return False
    if heading == title or (heading in title and len(heading) >= 0.4 * len(title)):
        return True
    a = set(re.findall(r"\w+", heading.lower()))
    b = set(re.findall(r"\w+", title.lower()))
    return bool(a) and len(a & b) / len(a | b) >= 0.75


def _unwrap_noscript_images(body: etree._Element) -> None:
    """<noscript><img src=real></noscript> after a placeholder <img>: use the real image."""
    noscripts = list(body.iter("noscript"))
    if not noscripts:
        return
    # Image elements with no URL at all are script-filled slots; without them the placeholder
    # next to a <noscript> is found as its previous sibling.
    for img in list(body.iter("img")):
        if not any(name in ("src", "srcset") or name.startswith("data-") and _IMAGE_URL_LIKE.search(value)
                   for name, value in img.attrib.items()) and not _has_ancestor(img, ("noscript",)):
            _drop(img)
    for noscript in noscripts:
        images = [e for e in noscript.iter("img")]
        if len(images) != 1:
            continue
        previous = noscript.getprevious()
        if previous is None:
            continue
        if previous.tag == "img":
            target = previous
        else:
            inner = list(previous.iter("img"))
            if len(inner) != 1 or any(piece.strip() for piece in previous.itertext()):
                continue
            target = inner[0]
        real = images[0]
        for name, value in real.attrib.items():
            if name in ("src", "srcset") or not target.get(name):
                _set_attr(target, name, value)


def _fix_lazy(el: etree._Element) -> None:
    """Move the real image URL of lazily loaded images into src/srcset."""
    for name in _HI_RES_ATTRS:
        value = (el.get(name) or "").strip()
        if value and not value.lower().startswith(_SKIP_SCHEMES):
            _set_attr(el, "src", value)
            return
    src = (el.get("src") or "").strip()
    lazy_class = "lazy" in (el.get("class") or "").lower()
    placeholder = not src or bool(_PLACEHOLDER.search(src))
    if src.startswith("data:image/svg"):
        placeholder = True
    if not placeholder and not lazy_class:
        return
    for name in _LAZY_SRC_ATTRS:
        value = (el.get(name) or "").strip()
        if value and not value.lower().startswith(_SKIP_SCHEMES):
            _set_attr(el, "src", value)
            return
    for name in _LAZY_SRCSET_ATTRS:
        value = (el.get(name) or "").strip()
        if value:
            _set_attr(el, "srcset", value)
            if placeholder and "src" in el.attrib:
                del el.attrib["src"]
            return
    if not placeholder:
        return
    # Unknown lazy loader: any attribute that holds an image URL.
    for name, value in el.attrib.items():
        if name in ("src", "srcset", "alt", "title", "class", "style"):
            continue
        if _IMAGE_SRCSET.search(value):
            _set_attr(el, "srcset", value)
            if "src" in el.attrib:
                del el.attrib["src"]
            return
        if _IMAGE_URL.match(value):
            _set_attr(el, "src", value.strip())
            return


# --------------------------------------------------------------------------- stage 3: choose
def _choose_content(body: etree._Element, flags: _Flags, config: ExtractConfig,
                    effects: _Effects, stats: _Stats) -> etree._Element | None:
    """The element holding the main content (a new <div> when siblings are merged)."""
    if stats.text.get(body, 0) == 0 and body.find(".//img") is None and body.find(".//video") is None:
        return None
    scores: dict[etree._Element, float] = {}

    def initialise(el: etree._Element) -> float:
        score = float(_TAG_SCORE.get(el.tag, 0))
        if flags.weight_classes:
            weight = _class_weight(el)
            effects.weights_used += weight != 0
            score += weight
        scores[el] = score
        return score

    min_chars = config.min_paragraph_chars
    for el in body.iter(_SCORE_TAGS):
        tag = el.tag
        if tag in ("div", "article", "main") and stats.block.get(el):
            # Mixed containers: their own inline text counts as one paragraph of theirs.
            inline = [c for c in el if isinstance(c.tag, str) and c.tag not in _BLOCK_TAGS]
            length = (_visible_len(el.text) + sum(_visible_len(c.tail) for c in el)
                      + sum(stats.text.get(c, 0) for c in inline))
            if length < min_chars:
                continue
            commas = (_count_commas(el.text) + sum(_count_commas(c.tail) for c in el)
                      + sum(stats.commas.get(c, 0) for c in inline))
            ancestors = [el, *_ancestors(el, 4)]
        else:
            length = stats.text.get(el, 0)
            if length < min_chars:
                continue
            commas = stats.commas.get(el, 0)
            ancestors = _ancestors(el, 5)
        if not ancestors:
            continue
        content_score = 1 + commas + min(length // 100, 3)
        for level, ancestor in enumerate(ancestors):
            if ancestor.tag in ("html",):
                break
            score = scores.get(ancestor)
            if score is None:
                score = initialise(ancestor)
            divider = 1 if level == 0 else 2 if level == 1 else level * 3
            scores[ancestor] = score + content_score / divider

    if not scores:
        return body
    final = {el: s * (1 - stats.density(el)) for el, s in scores.items()}
    ranked = sorted(final.items(), key=lambda item: item[1], reverse=True)[: config.top_candidates]
    top, top_score = ranked[0]
    if top is body or top_score <= 0:
        return body

    # Several near-best candidates under one ancestor: the article is that ancestor.
    alternatives = [set(_ancestors(el, 10_000)) for el, s in ranked[1:] if top_score and s / top_score >= 0.75]
    if len(alternatives) >= 3:
        parent = top.getparent()
        while parent is not None and parent is not body:
            if sum(1 for a in alternatives if parent in a) >= 3:
                top = parent
                break
            parent = parent.getparent()
        if top not in final:
            final[top] = initialise(top) * (1 - stats.density(top))

    # Climb while the parent scores about as well (the candidate was one part of the article),
    # for the first few levels only: a score that rises again far above the candidate is the
    # page around the article (its class says "content"), not more of it.
    last = final.get(top, 0.0)
    threshold = last / 3
    parent = top.getparent()
    for _ in range(_CLIMB_LEVELS):
        if parent is None or parent is body or parent.tag == "html":
            break
        parent_score = final.get(parent)
        if parent_score is not None:
            if parent_score < threshold:
                break
            if parent_score > last:
                top = parent
                break
            last = parent_score
        parent = parent.getparent()
    # An only child stands for its parent.
    parent = top.getparent()
    while parent is not None and parent is not body and parent.tag != "html" and len(parent) == 1:
        top = parent
        parent = top.getparent()
    top_score = final.get(top, 0.0)

    parent = top.getparent()
    if parent is None:
        return top
    threshold = max(10.0, top_score * 0.2)
    top_class = top.get("class") or ""
    kept = []
    for sibling in parent:
        if not isinstance(sibling.tag, str):
            continue
        if sibling is top:
            kept.append(sibling)
            continue
        bonus = top_score * 0.2 if top_class and sibling.get("class") == top_class else 0.0
        if sibling in final and final[sibling] + bonus >= threshold:
            kept.append(sibling)
        elif sibling.tag == "p" or (sibling.tag in ("div", "span") and not stats.block.get(sibling)):
            length = stats.text.get(sibling, 0)
            density = stats.density(sibling)
            if length > 80 and density < 0.25:
                kept.append(sibling)
            elif 0 < length <= 80 and density == 0 and _SENTENCE_END.search(
                    normalize_text(_text(sibling))):
                kept.append(sibling)
    if len(kept) == 1:
        return top
    wrapper = etree.Element("div")
    for index, el in enumerate(kept):
        # Loose text between two kept siblings belongs to the article; after the last one it does not.
        between = index + 1 < len(kept) and el.getnext() is kept[index + 1]
        tail = el.tail
        el.tail = None
        wrapper.append(el)  # moves the element out of the page
        if between and tail and tail.strip():
            _set_text(el, "tail", tail)
    return wrapper


_CLIMB_LEVELS = 3
_SCORE_TAGS = ("p", "pre", "td", "section", "h2", "h3", "h4", "h5", "h6", "blockquote", "div", "article", "main")


def _ancestors(el: etree._Element, limit: int) -> list[etree._Element]:
    out = []
    parent = el.getparent()
    while parent is not None and len(out) < limit:
        out.append(parent)
        parent = parent.getparent()
    return out


# --------------------------------------------------------------------------- stage 4: clean
def _clean_content(content: etree._Element, flags: _Flags, effects: _Effects, dropped: Counter) -> None:
    """Remove link lists, share bars, input-heavy and image-heavy blocks from the container (their
    images are counted as `dropped["boilerplate_block"]`)."""
    _drop_edit_links(content)
    stats = _Stats(content, detailed=True)

    def remove(el: etree._Element) -> None:
        dropped["boilerplate_block"] += stats.counts[el][_C_IMG] + (el.tag == "img")
        stats.remove(el, content)
        _drop(el)

    for el in list(content.iter()):
        if el is content or not isinstance(el.tag, str):
            continue
        match = _class_id(el)
        if match and _hints(match) & _H_SHARE and stats.text.get(el, 0) < 500:
            remove(el)
    for el in list(content.iter("h1", "h2")):
        if flags.weight_classes and _class_weight(el) < 0:
            effects.weights_used += 1
            remove(el)
    if not flags.clean_conditionally:
        return
    # Promotional lines inside the article body: "READ MORE: ...", or a short paragraph that is
    # almost all link text (a headline pointing at another story) and not a sentence woven
    # around its links (an encyclopedia lead links most of its terms).
    for el in list(content.iter("p")):
        length = stats.text.get(el, 0)
        if not length or length > 250 or stats.counts[el][_C_IMG]:
            continue
        text = normalize_text(_text(el))
        links = stats.link.get(el, 0.0)
        if ((length >= 20 and links / length > 0.8 and not _is_linked_prose(el, text))
                or (links and _PROMO_LINE.match(text)) or _PROMO_LABEL.match(text)):
            effects.conditionally_dropped += 1
            remove(el)
    # Innermost first, so an outer block is judged without the junk inside it.
    data_tables: dict[etree._Element, bool] = {}
    for el in reversed(list(content.iter("table", "ul", "ol", "div", "section", "fieldset"))):
        if el is content or el.getparent() is None:
            continue
        if flags.weight_classes and _class_weight(el) != 0:
            effects.weights_used += 1
        if _should_remove(el, flags, stats, data_tables):
            effects.conditionally_dropped += 1
            remove(el)


_LINKED_PROSE_MIN_LINKS = 3
_LINKED_PROSE_MIN_WORDS = 3
_SENTENCE_CLOSE = re.compile(r"[.!?][\"'”’)\]]*(\s*\[[^\]]{1,12}\])*$")
_EDIT_LINK_TEXT = frozenset({"edit", "modify", "edit source", "edit section", "modifier", "bearbeiten",
                             "editar", "modifica", "править", "編集"})
_EDIT_CLASS = re.compile(r"(^|[\s_-])(mw-)?edit-?section", re.I)
_EDIT_RESIDUE = re.compile(r"\s*\[\s*(\|\s*)*\]\s*$")


def _is_linked_prose(el: etree._Element, text: str) -> bool:
    """Whether a link-dense paragraph is a sentence written around several links (a Wikipedia lead:
    "X is a [Y] in [Z] ...") rather than a headline or a list of links: at least three links,
    at least three words outside them, and the text ends like a sentence (a trailing citation
    mark "[1]" allowed)."""
    anchors = list(el.iterdescendants("a"))
    if len(anchors) < _LINKED_PROSE_MIN_LINKS or _SENTENCE_CLOSE.search(text) is None:
        return False
    words = _alpha_words(text) - sum(_alpha_words(_text(a)) for a in anchors)
    return words >= _LINKED_PROSE_MIN_WORDS


def _alpha_words(text: str) -> int:
    return sum(1 for w in text.split() if any(c.isalpha() for c in w))


def _drop_edit_links(content: etree._Element) -> None:
    """Remove wiki "[edit]" / "[edit | modify]" section links from headings: the MediaWiki
    `mw-editsection` span (brackets included), and elsewhere any heading link that points at an
    edit action or only says "edit"."""
    for heading in list(content.iter(*_HEADINGS)):
        for el in list(heading.iterdescendants()):
            if el.getparent() is None or not isinstance(el.tag, str):
                continue
            match = _class_id(el)
            href = (el.get("href") or "").lower() if el.tag == "a" else ""
            if (match and _EDIT_CLASS.search(match)) or (el.tag == "a" and (
                    "action=edit" in href
                    or (normalize_text(_text(el)).lower() in _EDIT_LINK_TEXT
                        and normalize_text(_text(heading)).lower() not in _EDIT_LINK_TEXT))):
                _drop(el)


def _should_remove(el: etree._Element, flags: _Flags, stats: _Stats,
                   data_tables: dict[etree._Element, bool]) -> bool:
    """Readability's conditional cleaning: whether a block inside the content is junk."""

    def is_data_table(table: etree._Element) -> bool:
        known = data_tables.get(table)
        if known is None:
            known = data_tables[table] = _is_data_table(table)
        return known

    tag = el.tag
    if tag == "table" and is_data_table(el):
        return False
    if _has_ancestor(el, ("code", "pre")):
        return False
    # Data tables, and blocks inside or around them, are content whatever their link density.
    if stats.counts[el][_C_TABLE] and any(is_data_table(t) for t in el.iterdescendants("table")):
        return False
    ancestor = el.getparent()
    while ancestor is not None:
        if ancestor.tag == "table" and is_data_table(ancestor):
            return False
        ancestor = ancestor.getparent()
    weight = _class_weight(el) if flags.weight_classes else 0
    if weight < 0:
        return True
    if stats.commas.get(el, 0) >= 10:
        return False
    length = stats.text.get(el, 0)
    if length <= 40 and _AD_OR_LOADING.match(normalize_text(_text(el))):
        return True
    counts = stats.counts[el]
    is_list = tag in ("ul", "ol") or (length > 0 and counts[_C_LIST_TEXT] / length > 0.9)
    paragraphs = counts[_C_P]
    images = counts[_C_IMG]
    items = counts[_C_LI] - 100
    heading_density = counts[_C_HEADING_TEXT] / length if length else 0.0
    link_density = stats.density(el)
    in_figure = _has_ancestor(el, ("figure",))
    remove = (
        (images > 1 and paragraphs / images < 0.5 and not in_figure)
        or (not is_list and items > paragraphs)
        or (counts[_C_INPUT] > paragraphs // 3)
        or (not is_list and heading_density < 0.9 and length < 25 and (images == 0 or images > 2)
            and not in_figure and not counts[_C_VIDEO])
        or (not is_list and weight < 25 and link_density > 0.2)
        or (weight >= 25 and link_density > 0.5)
    )
    if is_list and remove:
        # A plain list of pictures stays.
        for child in el:
            if len(child) > 1:
                return remove
        if images and images == counts[_C_LI]:
            return False
    return remove


def _is_data_table(table: etree._Element) -> bool:
    if table.get("role") == "presentation" or table.get("datatable") == "0":
        return False
    if table.get("summary") or table.find("caption") is not None or table.find(".//th") is not None:
        return True
    if table.find(".//table") is not None:
        return False
    rows = table.findall(".//tr")
    if len(rows) >= 10:
        return True
    columns = max((len(r) for r in rows), default=0)
    return len(rows) * columns > 10


# --------------------------------------------------------------------------- stage 5: emit
_EMIT_BLOCKS = _BLOCK_TAGS - {"td", "th"}
_INHERITED_KINDS = ("list_item", "quote", "caption")


class _Emitter:
    """Walks the chosen container in document order and builds the node list."""

    def __init__(self, *, base: str, max_images: int, captions_as_text: bool, srcset_only_images: bool,
                 dropped: Counter) -> None:
        self.base = base
        self.dropped = dropped
        self.images_met = 0
        self.teasers: set[int] = set()
        """`id()`s of the image nodes whose image is a link to another page (a teaser)."""
        self.srcset_only_images = srcset_only_images
        self.captions_as_text = captions_as_text
        self.max_images = max_images
        self.nodes: list[Node] = []
        self.buffer: list[str] = []
        self.kinds: list[TextKind] = ["paragraph"]
        self.seen_images: set[str] = set()
        self.captions: list[str] = []
        self.resolved: dict[str, str | None] = {}
        self.root: etree._Element | None = None
        self.has_text = False
        self.scanned = 0

    def walk(self, root: etree._Element) -> None:
        # Explicit stack of (element, entering?) so deep trees cannot overflow Python's stack.
        self.root = root
        stack: list[tuple[etree._Element, bool]] = [(root, True)]
        while stack:
            el, entering = stack.pop()
            tag = el.tag
            if not entering:
                self._leave(el, tag)
                continue
            if not isinstance(tag, str) or tag in _HARD_DROP_TAGS:
                self._tail(el)
                continue
            if tag in ("img", "video", "picture", "br", "hr"):
                if tag == "img":
                    self._image(el)
                elif tag == "video":
                    self._video(el)
                elif tag == "picture":
                    self._picture(el)
                elif tag == "br":
                    self.buffer.append("\x00")
                else:
                    self.flush()
                self._tail(el)
                continue
            if tag == "figcaption" and not self.captions_as_text and _has_media_ancestor(el):
                self._tail(el)  # the caption is on the image node
                continue
            if tag in _EMIT_BLOCKS:
                self.flush()
                kind = _KIND.get(tag)
                if kind is None:
                    parent_kind = self.kinds[-1]
                    kind = parent_kind if parent_kind in _INHERITED_KINDS else "paragraph"
                self.kinds.append(kind)
                if tag == "figure":
                    self.captions.append(_figure_caption(el))
            elif tag in ("td", "th") and self._buffer_has_text():
                self.buffer.append(" | ")  # between cells of a row, not before the first
            if el.text:
                self.buffer.append(el.text)
            stack.append((el, False))
            for child in reversed(el):
                stack.append((child, True))
        self.flush()

    def _tail(self, el: etree._Element) -> None:
        # The container's own tail is page text after the main content, not part of it.
        if el.tail and el is not self.root:
            self.buffer.append(el.tail)

    def _leave(self, el: etree._Element, tag: str) -> None:
        if tag in _EMIT_BLOCKS:
            self.flush()
            self.kinds.pop()
            if tag == "figure":
                self.captions.pop()
        self._tail(el)

    def _buffer_has_text(self) -> bool:
        # Amortised: each buffered piece is looked at once between flushes (rows can be very wide).
        if not self.has_text:
            for piece in self.buffer[self.scanned:]:
                if piece.strip():
                    self.has_text = True
                    break
            self.scanned = len(self.buffer)
        return self.has_text

    def flush(self) -> None:
        self.has_text = False
        self.scanned = 0
        if not self.buffer:
            return
        raw = "".join(self.buffer)
        self.buffer.clear()
        kind = self.kinds[-1]
        if kind == "preformatted":
            lines = [line.rstrip() for line in strip_invisible(raw.replace("\x00", "\n")).expandtabs(4).split("\n")]
            text = "\n".join(lines).strip("\n")
            if text and not text.isascii():
                text = unicodedata.normalize("NFC", text)
        else:
            parts = [normalize_text(part) for part in raw.split("\x00")]
            text = "\n".join(p for p in parts if p)
            if kind == "heading" and text.endswith("]"):
                text = _EDIT_RESIDUE.sub("", text)  # brackets left around a removed edit link
            if kind == "table":
                text = text.strip(" |")
                text = re.sub(r"(\s*\|\s*)+", " | ", text) if "|" in text else text
        if text.strip():
            self.nodes.append(TextNode(text=text, kind=kind))

    # -- media
    def _absolute(self, raw: str | None) -> str | None:
        if not raw:
            return None
        cached = self.resolved.get(raw, False)
        if cached is not False:
            return cached
        url = self._resolve(raw)
        if len(self.resolved) < 4096:
            self.resolved[raw] = url
        return url

    def _resolve(self, raw: str) -> str | None:
        value = raw.strip()
        if not value or value.lower().startswith(_SKIP_SCHEMES):
            return None
        try:
            return urljoin(self.base, value)
        except ValueError:
            return None

    def _image(self, el: etree._Element, extra_srcset: list[str] | None = None) -> None:
        self.images_met += 1
        if len(self.seen_images) >= self.max_images:
            self.dropped["too_many_images"] += 1
            return
        url = self._absolute(el.get("src"))
        if url is not None and _PLACEHOLDER.search(url):
            url = None
        if url is None and self.srcset_only_images:
            candidates = [el.get("srcset"), *(extra_srcset or [])]
            url = next((u for u in (self._absolute(_largest(s)) for s in candidates if s) if u), None)
        if url is None:
            self.dropped["no_source"] += 1  # no src, or only a placeholder / data: URL
            return
        if _is_furniture(el):
            # Site furniture marked as such. (URL substrings like "logo" are left to the image
            # filters: articles about a logo show it.)
            self.dropped["furniture"] += 1
            return
        width = _dimension(el.get("width") or el.get("data-width"))
        height = _dimension(el.get("height") or el.get("data-height"))
        if width is not None and height is not None and width <= 2 and height <= 2:
            self.dropped["tracking_pixel"] += 1
            return
        if url in self.seen_images:
            self.dropped["duplicate"] += 1
            return
        self.seen_images.add(url)
        self.flush()
        node = ImageNode(url=url, alt=normalize_text(el.get("alt") or ""),
                         caption=self.captions[-1] if self.captions else "", width=width, height=height)
        self.nodes.append(node)
        if _links_to_page(el):
            self.teasers.add(id(node))

    def _picture(self, el: etree._Element) -> None:
        srcsets = [s.get("srcset") or s.get("data-srcset") or s.get("src") or "" for s in el.iter("source")]
        img = next(iter(el.iter("img")), None)
        if img is not None:  # a <picture> without <img> shows nothing (HTML standard)
            self._image(img, [s for s in srcsets if s])

    def _video(self, el: etree._Element) -> None:
        # Lazy-loading markup may repeat the poster image in src/data-src: it is the still shown
        # before playback (`poster`), never a playable source.
        poster = self._absolute(el.get("poster") or el.get("data-poster"))
        sources: list[str] = []
        for raw in [el.get("src"), el.get("data-src"), *(s.get("src") or s.get("data-src") for s in el.iter("source"))]:
            url = self._absolute(raw)
            if url and url != poster and url not in sources:
                sources.append(url)
        if not sources:
            return
        self.flush()
        self.nodes.append(VideoNode(sources=tuple(sources), poster=poster,
                                    caption=self.captions[-1] if self.captions else "",
                                    width=_dimension(el.get("width")), height=_dimension(el.get("height"))))


IMAGE_DROP_REASONS = {
    "not_main_content": "outside the chosen main content, or inside an element dropped before it "
                        "was chosen (navigation, hidden, comments, ...)",
    "boilerplate_block": "inside a block removed from the main content (link list, share bar, gallery "
                         "of unrelated teasers)",
    "no_source": "no usable src/srcset (missing, placeholder, data: URL)",
    "furniture": "marked as a logo, icon or author portrait by its class or id",
    "tracking_pixel": "declared at most 2x2 pixels",
    "duplicate": "the same URL earlier in the document",
    "too_many_images": "past `ExtractConfig.max_images`",
    "trailing_image_run": "a run of 2+ uncaptioned images linking to other pages that ends the document "
                          "with no text after it (teasers of other stories)",
}
"""Reasons counted in `Document.dropped_images` by `extract_document`."""

_STRAY_TAIL_WORD = re.compile(r"^[A-Z][A-Za-z]{1,19}$")
_STRAY_TAIL_MIN_WORDS = 100


def _links_to_page(img: etree._Element) -> bool:
    """Whether an image is (inside) a link to another page, not to an image file or an anchor."""
    el = img.getparent()
    for _ in range(4):
        if el is None:
            return False
        if el.tag == "a":
            href = (el.get("href") or "").strip()
            return bool(href) and not href.startswith("#") and not _IMAGE_URL.match(href)
        el = el.getparent()
    return False


def _trim_tail(nodes: list[Node], teasers: set[int], dropped: Counter) -> list[Node]:
    """Trim what trails the article: a stray single word ("Featured", "Advertisement") left by a
    widget after 100+ words of text, and a run of 2+ uncaptioned images that link to other pages
    with no text after them (teaser thumbnails of other stories). Galleries (images not linking
    elsewhere) and a single closing picture stay."""
    end = len(nodes)
    while end:
        last = nodes[end - 1]
        if isinstance(last, TextNode):
            text = last.text.strip()
            if (last.kind in ("paragraph", "heading") and _STRAY_TAIL_WORD.match(text)
                    and sum(len(n.text.split()) for n in nodes[:end - 1] if isinstance(n, TextNode))
                    >= _STRAY_TAIL_MIN_WORDS):
                end -= 1
                continue
            break
        start = end
        while start and isinstance(nodes[start - 1], ImageNode) and not nodes[start - 1].caption \
                and id(nodes[start - 1]) in teasers:
            start -= 1
        if end - start >= 2:
            dropped["trailing_image_run"] += end - start
            end = start
            continue
        break
    return nodes if end == len(nodes) else nodes[:end]


def _has_media_ancestor(caption: etree._Element) -> bool:
    """Whether a <figcaption> belongs to a figure that shows an image or a video."""
    figure = caption.getparent()
    while figure is not None and figure.tag != "figure":
        figure = figure.getparent()
    return figure is not None and next(figure.iter("img", "picture", "video"), None) is not None


def _is_furniture(img: etree._Element) -> bool:
    """A logo or icon by the image's own class/id; an author portrait also by its two nearest ancestors'."""
    el: etree._Element | None = img
    wanted = _H_LOGO | _H_PORTRAIT
    for _ in range(3):
        if el is None:
            return False
        match = _class_id(el)
        if match and _hints(match) & wanted:
            return True
        el = el.getparent()
        wanted = _H_PORTRAIT
    return False


def _figure_caption(figure: etree._Element) -> str:
    for caption in figure.iter("figcaption"):
        return normalize_text(_text(caption))
    return ""


def _largest(srcset: str) -> str | None:
    """The largest candidate of a srcset (by width `w`, else density `x`, else the last one).

    URLs may contain commas (image CDNs: `c_fill,w_80`), so candidates are split the way the
    HTML standard does: a URL is a run of non-space characters, descriptors run to the next comma.
    """
    best, best_size = None, -1.0
    for match in _SRCSET_CANDIDATE.finditer(srcset):
        url, descriptor = match.group(1), (match.group(2) or "").strip().lower()
        if url.endswith(","):
            url, descriptor = url.rstrip(","), ""
        if not url:
            continue
        size = 1e-6
        if descriptor:
            token = descriptor.split()[0]
            try:
                if token.endswith("w"):
                    size = float(token[:-1])
                elif token.endswith("x"):
                    size = float(token[:-1]) * 1e-6  # densities rank below any width
            except ValueError:
                pass
        if size >= best_size:
            best, best_size = url, size
    return best


_SRCSET_CANDIDATE = re.compile(r"[\s,]*(\S+)([^,]*)")


def _dimension(value: str | None) -> int | None:
    if not value:
        return None
    match = _DIMENSION.match(value)
    return int(match.group(1)) if match else None
