"""The M3W job: WARC pages -> interleaved image-text documents -> m3w shards.

    pages -> ExtractDocuments -> FilterDocuments
          -> Deduplicate (on DedupInfo records: ExactDedup -> NearDedup -> SameUrlDedup
             -> SameImageSetDedup -> CorpusFrequency; one join back onto the documents)
          -> AssignShards -> DownloadImages (unique URLs)
          -> JoinImages (CoGroupByKey by URL, then by document) -> AssembleSamples -> WriteShards

Each step wraps a `flamboyance.preprocess` function (extraction, filters, dedup keys, sequence
text, PII redaction); nothing here re-implements them. Documents that share a dedup key keep
the newest capture (then the smallest key, so ties are deterministic).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from flamboyance.preprocess import dedup
from flamboyance.preprocess.document import Document, ImageNode
from flamboyance.preprocess.filters import (
    BoilerplateParagraphFilter,
    FilterConfig,
    FrequentImageFilter,
    apply_filters,
    judged_stats,
)

from .common import (
    DEAD_LETTER,
    AssignShards,
    Progress,
    ReadWarcPages,
    ShardItem,
    WriteDeadLetters,
    WriteShards,
    count,
    count_all,
    dead_letter,
    make_key,
    run_and_report,
)
from .config import M3WConfig
from .media import DownloadImagesFn, ImageResult

NAMESPACE = "m3w"


@dataclass(frozen=True, kw_only=True)
class PageDocument:
    """A document extracted from one capture, with what dedup needs to pick the newest one."""

    key: str
    """Stable id of the capture (URL, fetch time, WARC location): the sample key."""
    fetch_time: str
    doc: Document


def recency(item: PageDocument) -> tuple[float, str]:
    """Sort key "newest first wins": the fetch time, then the key (deterministic tie-break)."""
    try:
        stamp = datetime.fromisoformat(item.fetch_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        stamp = 0.0
    return stamp, item.key


# --- extraction and filtering ----------------------------------------------------------------

class ExtractDocumentFn(beam.DoFn):
    """PageRecord -> PageDocument via `extract_document`; rejections are dead letters with their reason."""

    def __init__(self, *, namespace: str = NAMESPACE, extract_config: Any = None) -> None:
        self.namespace = namespace
        self.extract_config = extract_config

    def setup(self) -> None:
        from flamboyance.preprocess.extract import DEFAULT_CONFIG

        self.progress = Progress(namespace=self.namespace, stage="extract")
        self.config = self.extract_config or DEFAULT_CONFIG

    def process(self, page: Any) -> Iterator[Any]:
        from flamboyance.preprocess.extract import ExtractionError, extract_document

        self.progress.tick()
        ref = f"{page.warc_filename}@{page.warc_offset} {page.url}"
        try:
            doc = extract_document(page.body, page.url, headers=page.headers, config=self.config)
        except ExtractionError as err:
            yield dead_letter(self.namespace, "extract", err.reason, ref, err.detail)
            return
        count(self.namespace, "extract.documents")
        # Timings would make reruns differ byte for byte; they belong in counters, not in samples.
        doc.metadata.pop("extraction_seconds", None)
        doc.metadata.update({"fetch_time": page.fetch_time, "warc_filename": page.warc_filename,
                             "warc_offset": page.warc_offset})
        yield PageDocument(key=make_key(page.url, page.fetch_time, page.warc_filename, page.warc_offset),
                           fetch_time=page.fetch_time, doc=doc)


class FilterDocumentFn(beam.DoFn):
    """Node filters (drop images/paragraphs) then document filters, counted as `filter.<reason>`."""

    def __init__(self, *, filter_config: FilterConfig, namespace: str = NAMESPACE) -> None:
        self.filter_config, self.namespace = filter_config, namespace

    def process(self, item: PageDocument) -> Iterator[PageDocument]:
        reasons: Counter = Counter()
        doc, _ = apply_filters(item.doc, self.filter_config, reasons)
        count_all(self.namespace, "filter", reasons)
        if doc is not None:
            yield dataclasses.replace(item, doc=doc)


# --- dedup ---------------------------------------------------------------------------------------
#
# Dedup decisions are made on small `DedupInfo` records (hashes, keys, a MinHash signature),
# computed next to extraction where the work parallelises; full documents are shuffled once, to
# join the decisions back (`DeduplicateDocuments`).

@dataclass(frozen=True, kw_only=True)
class DedupInfo:
    """What dedup and the corpus-wide counts need to know about one document."""

    key: str
    rank: tuple[float, str]
    """`recency` of the capture: larger is newer."""
    content_hash: str
    url_key: str
    image_set_key: str
    band_keys: tuple[str, ...] = ()
    """LSH band keys of the text's MinHash signature (none for a document without text)."""
    signature: bytes = b""
    """The signature's values truncated to 32 bits (uint32 bytes), enough to estimate Jaccard
    similarity (a false slot match has probability 2**-32) at half the bytes in every shuffle."""
    image_urls: tuple[str, ...] = ()
    """Normalised URLs of the document's images (distinct, sorted)."""
    paragraph_keys: tuple[str, ...] = ()
    """`domain<US>paragraph_key` of its text nodes (distinct, sorted)."""


