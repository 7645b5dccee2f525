"""A deterministic synthetic website for the demo and the tests.

`SampleWeb(seed=0, num_pages=300)` is a news-style site: a home page and index pages that link
every article; articles with paragraphs of prose, figures with captions (PNG and JPEG, lazy
`data-src` and `srcset`), a logo shared by every page, nav/header/footer/aside/ad/cookie-banner
boilerplate, `<video>` pages (MP4 + poster + caption), a robots.txt that disallows `/private/`
(private pages are linked anyway), images sending `X-Robots-Tag: noai`, near-duplicate copies
under `/archive/` and one exact duplicate under `/mirror/`. Every image and video shows a
coloured shape and its alt text / caption says which ("a small red circle on a white
background"). With `num_naming_pages`, "naming" stories under `/stories/` bind made-up names to
the objects of the page ("This is the tobax, ..."), differently on every page, each object shown
several times (bursty, with meanings set by the page, the conditions under which in-context
learning emerges: Chan et al. 2022). Everything is generated lazily from the seed and cached; `truth()` is the ground
truth for end-to-end tests; `serve_sample_web` serves it on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import functools
import html
import os
import random
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from flamboyance.crawl.sample_media import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    ShapeSpec,
    render_banner,
    render_image,
    render_logo,
    render_video,
    video_caption,
)
from flamboyance.crawl.sample_text import TOPICS, Article, distinct_names, fill_template, generate_article
from flamboyance.crawl.warc import WarcWriter, build_response_bytes, warc_date

__all__ = ["ImageTruth", "NAMING_SENTENCE", "NamingTruth", "SampleTruth", "SampleWeb", "VideoTruth", "naming_text",
           "serve_sample_web"]

LOGO_PATH = "/static/logo.png"
ARTICLES_PER_INDEX = 25
NUM_PRIVATE = 5
NUM_BANNERS = 4
_PLACEHOLDER_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_LAST_MODIFIED = email.utils.format_datetime(_EPOCH, usegmt=True)
NAMING_SENTENCE = "This is the {name}"
"""How a naming story's text right after an image names the object (the novel-names eval uses it too)."""
NAMING_IMAGE_SIDE = 160
_SENTENCE_END = re.compile(r"(?<=[.!?]) ")
_NAMING_TAILS = (
    "said {P}",
    "{P} told us",
    "as {P} explained",
    "the pride of {PL}",
    "found {TIME}",
    "back again {TIME}",
    "talked about every {D}",
    "kept since {M}",
    "by the window",
    "on the kitchen table",
    "again",
    "the one from {PL}",
    "once more",
    "on the shelf",
)
"""Short clauses after a naming sentence (``This is the tobax, said Lena Mensah.``): each chunk stays
a few tokens, so a training window of a naming story holds several images of the same objects."""


def naming_text(name: str, tail: str = "") -> str:
    """The sentence that follows an image in a naming story: `This is the <name>, <tail>.`"""
    return NAMING_SENTENCE.format(name=name) + (f", {tail}." if tail else ".")


@dataclass(frozen=True, slots=True)
class ImageTruth:
    """One image on a page: its `src` URL, caption, `srcset` variants, opt-out flag."""

    url: str
    caption: str
    srcset: tuple[str, ...] = ()
    noai: bool = False
    in_figure: bool = True


@dataclass(frozen=True, slots=True)
class VideoTruth:
    """One video on a page: the MP4 URL, caption and poster."""

    url: str
    caption: str
    poster: str


@dataclass(frozen=True, slots=True)
class NamingTruth:
    """One naming story: which made-up name the page gives each object, and its images in order
    as (image URL, name)."""

    names: dict[str, str]  # name -> the object it names ("red circle")
    images: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SampleTruth:
    """Ground truth of a `SampleWeb` (URLs absolute when a base URL was given, else paths)."""

    pages: tuple[str, ...]  # every HTML page linked from the home page
    crawlable: tuple[str, ...]  # pages robots.txt allows
    disallowed: tuple[str, ...]  # pages robots.txt disallows (under /private/)
    articles: tuple[str, ...]  # original article pages
    near_duplicates: tuple[tuple[str, str], ...]  # (original, near copy with another date line)
    exact_duplicates: tuple[tuple[str, str], ...]  # (original, byte-identical copy)
    noai_images: tuple[str, ...]  # image URLs served with X-Robots-Tag: noai
    logo: str
    images: dict[str, tuple[ImageTruth, ...]] = field(default_factory=dict)  # page -> images
    videos: dict[str, tuple[VideoTruth, ...]] = field(default_factory=dict)  # page -> videos
    robots_txt: str = ""
    naming: dict[str, NamingTruth] = field(default_factory=dict)  # naming story page -> its bindings


