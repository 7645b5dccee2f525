"""Caption pairs shared by the image-text and video-text jobs: where pairs come from (pages or a
URL + caption table), the caption filters (`flamboyance.preprocess.captions`) as a step, the
deterministic held-out split, and the join of downloaded media back onto their pairs.

The only differences between the two jobs are which page nodes give pairs (images with a
figcaption/alt text, or videos with a caption) and how a downloaded medium becomes a sample;
both are passed in, so the sources are defined once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from flamboyance.preprocess.captions import caption_filters
from flamboyance.preprocess.document import Document, ImageNode, VideoNode
from flamboyance.preprocess.filters import FilterConfig, image_filters
from flamboyance.preprocess.html_text import normalize_text
from flamboyance.preprocess.steps import run_filters

from .common import (
    DEAD_LETTER,
    Progress,
    ReadWarcPages,
    ShardItem,
    count,
    count_all,
    dead_letter,
    expand_glob,
    held,
    is_table,
    lineage_row,
    make_key,
    page_key,
    read_table_rows,
    stable_hash,
)

ROWS = "rows"
"""Tag of the lineage rows (`ShardItem`s without a sample) of candidates that left the job."""


@dataclass(frozen=True, kw_only=True)
class CaptionPair:
    """A media URL with its caption; `key` is a stable hash of both (the sample key)."""

    key: str
    url: str
    caption: str
    source: str = ""
    """Page URL or table URL the pair came from."""
    metadata: dict[str, Any] = field(default_factory=dict)
    warc_filename: str | None = None
    """WARC file of the page the pair was found on (None for a table row)."""
    warc_offset: int | None = None
    """Offset of that page's record in its WARC file."""
    position: int = 0
    """Which candidate of its page (in page order), or its row in its table."""

    @property
    def candidate_key(self) -> str:
        """The key of this one finding of the pair (its page or table row, its position there):
        the row key of a candidate that is dropped, distinct from every sample key."""
        return make_key("candidate", self.key, self.source, self.warc_filename, self.warc_offset, self.position)


def make_pair(url: str, caption: str, *, source: str = "", metadata: dict[str, Any] | None = None,
              **where: Any) -> CaptionPair:
    """A pair with its key (same URL and caption -> same key, wherever they were found); `where`
    sets `warc_filename`, `warc_offset` and `position`."""
    return CaptionPair(key=make_key(url, caption), url=url, caption=caption, source=source,
                       metadata=dict(metadata or {}), **where)


def pair_row(pair: CaptionPair, status: str, reason: str, *, key: str = "", detail: str = "",
             duplicate_of: str | None = None) -> dict[str, Any]:
    """The parquet row of a candidate pair (`lineage_row`): keyed by its `candidate_key` unless
    `key` is given (a kept pair whose download failed keeps the pair key)."""
    return lineage_row(key=key or pair.candidate_key, status=status, reason=reason, url=pair.url, detail=detail,
                       duplicate_of=duplicate_of, caption=pair.caption, **_found_at(pair))


def _found_at(pair: CaptionPair) -> dict[str, Any]:
    """Where a pair was found, as row columns: its page and WARC location, or its table and row."""
    where = {"source": pair.source, "warc_filename": pair.warc_filename, "warc_offset": pair.warc_offset}
    return where if pair.warc_filename is not None else {**where, "source_row": pair.position}


def dropped(pair: CaptionPair, status: str, reason: str, **kwargs: Any) -> TaggedOutput:
    """A dropped candidate's row, as the `ROWS` output."""
    return TaggedOutput(ROWS, ShardItem(key=pair.candidate_key, row=pair_row(pair, status, reason, **kwargs)))


# --- sources -------------------------------------------------------------------------------------

def image_pairs(doc: Document, *, filters: FilterConfig, use_alt_text: bool,
                counter: Counter) -> Iterator[tuple[CaptionPair, str | None]]:
    """Alt-text / figcaption pairs of a page (ALIGN/LTIP-like): figcaption first, else alt text,
    each with the image filter that rejects it (boilerplate URL, declared size/aspect) or None.

    Images without a caption are no candidates: counted into `counter` (`no_caption`), skipped.
    """
    steps = image_filters(filters)
    for node in doc.nodes:
        if not isinstance(node, ImageNode):
            continue
        caption = node.caption or (node.alt if use_alt_text else "")
        if not caption.strip():
            counter["no_caption"] += 1
            continue
        kind = "figcaption" if node.caption else "alt"
        yield (make_pair(node.url, normalize_text(caption), source=doc.url,
                         metadata={"page_url": doc.url, "caption_source": kind}),
               run_filters(steps, node, counter))