def dedup_info(item: PageDocument, *, bands: int, rows: int) -> DedupInfo:
    """The `DedupInfo` of a document (all keys from `flamboyance.preprocess.dedup`)."""
    doc = item.doc
    text = doc.text()
    domain = dedup.domain_of(doc.url)
    paragraphs = {dedup.paragraph_key(node.text) for node in doc.texts} - {""}
    try:
        url_key = dedup.normalize_url(doc.url)
    except ValueError:
        url_key = doc.url
    band_keys: tuple[str, ...] = ()
    signature = b""
    if text.strip():
        full = dedup.minhash_signature(text, num_perm=bands * rows)
        band_keys = tuple(dedup.lsh_band_keys(full, bands=bands, rows=rows))
        signature = full.astype(np.uint32).tobytes()
    return DedupInfo(key=item.key, rank=recency(item), content_hash=dedup.content_hash(doc), url_key=url_key,
                     image_set_key=dedup.image_set_key(doc), band_keys=band_keys, signature=signature,
                     image_urls=tuple(sorted({normalized_image_url(image.url) for image in doc.images})),
                     paragraph_keys=tuple(sorted(f"{domain}\x1f{key}" for key in paragraphs)))


def normalized_image_url(url: str) -> str:
    """The URL form counted for image frequency (`normalize_url`, or the URL itself if it cannot be)."""
    try:
        return dedup.normalize_url(url)
    except ValueError:
        return url