@dataclass(frozen=True, slots=True)
class _Figure:
    path: str
    spec: ShapeSpec
    fmt: str  # "PNG" | "JPEG"
    width: int
    height: int
    seed: int
    lazy: bool
    in_figure: bool
    noai: bool

    @property
    def path_2x(self) -> str:
        stem, ext = self.path.rsplit(".", 1)
        return f"{stem}@2x.{ext}"


@dataclass(frozen=True, slots=True)
class _Video:
    path: str
    poster: str
    spec: ShapeSpec
    motion: str
    seed: int


@dataclass(frozen=True, slots=True)
class _Page:
    key: str  # "a12" article, "p3" private
    path: str
    article: Article
    published: dt.date
    figures: tuple[_Figure, ...]
    videos: tuple[_Video, ...]
    names: tuple[str, ...] = ()  # naming stories: the name given to each figure, in order


def _slug(title: str) -> str:
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "-".join(words[:6])


class SampleWeb:
    """The synthetic site. `num_pages` is the number of articles (there are also index pages,
    private pages and duplicates). Deterministic in (`seed`, `num_pages`)."""

    def __init__(self, *, seed: int = 0, num_pages: int = 300, num_naming_pages: int = 0) -> None:
        if num_pages < 1:
            raise ValueError(f"num_pages must be >= 1, got {num_pages}")
        if num_naming_pages < 0:
            raise ValueError(f"num_naming_pages must be >= 0, got {num_naming_pages}")
        self.seed = seed
        self.num_pages = num_pages
        self.num_naming_pages = num_naming_pages
        self._articles = [self._make_page(f"a{i}", i) for i in range(1, num_pages + 1)]
        self._stories = [self._make_naming_page(i) for i in range(1, num_naming_pages + 1)]
        self._private = [self._make_page(f"p{j}", j) for j in range(1, NUM_PRIVATE + 1)]
        self._by_path: dict[str, _Page] = {p.path: p for p in self._articles + self._stories + self._private}
        self._near_dups = {self._archive_path(p): p for p in self._articles if self._is_near_dup_source(p)}
        self._exact_dups = {self._mirror_path(self._articles[0]): self._articles[0]}
        self._media: dict[str, tuple[str, object]] = {}
        for page in self._articles + self._stories + self._private:
            for fig in page.figures:
                self._media[fig.path] = ("image", (fig, 1))
                self._media[fig.path_2x] = ("image", (fig, 2))
            for video in page.videos:
                self._media[video.path] = ("video", video)
                self._media[video.poster] = ("poster", video)

    # -- construction ----------------------------------------------------------------------

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed, *parts)))

    def _make_page(self, key: str, number: int) -> _Page:
        rng = self._rng("page", key)
        article = generate_article(rng)
        if key.startswith("a"):
            path = f"/articles/{number:04d}-{_slug(article.title)}.html"
        else:
            path = f"/private/{number}.html"
        published = (_EPOCH + dt.timedelta(days=rng.randrange(0, 700))).date()
        noai = key.startswith("a") and number % 30 == 5
        figures = []
        for k in range(1, rng.randint(1, 4) + 1):
            colour = rng.choice(list(COLOURS))
            background = rng.choice([b for b in BACKGROUNDS if b != colour])
            spec = ShapeSpec(colour, rng.choice(SHAPES), background, rng.choice(("small", "large")))
            png = (number + k) % 2 == 0
            prefix = f"{number:04d}" if key.startswith("a") else f"private-{number}"
            figures.append(
                _Figure(
                    path=f"/images/{prefix}-{k}.{'png' if png else 'jpg'}",
                    spec=spec,
                    fmt="PNG" if png else "JPEG",
                    width=224 if png else 256,
                    height=224 if png else 192,
                    seed=rng.randrange(2**31),
                    lazy=(number + k) % 3 == 0,
                    in_figure=not (k > 1 and number % 4 == 1),
                    noai=noai,
                )
            )
        videos = []
        if key.startswith("a") and number % 10 == 3:
            colour = rng.choice(list(COLOURS))
            background = rng.choice([b for b in BACKGROUNDS if b != colour])
            spec = ShapeSpec(colour, rng.choice(SHAPES), background, "small")
            videos.append(
                _Video(
                    path=f"/videos/{number:04d}.mp4",
                    poster=f"/videos/{number:04d}-poster.jpg",
                    spec=spec,
                    motion=rng.choice(sorted(MOTIONS)),
                    seed=rng.randrange(2**31),
                )
            )
        return _Page(key, path, article, published, tuple(figures), tuple(videos))

    def _make_naming_page(self, number: int) -> _Page:
        """A naming story: 8..10 images of 2..3 objects (distinct colours and shapes, one
        background), each shown at least twice, each bound to a made-up name, with a little of an
        article's prose around them (`_naming_body`)."""
        rng = self._rng("naming", number)
        article = generate_article(rng, num_paragraphs=2)
        count = rng.randint(2, 3)
        colours = rng.sample([c for c in COLOURS if c != "white"], count)
        shapes = rng.sample(SHAPES, count)
        background = rng.choice([b for b in BACKGROUNDS if b not in colours])
        specs = [ShapeSpec(c, s, background, "large") for c, s in zip(colours, shapes)]
        names = distinct_names(rng, count)
        order = [k % count for k in range(rng.randint(8, 10))]
        rng.shuffle(order)
        figures = tuple(
            _Figure(
                path=f"/images/story-{number:04d}-{k}.png",
                spec=specs[obj],
                fmt="PNG",
                width=NAMING_IMAGE_SIDE,
                height=NAMING_IMAGE_SIDE,
                seed=rng.randrange(2**31),
                lazy=False,
                in_figure=False,
                noai=False,
            )
            for k, obj in enumerate(order, 1)
        )
        path = f"/stories/{number:04d}-{_slug(article.title)}.html"
        published = (_EPOCH + dt.timedelta(days=rng.randrange(0, 700))).date()
        return _Page(f"s{number}", path, article, published, figures, (), tuple(names[obj] for obj in order))

    @staticmethod
    def _is_near_dup_source(page: _Page) -> bool:
        return int(page.key[1:]) % 75 == 10

    @staticmethod
    def _archive_path(page: _Page) -> str:
        return page.path.replace("/articles/", "/archive/", 1)

    @staticmethod
    def _mirror_path(page: _Page) -> str:
        return page.path.replace("/articles/", "/mirror/", 1)

    def _index_paths(self) -> list[str]:
        count = -(-len(self._listed()) // ARTICLES_PER_INDEX)
        return [f"/index/{k}.html" for k in range(1, count + 1)]

    def _listed(self) -> list[_Page]:
        """The pages the index pages list: articles, then naming stories."""
        return self._articles + self._stories

    # -- ground truth ----------------------------------------------------------------------

    def robots_txt(self) -> str:
        return (
            "# Sample web robots.txt\n"
            "User-agent: *\n"
            "Disallow: /private/\n"
            "Crawl-delay: 0\n"
        )

    def truth(self, base_url: str = "") -> SampleTruth:
        """Ground truth; URLs are `base_url` + path (paths if `base_url` is empty)."""
        base = base_url.rstrip("/")

        def url(path: str) -> str:
            return base + path

        def images(page: _Page) -> tuple[ImageTruth, ...]:
            return tuple(
                ImageTruth(url(f.path), f.spec.caption, (url(f.path), url(f.path_2x)), f.noai, f.in_figure)
                for f in page.figures
            )

        def videos(page: _Page) -> tuple[VideoTruth, ...]:
            return tuple(VideoTruth(url(v.path), video_caption(v.spec, v.motion), url(v.poster)) for v in page.videos)

        crawlable = ["/", *self._index_paths(), *(p.path for p in self._articles), *(p.path for p in self._stories),
                     *self._near_dups, *self._exact_dups]
        disallowed = [p.path for p in self._private]
        page_images = {}
        page_videos = {}
        for path in crawlable + disallowed:
            page = self._page_for(path)
            if page is not None:
                page_images[url(path)] = images(page)
                if page.videos:
                    page_videos[url(path)] = videos(page)
        noai = sorted(url(p) for f in self._figures() if f.noai for p in (f.path, f.path_2x))
        return SampleTruth(
            pages=tuple(sorted(url(p) for p in crawlable + disallowed)),
            crawlable=tuple(sorted(url(p) for p in crawlable)),
            disallowed=tuple(sorted(url(p) for p in disallowed)),
            articles=tuple(url(p.path) for p in self._articles),
            near_duplicates=tuple((url(p.path), url(a)) for a, p in self._near_dups.items()),
            exact_duplicates=tuple((url(p.path), url(m)) for m, p in self._exact_dups.items()),
            noai_images=tuple(noai),
            logo=url(LOGO_PATH),
            images=page_images,
            videos=page_videos,
            robots_txt=self.robots_txt(),
            naming={
                url(p.path): NamingTruth(
                    names={name: f"{f.spec.colour} {f.spec.shape}" for f, name in zip(p.figures, p.names)},
                    images=tuple((url(f.path), name) for f, name in zip(p.figures, p.names)),
                )
                for p in self._stories
            },
        )

    def _figures(self) -> Iterator[_Figure]:
        for page in self._articles + self._stories + self._private:
            yield from page.figures

    def _page_for(self, path: str) -> _Page | None:
        if path in self._by_path:
            return self._by_path[path]
        return self._near_dups.get(path) or self._exact_dups.get(path)

    # -- HTML ------------------------------------------------------------------------------

    def _layout(self, title: str, main: str, *, section: str, related: list[_Page]) -> str:
        indexes = self._index_paths()
        nav_items = [("/", "Home"), (indexes[0], "Latest"), (indexes[-1], "Oldest"), ("/private/1.html", "Members")]
        nav = "".join(
            f'<li class="nav-item{" active" if label == section else ""}"><a href="{href}">{label}</a></li>'
            for href, label in nav_items
        )
        related_html = "".join(
            f'<li><a href="{p.path}">{html.escape(p.article.title)}</a></li>' for p in related
        )
        banner = (sum(map(ord, title)) % NUM_BANNERS) + 1
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} | The Flamboyance Gazette</title>
<link rel="stylesheet" href="/static/site.css">
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments);}}</script>
</head>
<body class="page">
<div id="cookie-banner" class="cookie-banner cookie-consent" role="dialog">
<p>We use cookies to improve your experience and to show personalised ads. By continuing to browse you agree to our use of cookies.</p>
<button class="cookie-accept">Accept all</button> <button class="cookie-settings">Settings</button>
</div>
<header class="site-header">
<a class="logo" href="/"><img src="{LOGO_PATH}" alt="The Flamboyance Gazette logo" width="240" height="80"></a>
<nav class="main-nav navbar" aria-label="Main"><ul class="nav-menu">{nav}</ul></nav>
<form class="search-form" action="/search"><input type="search" name="q" placeholder="Search"></form>
</header>
<div class="ad-slot advertisement ad-banner" data-ad-unit="top">
<a href="https://ads.example.invalid/click?id={banner}" rel="sponsored nofollow"><img src="/static/ads/banner-{banner}.png" alt="Advertisement" width="728" height="90"></a>
</div>
<div class="container">
<main id="main-content" class="content">
{main}
</main>
<aside class="sidebar widget-area">
<section class="widget related-posts"><h2 class="widget-title">Related articles</h2><ul>{related_html}</ul></section>
<section class="widget newsletter-signup"><h2 class="widget-title">Newsletter</h2><p>Sign up for our weekly newsletter.</p></section>
</aside>
</div>
<footer class="site-footer">
<nav class="footer-nav"><a href="/">Home</a> | <a href="/index/1.html">All articles</a></nav>
<p class="copyright">&copy; 2024 The Flamboyance Gazette. All rights reserved.</p>
<p class="social-share">Share: <a href="https://social.example.invalid/share">Social</a> <a href="mailto:editor@example.invalid">Email us</a></p>
</footer>
</body>
</html>
"""

    def _related(self, page: _Page) -> list[_Page]:
        n = len(self._articles)
        number = int(page.key[1:])
        picks = []
        for step in (1, 7, 31, 113):
            other = self._articles[(number - 1 + step) % n]
            if other is not page and other not in picks:
                picks.append(other)
        return picks

    def _figure_html(self, fig: _Figure) -> str:
        alt = html.escape(fig.spec.caption)
        srcset = f"{fig.path} 1x, {fig.path_2x} 2x"
        size = f'width="{fig.width}" height="{fig.height}"'
        if fig.lazy:
            img = (f'<img class="lazyload" src="{_PLACEHOLDER_GIF}" data-src="{fig.path}" '
                   f'data-srcset="{srcset}" alt="{alt}" {size}>')
        else:
            img = f'<img src="{fig.path}" srcset="{srcset}" alt="{alt}" {size} loading="lazy">'
        if not fig.in_figure:
            return f'<p class="inline-image">{img}</p>'
        caption = html.escape(fig.spec.caption[0].upper() + fig.spec.caption[1:] + ".")
        return f'<figure class="wp-block-image">{img}<figcaption>{caption}</figcaption></figure>'

    def _video_html(self, video: _Video) -> str:
        caption = video_caption(video.spec, video.motion)
        return (
            f'<figure class="video-figure"><video controls preload="none" width="128" height="128" '
            f'poster="{video.poster}"><source src="{video.path}" type="video/mp4">'
            "Your browser does not support the video tag.</video>"
            f"<figcaption>{html.escape(caption[0].upper() + caption[1:])}.</figcaption></figure>"
        )

    def _naming_body(self, page: _Page) -> list[str]:
        """A naming story's body: two sentences of intro, then each image followed by the sentence
        that names its object and a short clause (a different one each time), then one closing
        sentence. The prose around the images stays short, so a training window (128 tokens) of the
        story holds most of its images, and with them the names bound and repeated."""
        rng = self._rng("naming-text", page.key)
        topic = next(t for t in TOPICS if t.name == page.article.topic)
        tails = list(_NAMING_TAILS)
        rng.shuffle(tails)
        intro = " ".join(_SENTENCE_END.split(page.article.paragraphs[0])[:2])
        blocks = [f"<p>{html.escape(intro)}</p>"]
        for k, (fig, name) in enumerate(zip(page.figures, page.names)):
            blocks.append(self._figure_html(fig))
            template = tails[k % len(tails)]
            tail = fill_template(template, rng, topic)
            if template[0].islower():  # keep a person's name capitalised
                tail = tail[0].lower() + tail[1:]
            blocks.append(f"<p>{html.escape(naming_text(name, tail))}</p>")
        closing = _SENTENCE_END.split(page.article.paragraphs[-1])[-1]
        blocks.append(f"<p>{html.escape(closing)}</p>")
        return blocks

    def _article_html(self, page: _Page, *, archive: bool = False) -> str:
        article = page.article
        date = page.published
        if archive:  # the near-duplicate: same story, another date line and a note
            date_line = f"Updated {(date + dt.timedelta(days=400)).isoformat()} &middot; From the archive"
        else:
            date_line = f"Published {date.isoformat()}"
        blocks = []
        # Interleave: paragraphs with figures after the 1st, 3rd, ... paragraph; videos after the 2nd.
        figures = list(page.figures)
        for index, paragraph in enumerate(article.paragraphs if not page.names else ()):
            blocks.append(f"<p>{html.escape(paragraph)}</p>")
            if index == 1:
                blocks.extend(self._video_html(v) for v in page.videos)
            if index % 2 == 0 and figures:
                blocks.append(self._figure_html(figures.pop(0)))
        if page.names:
            blocks, figures = self._naming_body(page), []
        blocks.extend(self._figure_html(f) for f in figures)
        body = "\n".join(blocks)
        main = f"""<article class="post hentry">