def video_source(node: VideoNode) -> str | None:
    """The best playable source of a video node: its first source (`extract_document` never lists
    the poster as a source; a hand-built node that does still gets a playable one)."""
    for source in node.sources:
        if source != node.poster:
            return source
    return None


def video_pairs(doc: Document, **_: Any) -> Iterator[tuple[CaptionPair, None]]:
    """`<video>` elements with a caption (their first, best source), none rejected here."""
    for node in doc.nodes:
        source = video_source(node) if isinstance(node, VideoNode) else None
        if source and node.caption.strip():
            yield (make_pair(source, normalize_text(node.caption), source=doc.url,
                             metadata={"page_url": doc.url, "poster": node.poster}), None)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:1000]


class _PagePairsFn(beam.DoFn):
    """Page -> its caption pairs (with their WARC location), and a `ROWS` row for each candidate
    an image filter rejects (`funnel.filtered.<filter>`). Any exception of one page is caught
    here: counted (`funnel.not_extracted.<reason>`), dead-lettered with the page's WARC location,
    and the page gets its row; the job goes on."""

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
            found = list(source(doc, filters=self.filters, use_alt_text=self.use_alt_text, counter=reasons))
        except Exception as err:  # noqa: BLE001 - no page may fail the job
            reason, detail = ((err.reason, err.detail) if isinstance(err, ExtractionError)
                              else ("exception", _describe(err)))
            count(self.namespace, f"funnel.not_extracted.{reason}")
            yield dead_letter(self.namespace, "extract", reason, ref, detail)
            yield TaggedOutput(ROWS, ShardItem(key=page_key(page), row=lineage_row(
                key=page_key(page), status="failed_to_extract", reason=reason, detail=detail[:1000], url=page.url,
                warc_filename=page.warc_filename, warc_offset=page.warc_offset, source=page.url)))
            return
        count(self.namespace, "extract.documents")
        count(self.namespace, "funnel.extracted")
        count(self.namespace, "pairs.from_pages", len(found))
        count(self.namespace, "funnel.pairs", len(found))
        count_all(self.namespace, "filter", reasons)
        for position, (pair, rejected_by) in enumerate(found):
            pair = dataclasses.replace(pair, warc_filename=page.warc_filename, warc_offset=page.warc_offset,
                                       position=position)
            if rejected_by is None:
                yield pair
            else:
                count(self.namespace, f"funnel.filtered.{rejected_by}")
                yield dropped(pair, "filtered", rejected_by)


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
                reason = "missing_url_or_caption"
                detail = f"columns {self.url_column!r}/{self.caption_column!r} in {sorted(row)}"
            else:
                try:
                    pair = make_pair(url.strip(), normalize_text(caption), source=table_url, position=index)
                except Exception as err:  # noqa: BLE001 - no row may fail the job
                    reason, detail = "exception", _describe(err)
                else:
                    reason = detail = ""
            if reason:
                count(self.namespace, f"funnel.not_extracted.{reason}")
                yield dead_letter(self.namespace, "table", reason, f"{table_url}#{index}", detail)
                key = make_key("table_row", table_url, index)
                yield TaggedOutput(ROWS, ShardItem(key=key, row=lineage_row(
                    key=key, status="failed_to_extract", reason=reason, detail=detail, url=table_url,
                    warc_filename=None, warc_offset=None, source=table_url, source_row=index)))
                continue
            count(self.namespace, "pairs.from_tables")
            count(self.namespace, "funnel.extracted")
            count(self.namespace, "funnel.pairs")
            yield pair