class KeepNewest(beam.PTransform):
    """Among `DedupInfo`s sharing `key_fn(info)` keep the newest; the others count as `dedup.<reason>`.

    Infos whose key is "" (e.g. no images for the image-set key) are never grouped.
    """

    def __init__(self, *, key_fn: Callable[[DedupInfo], str], reason: str, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.key_fn, self.reason, self.namespace = key_fn, reason, namespace

    def expand(self, infos: beam.PCollection) -> beam.PCollection:
        key_fn, reason, namespace = self.key_fn, self.reason, self.namespace

        def keyed(info: DedupInfo) -> tuple[str, DedupInfo]:
            return (key_fn(info) or f"unique:{info.key}"), info

        def newest(element: tuple[str, tuple[DedupInfo, int]]) -> DedupInfo:
            info, members = element[1]
            count(namespace, f"dedup.{reason}", members - 1)
            return info

        return (infos | "KeyBy" >> beam.Map(keyed)
                | "Newest" >> beam.CombinePerKey(_NewestCombineFn())
                | "CountRemoved" >> beam.Map(newest))


class _NewestCombineFn(beam.CombineFn):
    """(newest `DedupInfo` by `rank`, number of infos): combined before the shuffle, so a group
    of captures never has to sit in one worker's memory."""

    def create_accumulator(self) -> tuple[DedupInfo | None, int]:
        return None, 0

    def add_input(self, accumulator: tuple[DedupInfo | None, int], info: DedupInfo) -> tuple[DedupInfo | None, int]:
        best, members = accumulator
        return (info if best is None or info.rank > best.rank else best), members + 1

    def merge_accumulators(self, accumulators: Iterable[tuple[DedupInfo | None, int]]) -> tuple[DedupInfo | None, int]:
        best, members = None, 0
        for info, n in accumulators:
            if info is not None and (best is None or info.rank > best.rank):
                best = info
            members += n
        return best, members

    def extract_output(self, accumulator: tuple[DedupInfo | None, int]) -> tuple[DedupInfo | None, int]:
        return accumulator


class NearDedup(beam.PTransform):
    """Near-duplicates by MinHash LSH: documents sharing a band key are candidates; a candidate
    whose estimated Jaccard similarity with a newer one in the band reaches `threshold` is removed.

    The newest document of any near-duplicate cluster is never removed (it is the newest in
    every band it shares), and no two kept documents are confirmed near-duplicates of each other.
    """

    def __init__(self, *, threshold: float, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.threshold, self.namespace = threshold, namespace

    def expand(self, infos: beam.PCollection) -> beam.PCollection:
        threshold, namespace = self.threshold, self.namespace

        def band_entries(info: DedupInfo) -> Iterator[tuple[str, tuple[tuple[float, str], bytes]]]:
            for band_key in info.band_keys:
                yield band_key, (info.rank, info.signature)

        def duplicates(element: tuple[str, Iterable[Any]]) -> Iterator[str]:
            members = sorted(element[1], key=lambda m: m[0], reverse=True)
            if len(members) < 2:
                return
            sigs = [np.frombuffer(sig, dtype=np.uint32) for _, sig in members]
            for i in range(1, len(members)):
                if any(dedup.jaccard_estimate(sigs[i], newer) >= threshold for newer in sigs[:i]):
                    yield members[i][0][1]

        removed = (infos
                   | "BandKeys" >> beam.FlatMap(band_entries)
                   | "GroupBands" >> beam.GroupByKey()
                   | "Candidates" >> beam.FlatMap(duplicates)
                   | "OncePerDoc" >> beam.Distinct()
                   | "KeyRemoved" >> beam.Map(lambda key: (key, True)))

        def keep(element: tuple[str, dict[str, list[Any]]]) -> Iterator[DedupInfo]:
            for info in element[1]["info"]:
                if element[1]["removed"]:
                    count(namespace, "dedup.near_duplicate")
                else:
                    yield info

        return ({"info": infos | "KeyByDoc" >> beam.Map(lambda info: (info.key, info)), "removed": removed}
                | "JoinRemovals" >> beam.CoGroupByKey()
                | "Keep" >> beam.FlatMap(keep))


class CorpusFrequency(beam.PTransform):
    """`DedupInfo`s -> `(doc key, ("image", normalised URL) | ("paragraph", paragraph key))` for
    every image URL found on more than `image_max_documents` documents and every paragraph
    repeated on at least `paragraph_boilerplate_min_count` documents of one domain.

    Counts `frequency.frequent_image_urls` and `frequency.boilerplate_paragraphs` (distinct keys).
    """

    def __init__(self, *, filter_config: FilterConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.filter_config, self.namespace = filter_config, namespace

    def expand(self, infos: beam.PCollection) -> beam.PCollection:
        max_docs = self.filter_config.image_max_documents
        min_repeats = self.filter_config.paragraph_boilerplate_min_count
        namespace = self.namespace

        def frequent(kind: str, counter: str, threshold: int) -> Callable[[Any], Iterator[Any]]:
            def emit(element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, tuple[str, str]]]:
                # A document lists each of its URLs / paragraph keys once, so members are distinct
                # documents. One pass holding at most `threshold` keys: a logo on every page of a
                # site makes a group as large as the site, and it is streamed, not collected.
                value, docs = element
                removal = (kind, value.split("\x1f", 1)[1] if kind == "paragraph" else value)
                pending: list[str] | None = []
                for doc_key in docs:
                    if pending is None:
                        yield doc_key, removal
                        continue
                    pending.append(doc_key)
                    if len(pending) >= threshold:
                        count(namespace, f"frequency.{counter}")
                        yield from ((key, removal) for key in pending)
                        pending = None
            return emit

        images = (infos | "ImageRefs" >> beam.FlatMap(lambda i: [(url, i.key) for url in i.image_urls])
                  | "GroupImageRefs" >> beam.GroupByKey()
                  | "FrequentImages" >> beam.FlatMap(frequent("image", "frequent_image_urls", max_docs + 1)))
        paragraphs = (infos | "ParagraphRefs" >> beam.FlatMap(lambda i: [(k, i.key) for k in i.paragraph_keys])
                      | "GroupParagraphs" >> beam.GroupByKey()
                      | "Boilerplate" >> beam.FlatMap(frequent("paragraph", "boilerplate_paragraphs", min_repeats)))
        return (images, paragraphs) | "AllRemovals" >> beam.Flatten()


def removals_hit(doc: Document, *, images: Collection[str], paragraphs: Collection[str]) -> bool:
    """Whether the corpus-wide removals (frequent image URLs, boilerplate paragraph keys) drop a
    node of `doc`, judged by the same filter steps `apply_filters` runs for them."""
    if images:
        frequent = FrequentImageFilter(frequent_urls=images)
        if any(frequent(node) is not True for node in doc.images):
            return True
    if paragraphs:
        boilerplate = BoilerplateParagraphFilter(keys=paragraphs)
        if any(boilerplate(node) is not True for node in doc.texts):
            return True
    return False


class DeduplicateDocuments(beam.PTransform):
    """PageDocuments -> the documents that survive dedup (exact, near, same URL, same image set:
    the newest capture wins), with corpus-frequent images and domain-boilerplate paragraphs
    removed by `apply_filters(..., frequent_image_urls=, boilerplate_paragraphs=)` (counted as
    `filter.image_frequent_url`, `filter.paragraph_boilerplate`, and any document-level reason
    that then applies)."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.config, self.namespace = config, namespace

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        cfg, namespace = self.config, self.namespace
        filters = cfg.filters
        survivors = (docs
                     | "DedupInfo" >> beam.Map(dedup_info, bands=cfg.minhash_bands, rows=cfg.minhash_rows)
                     | "ExactDedup" >> KeepNewest(key_fn=lambda i: i.content_hash, reason="exact",
                                                  namespace=namespace)
                     | "NearDedup" >> NearDedup(threshold=cfg.near_duplicate_threshold, namespace=namespace)
                     | "SameUrlDedup" >> KeepNewest(key_fn=lambda i: i.url_key, reason="same_url",
                                                    namespace=namespace)
                     | "SameImageSetDedup" >> KeepNewest(key_fn=lambda i: i.image_set_key, reason="same_image_set",
                                                         namespace=namespace))
        removals = survivors | "CorpusFrequency" >> CorpusFrequency(filter_config=filters, namespace=namespace)

        def apply(element: tuple[str, dict[str, list[Any]]]) -> Iterator[PageDocument]:
            _, grouped = element
            if not grouped["keep"]:
                return
            images = {value for kind, value in grouped["removed"] if kind == "image"}
            paragraphs = {value for kind, value in grouped["removed"] if kind == "paragraph"}
            for item in grouped["doc"]:
                if not removals_hit(item.doc, images=images, paragraphs=paragraphs):
                    # apply_filters would keep every node and reuse the stored scores: same document
                    yield item
                    continue
                reasons: Counter = Counter()
                # item.doc is FilterDocuments' output, unchanged since: its stored scores are those
                # of its text, so the text is scored again only if a paragraph goes.
                doc, _ = apply_filters(item.doc, filters, reasons, frequent_image_urls=images,
                                       boilerplate_paragraphs=paragraphs, known_stats=judged_stats(item.doc))
                count_all(namespace, "filter", reasons)
                if doc is not None:
                    yield dataclasses.replace(item, doc=doc)

        return ({"doc": docs | "KeyByDoc" >> beam.Map(lambda item: (item.key, item)),
                 "keep": survivors | "KeyKept" >> beam.Map(lambda info: (info.key, True)),
                 "removed": removals}
                | "JoinDecisions" >> beam.CoGroupByKey()
                | "ApplyDecisions" >> beam.FlatMap(apply))


def image_bounds_reason(doc: Document, config: FilterConfig) -> str | None:
    """Why a document is out of bounds (too few/many images, no text), or None."""
    images = len(doc.images)
    if images < config.doc_min_images:
        return "too_few_images"
    if images > config.doc_max_images:
        return "too_many_images"
    if not any(node.text.strip() for node in doc.texts):
        return "no_text"
    return None


# --- images and samples --------------------------------------------------------------------------

def _image_refs(element: tuple[int, PageDocument]) -> Iterator[tuple[str, str]]:
    # Raw URLs: what is fetched is what the page named.
    _, item = element
    for url in sorted({image.url for image in item.doc.images}):
        yield url, item.key


def _images_by_doc(element: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[str, tuple[str, ImageResult]]]:
    url, grouped = element
    results = grouped["result"]
    result = results[0] if results else ImageResult(url=url, reason="not_downloaded")
    for doc_key in grouped["doc"]:
        yield doc_key, (url, result)


class AssembleSampleFn(beam.DoFn):
    """(doc key, {shard, images}) -> (shard, ShardItem): failed images dropped, bounds checked,
    PII redacted, M3W sequence built. Out-of-bounds documents become failure rows (`status`
    `dropped`, `error_message` the reason) in their shard's parquet."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        self.config, self.namespace = config, namespace

    def process(self, element: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[int, ShardItem]]:
        from flamboyance.preprocess.pii import redact_document
        from flamboyance.preprocess.sequence import to_sequence
        from flamboyance.shards.formats import M3WSample

        key, grouped = element
        if not grouped["doc"]:
            return
        shard, item = grouped["doc"][0]
        results = dict(grouped["images"])
        nodes, images, sizes = [], [], []
        for node in item.doc.nodes:
            if isinstance(node, ImageNode):
                result = results.get(node.url)
                if result is None or not result.ok:
                    count(self.namespace, "doc.image_dropped")
                    continue
                images.append(result.data)
                sizes.append([result.width, result.height])
            nodes.append(node)
        doc = redact_document(dataclasses.replace(item.doc, nodes=nodes))
        reason = image_bounds_reason(doc, self.config.filters)
        if reason is not None:
            count(self.namespace, f"doc.{reason}")
            yield shard, ShardItem(key=key, row={"key": key, "status": "dropped", "error_message": reason,
                                                 "url": doc.url})
            return
        document = doc.to_dict()
        meta = doc.metadata
        document.update({"text": to_sequence(doc), "image_sizes": sizes, "language": doc.language,
                         "fetch_time": item.fetch_time, "warc_filename": meta.get("warc_filename"),
                         "warc_offset": meta.get("warc_offset")})
        count(self.namespace, "doc.kept")
        yield shard, ShardItem(key=key, sample=M3WSample(key=key, document=document, images=images))


class M3WDocuments(beam.PTransform):
    """WARC URL globs -> deduplicated, frequency-filtered `PageDocument`s (no downloads).

    Returns (documents, dead_letters)."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.config, self.namespace = config, namespace

    def expand(self, patterns: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cfg, namespace = self.config, self.namespace
        pages = patterns | "ReadWarcPages" >> ReadWarcPages(namespace=namespace)
        extracted = pages | "ExtractDocuments" >> beam.ParDo(
            ExtractDocumentFn(namespace=namespace, extract_config=cfg.extract)).with_outputs(
            DEAD_LETTER, main="docs")
        docs = (extracted.docs
                | "FilterDocuments" >> beam.ParDo(FilterDocumentFn(filter_config=cfg.filters,
                                                                   namespace=namespace))
                | "Deduplicate" >> DeduplicateDocuments(config=cfg, namespace=namespace)
                | "BoundsBeforeDownload" >> beam.ParDo(_BoundsFn(config=cfg, namespace=namespace)))
        return docs, extracted[DEAD_LETTER]


class _BoundsFn(beam.DoFn):
    """Drop documents already out of bounds before downloading anything (counted `bounds.<reason>`)."""

    def __init__(self, *, config: M3WConfig, namespace: str) -> None:
        self.config, self.namespace = config, namespace

    def process(self, item: PageDocument) -> Iterator[PageDocument]:
        reason = image_bounds_reason(item.doc, self.config.filters)
        if reason is None:
            count(self.namespace, "documents.after_dedup")
            yield item
        else:
            count(self.namespace, f"bounds.{reason}")


def build_m3w(pipeline: beam.Pipeline, *, inputs: list[str], output: str, config: M3WConfig,
              download: bool = True) -> None:
    """Add the M3W job to `pipeline`: WARC globs `inputs` -> m3w shards under `output`.

    With `download=False` the job stops after dedup and the frequency filters (benchmarks).
    """
    namespace = NAMESPACE
    docs, extract_dead = (pipeline | "Inputs" >> beam.Create(inputs)
                          | "Documents" >> M3WDocuments(config=config, namespace=namespace))
    if not download:
        _ = docs | "CountDocuments" >> beam.combiners.Count.Globally()
        _ = extract_dead | "WriteDeadLetters" >> WriteDeadLetters(output)
        return
    assigned, pending, _total = (docs | "KeyByDoc" >> beam.Map(lambda item: (item.key, item))
                                 | "AssignShards" >> AssignShards(output=output,
                                                                  samples_per_shard=config.samples_per_shard,
                                                                  namespace=namespace))
    refs = assigned | "ImageRefs" >> beam.FlatMap(_image_refs)
    downloaded = (refs
                  | "ImageUrls" >> beam.Keys()
                  | "UniqueImageUrls" >> beam.Distinct()
                  | "BatchUrls" >> beam.BatchElements(min_batch_size=1, max_batch_size=config.download.batch_size)
                  | "DownloadImages" >> beam.ParDo(DownloadImagesFn(config=config.download, namespace=namespace,
                                                                   filter_config=config.filters))
                  .with_outputs(DEAD_LETTER, main="images"))
    by_doc = ({"result": downloaded.images, "doc": refs}
              | "JoinImagesByUrl" >> beam.CoGroupByKey()
              | "ImagesByDoc" >> beam.FlatMap(_images_by_doc))
    docs_by_key = assigned | "DocsByKey" >> beam.Map(lambda element: (element[1].key, element))
    items = ({"doc": docs_by_key, "images": by_doc}
             | "JoinImagesIntoDocs" >> beam.CoGroupByKey()
             | "AssembleSamples" >> beam.ParDo(AssembleSampleFn(config=config, namespace=namespace)))
    _ = items | "WriteShards" >> WriteShards(output=output, kind="m3w", namespace=namespace, pending=pending)
    _ = ((extract_dead, downloaded[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> WriteDeadLetters(output))


def run_m3w(*, inputs: list[str], output: str, config: M3WConfig | None = None,
            options: PipelineOptions | None = None) -> dict[str, Any]:
    """Run the M3W job and return its stats (counters); also written to `<output>/etl_stats.json`."""
    config = config or M3WConfig()
    pipeline = beam.Pipeline(options=options or PipelineOptions())
    build_m3w(pipeline, inputs=inputs, output=output, config=config)
    return run_and_report(pipeline, output=output, namespace=NAMESPACE)
