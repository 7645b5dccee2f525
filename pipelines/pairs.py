"""Caption pairs shared by the image-text and video-text jobs: where pairs come from (pages or a
URL + caption table), the caption filters (`flamboyance.preprocess.captions`) as a step, the
deterministic held-out split, and the join of downloaded media back onto their pairs.

The only differences between the two jobs are which page nodes give pairs (images with a
figcaption/alt text, or videos with a caption) and how a downloaded medium becomes a sample;
both are passed in, so the sources are defined once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from flamboyance.preprocess.captions import caption_filters
from flamboyance.preprocess.document import Document, ImageNode, VideoNode
from flamboyance.preprocess.filters import FilterConfig, image_filters
from flamboyance.preprocess.html_text import normalize_text
from flamboyance.preprocess.steps import run_filters

from .common import (
    DEAD_LETTER,
    Progress,
    ReadWarcPages,
    count,
    count_all,
    dead_letter,
    expand_glob,
    held,
    is_table,
    make_key,
    read_table_rows,
    stable_hash,
)


@dataclass(frozen=True, kw_only=True)
class CaptionPair:
    """A media URL with its caption; `key` is a stable hash of both (the sample key)."""

    key: str
    url: str
    caption: str
    source: str = ""
    """Page URL or table URL the pair came from."""
    metadata: dict[str, Any] = field(default_factory=dict)


def make_pair(url: str, caption: str, *, source: str = "", metadata: dict[str, Any] | None = None) -> CaptionPair:
    """A pair with its key (same URL and caption -> same key, wherever they were found)."""
    return CaptionPair(key=make_key(url, caption), url=url, caption=caption, source=source,
                       metadata=dict(metadata or {}))


# --- sources -------------------------------------------------------------------------------------

def image_pairs(doc: Document, *, filters: FilterConfig, use_alt_text: bool,
                counter: Counter) -> Iterator[CaptionPair]:
    """Alt-text / figcaption pairs of a page (ALIGN/LTIP-like): figcaption first, else alt text.

    Images failing the preprocess image filters (boilerplate URLs, declared size/aspect) are
    counted into `counter` and skipped.
    """
    steps = image_filters(filters)
    for node in doc.nodes:
        if not isinstance(node, ImageNode):
            continue
        caption = node.caption or (node.alt if use_alt_text else "")
        if not caption.strip():
            counter["no_caption"] += 1
            continue
        if run_filters(steps, node, counter) is not None:
            continue
        kind = "figcaption" if node.caption else "alt"
        yield make_pair(node.url, normalize_text(caption), source=doc.url,
                        metadata={"page_url": doc.url, "caption_source": kind})


def video_source(node: VideoNode) -> str | None:
    """The best playable source of a video node: its first source (`extract_document` never lists
    the poster as a source; a hand-built node that does still gets a playable one)."""
    for source in node.sources:
        if source != node.poster:
            return source
    return None


def video_pairs(doc: Document, **_: Any) -> Iterator[CaptionPair]:
    """`<video>` elements with a caption (their first, best source)."""
    for node in doc.nodes:
        source = video_source(node) if isinstance(node, VideoNode) else None
        if source and node.caption.strip():
            yield make_pair(source, normalize_text(node.caption), source=doc.url,
                            metadata={"page_url": doc.url, "poster": node.poster})


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:1000]


class _PagePairsFn(beam.DoFn):
    """Page -> its caption pairs. Any exception of one page is caught here: counted
    (`funnel.not_extracted.<reason>`), dead-lettered with the page's WARC location; the job goes on."""

    def __init__(self, *, namespace: str, kind: str, filters: FilterConfig, use_alt_text: bool) -> None:
        self.namespace, self.kind, self.filters, self.use_alt_text = namespace, kind, filters, use_alt_text

    def setup(self) -> None:
        self.progress = Progress(namespace=self.namespace, stage="extract")

    def process(self, page: Any) -> Iterator[Any]:
        from flamboyance.preprocess.extract import ExtractionError, extract_document

        self.progress.tick()
        ref = f"{page.warc_filename}@{page.warc_offset} {page.url}"
        reasons: Counter = Counter()
        try:
            doc = extract_document(page.body, page.url, headers=page.headers)
            source = image_pairs if self.kind == "image" else video_pairs
            pairs = list(source(doc, filters=self.filters, use_alt_text=self.use_alt_text, counter=reasons))
        except ExtractionError as err:
            count(self.namespace, f"funnel.not_extracted.{err.reason}")
            yield dead_letter(self.namespace, "extract", err.reason, ref, err.detail)
            return
        except Exception as err:  # noqa: BLE001 - no page may fail the job
            count(self.namespace, "funnel.not_extracted.exception")
            yield dead_letter(self.namespace, "extract", "exception", ref, _describe(err))
            return
        count(self.namespace, "extract.documents")
        count(self.namespace, "funnel.extracted")
        count(self.namespace, "pairs.from_pages", len(pairs))
        count(self.namespace, "funnel.pairs", len(pairs))
        count_all(self.namespace, "filter", reasons)
        yield from pairs