class ReadCaptionPairs(beam.PTransform):
    """Input globs -> filtered, deduplicated `CaptionPair`s; returns (pairs, rows, dead_letters):
    `rows` holds a lineage row (`ShardItem`) for each page or table row that gave no candidate
    (extraction failed) and each candidate dropped here (filtered, failed, duplicate: naming the
    pair key kept), so every input ends in one place.

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
                       .with_outputs(DEAD_LETTER, ROWS, main="pairs"))
        from_pages = (warcs | "ReadWarcPages" >> ReadWarcPages(namespace=namespace, skip_truncated=self.skip_truncated)
                      | "PagePairs" >> beam.ParDo(_PagePairsFn(namespace=namespace, kind=self.kind,
                                                               filters=self.filters, use_alt_text=self.use_alt_text))
                      .with_outputs(DEAD_LETTER, ROWS, main="pairs"))
        steps = caption_filters(languages=self.filters.languages)

        def keep_caption(pair: CaptionPair) -> Iterator[Any]:
            reasons: Counter = Counter()
            try:
                reason = run_filters(steps, pair.caption, reasons)
            except Exception as err:  # noqa: BLE001 - no pair may fail the job
                count(namespace, "funnel.failed.caption_exception")
                yield dead_letter(namespace, "caption", "exception", pair.url, _describe(err))
                yield dropped(pair, "failed", "caption_exception", detail=_describe(err))
                return
            count_all(namespace, "caption", reasons)
            if reason is None:
                yield pair
            else:
                count(namespace, f"funnel.filtered.{reason}")
                yield dropped(pair, "filtered", reason)

        def first(element: tuple[str, Any]) -> Iterator[Any]:
            # two streaming passes: the same pair (a site's logo and its alt text) may be on
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
            kept = _pair_order(best)
            for pair in element[1]:
                if kept is not None and _pair_order(pair) == kept:
                    kept = None  # the kept one (once, should the same finding be read twice)
                else:
                    yield dropped(pair, "duplicate", "same_pair", duplicate_of=best.key)
            yield best

        captioned = ((from_tables.pairs, from_pages.pairs) | "AllPairs" >> beam.Flatten()
                     | "CaptionFilters" >> beam.FlatMap(keep_caption).with_outputs(DEAD_LETTER, ROWS, main="pairs"))
        pairs = (captioned.pairs
                 | "KeyByPair" >> beam.Map(lambda p: (p.key, p))
                 | "GroupSamePairs" >> beam.GroupByKey()
                 | "OncePerPair" >> beam.FlatMap(first).with_outputs(ROWS, main="pairs"))
        rows = ((from_tables[ROWS], from_pages[ROWS], captioned[ROWS], pairs[ROWS])
                | "PairRows" >> beam.Flatten())
        dead = ((from_tables[DEAD_LETTER], from_pages[DEAD_LETTER], captioned[DEAD_LETTER])
                | "PairDeadLetters" >> beam.Flatten())
        return pairs.pairs, rows, dead


def _pair_order(pair: CaptionPair) -> tuple[Any, ...]:
    """Which of the pairs sharing a key is kept: the smallest source, then metadata, then the
    WARC location and position (unique: deterministic whatever the order of the group)."""
    return (pair.source, sorted(pair.metadata.items(), key=str), pair.warc_filename or "",
            -1 if pair.warc_offset is None else pair.warc_offset, pair.position)


def sample_row(pair: CaptionPair) -> dict[str, Any]:
    """Columns a kept pair's parquet row gets besides the shard writer's own: where it was found."""
    # the lineage columns, empty, so that every shard's parquet has the same ones
    return {"key": pair.key, "reason": None, "duplicate_of": None, **_found_at(pair)}


def is_heldout(key: str, fraction: float) -> bool:
    """Whether a key belongs to the held-out split: a stable hash of the key below `fraction`."""
    return stable_hash(f"split\x1f{key}") < fraction * 2**64


def count_download(namespace: str, item: Any) -> None:
    """Count a pair's `ShardItem` in the funnel: downloaded, or not (by its row's reason)."""
    if item.sample is not None:
        count(namespace, "funnel.downloaded")
    else:
        count(namespace, f"funnel.not_downloaded.{item.row.get('reason') or 'failed'}")


def failed_download(pair: CaptionPair, status: str, reason: str) -> ShardItem:
    """The row of a kept pair whose medium did not arrive (`status` and `reason` from the download),
    under the pair's key."""
    return ShardItem(key=pair.key, row=pair_row(pair, status, reason, key=pair.key))


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