<header class="entry-header"><h1 class="entry-title">{html.escape(article.title)}</h1>
<p class="byline">By <span class="author">{html.escape(article.author)}</span> &middot; <time>{date_line}</time> &middot; <span class="category">{article.topic}</span></p></header>
<div class="entry-content">
{body}
</div>
<div class="share-buttons"><a href="https://social.example.invalid/share">Share this article</a></div>
</article>"""
        return self._layout(article.title, main, section="Archive" if archive else "Latest", related=self._related(page)
                            if page.key.startswith("a") else [])

    def _home_html(self) -> str:
        latest = "".join(
            f'<li><a href="{p.path}">{html.escape(p.article.title)}</a></li>' for p in self._articles[-10:][::-1]
        )
        indexes = "".join(f'<li><a href="{path}">Page {k}</a></li>' for k, path in enumerate(self._index_paths(), 1))
        private = "".join(f'<li><a href="{p.path}">{html.escape(p.article.title)}</a></li>' for p in self._private)
        mirror = "".join(f'<li><a href="{m}">{html.escape(p.article.title)} (mirror)</a></li>'
                         for m, p in self._exact_dups.items())
        main = f"""<h1>The Flamboyance Gazette</h1>
<p>Stories about gardens, kitchens, skies, boats and the people who love them.</p>
<section class="latest"><h2>Latest stories</h2><ul>{latest}</ul></section>
<section class="archive-index"><h2>All stories</h2><ul>{indexes}</ul></section>
<section class="members"><h2>Members only</h2><ul>{private}</ul></section>
<section class="mirrors"><h2>Mirrors</h2><ul>{mirror}</ul></section>"""
        return self._layout("Home", main, section="Home", related=[])

    def _index_html(self, k: int) -> str | None:
        start = (k - 1) * ARTICLES_PER_INDEX
        chunk = self._listed()[start : start + ARTICLES_PER_INDEX]
        if not chunk:
            return None
        items = "".join(f'<li><a href="{p.path}">{html.escape(p.article.title)}</a></li>' for p in chunk)
        archive = "".join(
            f'<li><a href="{a}">{html.escape(p.article.title)} (archived)</a></li>'
            for a, p in self._near_dups.items()
            if p in chunk
        )
        pages = self._index_paths()
        pager = "".join(f'<a class="page-numbers" href="{path}">{n}</a> ' for n, path in enumerate(pages, 1))
        main = (f"<h1>All stories, page {k}</h1><ul class=\"post-list\">{items}</ul>"
                f"<h2>From the archive</h2><ul>{archive}</ul><nav class=\"pagination\">{pager}</nav>")
        return self._layout(f"All stories, page {k}", main, section="Latest", related=[])

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - the site lives as long as its pages
    def _html(self, path: str) -> bytes | None:
        if path in ("/", "/index.html"):
            return self._home_html().encode("utf-8")
        match = re.fullmatch(r"/index/(\d+)\.html", path)
        if match:
            text = self._index_html(int(match.group(1)))
            return None if text is None else text.encode("utf-8")
        if path in self._by_path:
            return self._article_html(self._by_path[path]).encode("utf-8")
        if path in self._near_dups:
            return self._article_html(self._near_dups[path], archive=True).encode("utf-8")
        if path in self._exact_dups:
            return self._html(self._exact_dups[path].path)
        return None

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def _media_bytes(self, path: str) -> tuple[bytes, str] | None:
        if path == LOGO_PATH:
            return render_logo(), "image/png"
        match = re.fullmatch(r"/static/ads/banner-(\d+)\.png", path)
        if match and 1 <= int(match.group(1)) <= NUM_BANNERS:
            return render_banner(int(match.group(1))), "image/png"
        if path == "/static/site.css":
            return b"body{font-family:serif;max-width:60em;margin:auto}.cookie-banner{position:fixed}\n", "text/css"
        entry = self._media.get(path)
        if entry is None:
            return None
        kind, item = entry
        if kind == "image":
            fig, scale = item
            data = render_image(fig.spec, seed=fig.seed, width=fig.width * scale, height=fig.height * scale, fmt=fig.fmt)
            return data, "image/png" if fig.fmt == "PNG" else "image/jpeg"
        if kind == "video":
            return render_video(item.spec, item.motion, seed=item.seed), "video/mp4"
        return render_image(item.spec, seed=item.seed, width=256, height=256, fmt="JPEG"), "image/jpeg"

    # -- HTTP ------------------------------------------------------------------------------

    def response(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for a request path (query and fragment ignored)."""
        path = path.split("#", 1)[0].split("?", 1)[0] or "/"
        headers = {"Last-Modified": _LAST_MODIFIED, "Cache-Control": "max-age=3600"}
        if path == "/robots.txt":
            body = self.robots_txt().encode("utf-8")
            return 200, {**headers, "Content-Type": "text/plain; charset=utf-8"}, body
        # No lock: the caches are thread-safe and rendering is deterministic, so a race only
        # renders something twice.
        page = self._html(path)
        media = None if page is not None else self._media_bytes(path)
        if page is not None:
            return 200, {**headers, "Content-Type": "text/html; charset=utf-8"}, page
        if media is not None:
            body, content_type = media
            headers["Content-Type"] = content_type
            entry = self._media.get(path)
            if entry and entry[0] == "image" and entry[1][0].noai:
                headers["X-Robots-Tag"] = "noai"
            return 200, headers, body
        body = b"<!DOCTYPE html><html><head><title>Not found</title></head><body><h1>404 Not Found</h1></body></html>"
        return 404, {"Content-Type": "text/html; charset=utf-8"}, body

    def write_warc(self, path: str | os.PathLike, *, base_url: str = "http://127.0.0.1:8000/") -> int:
        """Write the crawlable HTML pages as a gzipped WARC (request + response records) as if
        crawled from `base_url`; byte-identical for the same site and base URL. Written under a
        temporary name, then renamed. Returns the number of pages written."""
        base = base_url.rstrip("/")
        host = base.split("://", 1)[-1].split("/", 1)[0]
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"flamboyance-sample-web:{self.seed}:{self.num_pages}:{base}")
        paths = [p[len(base):] if base else p for p in self.truth(base).crawlable]
        try:
            with open(temp, "wb") as f:
                writer = WarcWriter(f, software="flamboyance/0.1 sample-web")
                writer.write_warcinfo(
                    {"format": "WARC File Format 1.1", "description": "flamboyance synthetic sample web"},
                    date=warc_date(_EPOCH),
                    record_id=f"<urn:uuid:{uuid.uuid5(namespace, 'warcinfo')}>",
                )
                for n, page_path in enumerate(paths):
                    status, headers, body = self.response(page_path)
                    date = _EPOCH + dt.timedelta(seconds=n)
                    headers = {**headers, "Date": email.utils.format_datetime(date, usegmt=True),
                               "Content-Length": str(len(body))}
                    request = (f"GET {page_path} HTTP/1.1\r\nHost: {host}\r\n"
                               "User-Agent: flamboyance/0.1 (+https://github.com/flamboyance)\r\n\r\n").encode()
                    writer.write_exchange(
                        url=base + page_path,
                        request=request,
                        response=build_response_bytes(status, "OK", headers, body),
                        payload=body,
                        ip_address="127.0.0.1",
                        date=warc_date(date),
                        request_id=f"<urn:uuid:{uuid.uuid5(namespace, 'req' + page_path)}>",
                        response_id=f"<urn:uuid:{uuid.uuid5(namespace, 'resp' + page_path)}>",
                    )
            os.replace(temp, target)
        finally:
            if temp.exists():
                temp.unlink()
        return len(paths)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler_for(web: SampleWeb) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "flamboyance-sample-web/0.1"
        timeout = 30  # an idle keep-alive client cannot hold a thread forever

        def _send(self, with_body: bool) -> None:
            status, headers, body = web.response(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._send(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(False)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
            pass

    return Handler


@contextlib.contextmanager
def serve_sample_web(web: SampleWeb, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `web` on host:port (port 0 = any free port) in a daemon thread; yields the base URL
    `http://HOST:PORT/` and stops the server on exit."""
    server = _QuietServer((host, port), _handler_for(web))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                              name="sample-web")
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