class _TablePairsFn(beam.DoFn):
    """Table URL -> its rows' caption pairs; a row without URL or caption, or whose handling
    raises, is counted and dead-lettered (`<table>#<row>`)."""

    def __init__(self, *, namespace: str, url_column: str, caption_column: str) -> None:
        self.namespace, self.url_column, self.caption_column = namespace, url_column, caption_column

    def process(self, table_url: str) -> Iterator[Any]:
        for index, row in enumerate(read_table_rows(table_url)):
            count(self.namespace, "funnel.pages")  # a table row is an input, like a page
            url, caption = row.get(self.url_column), row.get(self.caption_column)
            if not isinstance(url, str) or not url.strip() or not isinstance(caption, str):
                count(self.namespace, "funnel.not_extracted.missing_url_or_caption")
                yield dead_letter(self.namespace, "table", "missing_url_or_caption", f"{table_url}#{index}",
                                  f"columns {self.url_column!r}/{self.caption_column!r} in {sorted(row)}")
                continue
            try:
                pair = make_pair(url.strip(), normalize_text(caption), source=table_url)
            except Exception as err:  # noqa: BLE001 - no row may fail the job
                count(self.namespace, "funnel.not_extracted.exception")
                yield dead_letter(self.namespace, "table", "exception", f"{table_url}#{index}", _describe(err))
                continue
            count(self.namespace, "pairs.from_tables")
            count(self.namespace, "funnel.extracted")
            count(self.namespace, "funnel.pairs")
            yield pair


class ReadCaptionPairs(beam.PTransform):
    """Input globs -> filtered, deduplicated `CaptionPair`s; returns (pairs, dead_letters).

    A glob naming tables (`.parquet`, `.csv`, `.tsv`, `.jsonl`) reads URL + caption rows; any
    other glob is read as WARC pages whose images (`kind="image"`) or videos (`kind="video"`)
    give pairs. Captions go through `caption_filters` (`caption.<reason>` counters); pairs with
    the same URL and caption are kept once (`dedup.same_pair`).
    """

    def __init__(self, *, namespace: str, kind: str, filters: FilterConfig | None = None, use_alt_text: bool = True,
                 url_column: str = "url", caption_column: str = "caption", skip_truncated: bool = False) -> None:
        super().__init__()
        self.namespace, self.kind, self.skip_truncated = namespace, kind, skip_truncated
        self.filters, self.use_alt_text = filters or FilterConfig(), use_alt_text
        self.url_column, self.caption_column = url_column, caption_column

    def expand(self, patterns: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        namespace = self.namespace
        tables = patterns | "TableGlobs" >> beam.Filter(is_table)
        warcs = patterns | "WarcGlobs" >> beam.Filter(lambda p: not is_table(p))
        from_tables = (tables | "ExpandTables" >> beam.FlatMap(expand_glob)
                       | "SpreadTables" >> beam.Reshuffle()
                       | "TableRows" >> beam.ParDo(_TablePairsFn(namespace=namespace, url_column=self.url_column,
                                                                 caption_column=self.caption_column))
                       .with_outputs(DEAD_LETTER, main="pairs"))
        from_pages = (warcs | "ReadWarcPages" >> ReadWarcPages(namespace=namespace, skip_truncated=self.skip_truncated)
                      | "PagePairs" >> beam.ParDo(_PagePairsFn(namespace=namespace, kind=self.kind,
                                                               filters=self.filters, use_alt_text=self.use_alt_text))
                      .with_outputs(DEAD_LETTER, main="pairs"))
        steps = caption_filters(languages=self.filters.languages)

        def keep_caption(pair: CaptionPair) -> Iterator[CaptionPair]:
            reasons: Counter = Counter()
            try:
                reason = run_filters(steps, pair.caption, reasons)
            except Exception as err:  # noqa: BLE001 - no pair may fail the job
                count(namespace, "funnel.failed.caption_exception")
                yield dead_letter(namespace, "caption", "exception", pair.url, _describe(err))
                return
            count_all(namespace, "caption", reasons)
            if reason is None:
                yield pair
            else:
                count(namespace, f"funnel.filtered.{reason}")

        def first(element: tuple[str, Any]) -> CaptionPair:
            # one streaming pass: the same pair (a site's logo and its alt text) may be on
            # every page of a crawl
            best, members = None, 0
            for pair in element[1]:
                members += 1
                if best is None or _pair_order(pair) < _pair_order(best):
                    best = pair
            held(namespace, 1)
            count(namespace, "dedup.same_pair", members - 1)
            count(namespace, "funnel.deduplicated.same_pair", members - 1)
            count(namespace, "funnel.to_download")
            return best

        captioned = ((from_tables.pairs, from_pages.pairs) | "AllPairs" >> beam.Flatten()
                     | "CaptionFilters" >> beam.FlatMap(keep_caption).with_outputs(DEAD_LETTER, main="pairs"))
        pairs = (captioned.pairs
                 | "KeyByPair" >> beam.Map(lambda p: (p.key, p))
                 | "GroupSamePairs" >> beam.GroupByKey()
                 | "OncePerPair" >> beam.Map(first))
        dead = ((from_tables[DEAD_LETTER], from_pages[DEAD_LETTER], captioned[DEAD_LETTER])
                | "PairDeadLetters" >> beam.Flatten())
        return pairs, dead


def _pair_order(pair: CaptionPair) -> tuple[str, list[tuple[str, Any]]]:
    """Which of the pairs sharing a key is kept: the smallest source, then metadata (deterministic)."""
    return pair.source, sorted(pair.metadata.items(), key=str)


def is_heldout(key: str, fraction: float) -> bool:
    """Whether a key belongs to the held-out split: a stable hash of the key below `fraction`."""
    return stable_hash(f"split\x1f{key}") < fraction * 2**64


def count_download(namespace: str, item: Any) -> None:
    """Count a pair's `ShardItem` in the funnel: downloaded, or not (by its row's reason)."""
    if item.sample is not None:
        count(namespace, "funnel.downloaded")
    else:
        count(namespace, f"funnel.not_downloaded.{item.row.get('error_message') or 'failed'}")


class JoinMedia(beam.PTransform):
    """(URL, (tag, pair)) refs + (URL, result) downloads -> (tag, pair, result) for every ref
    (result None if the URL was never downloaded). A keyed group per URL read in two streaming
    passes (the result first), so a URL shared by a crawl's worth of pairs is never held."""

    def __init__(self, *, results: beam.PCollection, namespace: str) -> None:
        super().__init__()
        self.results, self.namespace = results, namespace

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        namespace = self.namespace

        def joined(element: tuple[str, Any]) -> Iterator[tuple[Any, CaptionPair, Any]]:
            _, tagged = element
            result = next((value for is_result, value in tagged if is_result), None)
            held(namespace, 1)
            for is_result, value in tagged:
                if not is_result:
                    tag, pair = value
                    yield tag, pair, result

        return ((self.results | "TagResults" >> beam.MapTuple(lambda url, result: (url, (True, result))),
                 refs | "TagRefs" >> beam.MapTuple(lambda url, ref: (url, (False, ref))))
                | "Tagged" >> beam.Flatten()
                | "GroupByUrl" >> beam.GroupByKey()
                | "PairsWithMedia" >> beam.FlatMap(joined))
