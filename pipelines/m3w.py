"""The M3W job: WARC pages -> interleaved image-text documents -> m3w shards.

    WARC files -> StageDocuments     per file: read, extract, filter; the documents go to a staging
                                     file under the output, their small `DedupInfo` goes on, and
                                     every page dropped here becomes an `Outcome` (its parquet row)
    -> Deduplicate                   ExactDedup -> NearDedup -> SameUrlDedup -> SameImageSetDedup,
                                     on DedupInfos: each cluster keeps its newest capture, the
                                     others become `Drop`s naming the kept document
    -> CorpusFrequency               (image URL -> documents), (domain paragraph -> documents)
                                     groups, streamed: frequent keys go to the documents that hold them
    -> Verdicts                      per document: keep (with its frequent keys) or drop
    -> ApplyVerdicts                 per staging file: stream its documents, apply their verdicts
    -> AssignShards -> DownloadImages (unique URLs) -> JoinImages -> AssembleSamples
    -> WriteShards                   samples, and every dropped page as a parquet row

Everything that grows with the corpus travels as keyed elements through shuffles: no side input
but the sample count, no single group, and no DoFn holding more than one group's worth of a key
that is bounded by configuration or by one WARC file (`work.*` metrics measure it). Near-dedup
is linear in bucket size: each LSH bucket links its members to its representative (the smallest
key), connected components come from a bounded number of label-propagation rounds, and each
component keeps its newest capture.

Every page ends in one place (a sample, or a parquet row with `status`, `reason`, its WARC file
and offset) and is counted once in the `funnel.*` counters (`common.funnel_of`). Each step wraps
a `flamboyance.preprocess` function; exceptions of per-page work are caught where they happen,
counted, dead-lettered, and the job goes on. Documents that share a dedup key keep the newest
capture (then the largest key, so ties are deterministic). A rerun into the same output reuses
the staging files written with the same settings (their counters, rows and dead letters are
replayed).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import posixpath
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput
from flamboyance.preprocess import dedup
from flamboyance.preprocess.document import Document, ImageNode
from flamboyance.preprocess.filters import FilterConfig, apply_filters, judged_stats

from .common import (
    DEAD_LETTER,
    LOG,
    AssignRows,
    AssignShards,
    DeadLetter,
    Progress,
    ShardItem,
    WriteDeadLetters,
    WriteShards,
    count,
    count_all,
    expand_glob,
    held,
    join_url,
    make_key,
    page_key,
    run_and_report,
)
from .config import M3WConfig
from .m3w_dedup import (  # noqa: F401 - the dedup stages, also reached through this module
    DROPPED,
    ConnectedComponents,
    DedupInfo,
    Deduplicate,
    NearDedup,
    Verdict,
    Verdicts,
    boilerplate_key,
    dedup_info,
    fetch_stamp,
    normalized_image_url,
    short_key,
)
from .media import DownloadImagesFn, ImageResult

NAMESPACE = "m3w"
OUTCOME = "outcome"
"""Tag of the outputs that are pages leaving the job (`Outcome`s: their parquet rows)."""


@dataclass(frozen=True, kw_only=True)
class PageDocument:
    """A document extracted from one capture, with what dedup needs to pick the newest one."""

    key: str
    """Stable id of the capture (URL, fetch time, WARC location): the sample key."""
    fetch_time: str
    doc: Document


def recency(item: PageDocument) -> tuple[float, str]:
    """Sort key "newest first wins": the fetch time, then the key (deterministic tie-break)."""
    return fetch_stamp(item.fetch_time), item.key


# --- lineage -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Outcome:
    """Where a page left the job without a sample: its parquet row."""

    key: str
    url: str
    warc_filename: str | None
    warc_offset: int | None
    status: str
    """`failed_to_extract`, `filtered`, `duplicate`, `failed` (an exception) or `failed_to_download`."""
    reason: str
    """Extraction reason, filter name, duplicate kind, or `<step>_exception`."""
    detail: str = ""
    duplicate_of: str = ""
    """For a duplicate: the key of the document kept instead."""

    def item(self) -> ShardItem:
        row = {"key": self.key, "status": self.status, "reason": self.reason,
               "error_message": self.detail or self.reason, "url": self.url,
               "warc_filename": self.warc_filename, "warc_offset": self.warc_offset}
        if self.duplicate_of:
            row["duplicate_of"] = self.duplicate_of
        return ShardItem(key=self.key, row=row)


def page_ref(page: Any) -> str:
    """How a dead letter names a page: its WARC location and URL."""
    return f"{page.warc_filename}@{page.warc_offset} {page.url}"


def page_outcome(page: Any, status: str, reason: str, detail: str = "") -> Outcome:
    return Outcome(key=page_key(page), url=page.url, warc_filename=page.warc_filename,
                   warc_offset=page.warc_offset, status=status, reason=reason, detail=detail[:1000])


def document_outcome(item: PageDocument, status: str, reason: str, detail: str = "",
                     duplicate_of: str = "") -> Outcome:
    meta = item.doc.metadata
    return Outcome(key=item.key, url=item.doc.url, warc_filename=meta.get("warc_filename"),
                   warc_offset=meta.get("warc_offset"), status=status, reason=reason, detail=detail[:1000],
                   duplicate_of=duplicate_of)


def describe(err: BaseException) -> str:
    """An exception as one line: its type and message."""
    return f"{type(err).__name__}: {err}"[:1000]


# --- extraction and filtering ----------------------------------------------------------------

def page_document(page: Any, config: Any) -> PageDocument:
    """The `PageDocument` of a WARC `PageRecord` (raises `ExtractionError` with its reason)."""
    from flamboyance.preprocess.extract import extract_document

    doc = extract_document(page.body, page.url, headers=page.headers, config=config)
    # Timings would make reruns differ byte for byte; they belong in counters, not in samples.
    doc.metadata.pop("extraction_seconds", None)
    doc.metadata.update({"fetch_time": page.fetch_time, "warc_filename": page.warc_filename,
                         "warc_offset": page.warc_offset})
    if getattr(page, "truncated", False):  # the archive cut the body (WARC-Truncated): a prefix
        doc.metadata["truncated"] = True
    return PageDocument(key=page_key(page), fetch_time=page.fetch_time, doc=doc)


def judge_page(page: Any, *, extract_config: Any, filters: FilterConfig,
               counters: Counter) -> tuple[PageDocument | None, Outcome | None, DeadLetter | None]:
    """One page extracted (`extract_document`) and filtered (`apply_filters`): the surviving
    document, or the page's `Outcome` (and a dead letter for an extraction failure). Any
    exception is caught here. Counts into `counters` `extract.<reason>`, `filter.<reason>` and
    the page's funnel step."""
    from flamboyance.preprocess.extract import ExtractionError

    try:
        item = page_document(page, extract_config)
    except ExtractionError as err:
        reason, detail = err.reason, err.detail
    except Exception as err:  # noqa: BLE001 - no page may fail the job: counted, dead-lettered
        reason, detail = "exception", describe(err)
    else:
        reason = detail = ""
    if reason:
        counters[f"extract.{reason}"] += 1
        counters[f"funnel.not_extracted.{reason}"] += 1
        return (None, page_outcome(page, "failed_to_extract", reason, detail),
                DeadLetter(stage="extract", reason=reason, ref=page_ref(page), detail=detail[:1000]))
    counters["extract.documents"] += 1
    counters["funnel.extracted"] += 1
    reasons: Counter = Counter()
    try:
        doc, dropped_for = apply_filters(item.doc, filters, reasons)
    except Exception as err:  # noqa: BLE001
        counters["funnel.failed.filter_exception"] += 1
        return (None, page_outcome(page, "failed", "filter_exception", describe(err)),
                DeadLetter(stage="filter", reason="exception", ref=page_ref(page), detail=describe(err)))
    counters.update({f"filter.{reason}": n for reason, n in reasons.items()})
    if doc is None:
        counters[f"funnel.filtered.{dropped_for}"] += 1
        return None, page_outcome(page, "filtered", dropped_for or "filtered"), None
    return dataclasses.replace(item, doc=doc), None, None


class JudgePageFn(beam.DoFn):
    """PageRecord -> its `PageDocument` if it survives extraction and the filters (`judge_page`);
    the others as `OUTCOME`s, extraction failures also as dead letters. The job itself judges
    pages inside `StageDocumentsFn`."""

    def __init__(self, *, filter_config: FilterConfig, namespace: str = NAMESPACE, extract_config: Any = None) -> None:
        self.filter_config, self.namespace, self.extract_config = filter_config, namespace, extract_config

    def setup(self) -> None:
        from flamboyance.preprocess.extract import DEFAULT_CONFIG

        self.config = self.extract_config or DEFAULT_CONFIG

    def process(self, page: Any) -> Iterator[Any]:
        counters: Counter = Counter({"funnel.pages": 1})
        item, outcome, letter = judge_page(page, extract_config=self.config, filters=self.filter_config,
                                           counters=counters)
        for name, value in counters.items():
            count(self.namespace, name, value)
        if letter is not None:
            yield TaggedOutput(DEAD_LETTER, letter)
        if outcome is not None:
            yield TaggedOutput(OUTCOME, outcome)
        if item is not None:
            yield item


# --- applying the verdicts -------------------------------------------------------------------------

def apply_removals(item: PageDocument, *, frequent_images: Collection[bytes], boilerplate: Collection[bytes],
                   filters: FilterConfig, namespace: str = NAMESPACE) -> tuple[PageDocument | None, str | None]:
    """`item` with the corpus-wide removals that touch it (its images whose `image_url_key` is in
    `frequent_images`, its paragraphs whose `boilerplate_key` is in `boilerplate`) applied by
    `apply_filters(..., frequent_image_urls=, boilerplate_paragraphs=)` (counted as
    `filter.image_frequent_url`, `filter.paragraph_boilerplate` and any document-level reason
    that then applies): (the document, None), or (None, the reason it goes)."""
    doc = item.doc
    images = {url for url in map(normalized_image_url, (n.url for n in doc.images))
              if short_key(url) in frequent_images} if frequent_images else set()
    paragraphs: set[str] = set()
    if boilerplate:
        domain = dedup.domain_of(doc.url)
        paragraphs = {key for key in (dedup.paragraph_key(node.text) for node in doc.texts)
                      if key and boilerplate_key(domain, key) in boilerplate}
    if not images and not paragraphs:
        return item, None
    reasons: Counter = Counter()
    # item.doc is the filters' output, unchanged since: its stored scores are those of its text,
    # so the text is scored again only if a paragraph goes.
    kept, reason = apply_filters(doc, filters, reasons, frequent_image_urls=images,
                                 boilerplate_paragraphs=paragraphs, known_stats=judged_stats(doc))
    count_all(namespace, "filter", reasons)
    return (None, reason) if kept is None else (dataclasses.replace(item, doc=kept), None)


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


def apply_verdict(item: PageDocument, verdict: Verdict, *, config: M3WConfig, namespace: str,
                  bounds: bool = True) -> Iterator[Any]:
    """A document with its verdict applied: the document (counted `documents.after_dedup`), or
    its `Outcome` (a duplicate, filtered by the corpus-wide removals or, with `bounds`, out of
    the image bounds, or an exception) and dead letter."""
    if verdict.drop is not None:  # counted where dedup decided
        yield TaggedOutput(OUTCOME, document_outcome(item, "duplicate", verdict.drop.kind,
                                                     duplicate_of=verdict.drop.kept))
        return
    try:
        kept, reason = apply_removals(item, frequent_images=verdict.images, boilerplate=verdict.paragraphs,
                                      filters=config.filters, namespace=namespace)
        if kept is not None and bounds:
            reason = image_bounds_reason(kept.doc, config.filters)
            if reason is not None:
                count(namespace, f"bounds.{reason}")
    except Exception as err:  # noqa: BLE001 - no document may fail the job
        count(namespace, "funnel.failed.removals_exception")
        yield TaggedOutput(OUTCOME, document_outcome(item, "failed", "removals_exception", describe(err)))
        yield TaggedOutput(DEAD_LETTER, DeadLetter(stage="removals", reason="exception", ref=item.key,
                                                   detail=describe(err)))
        return
    if reason is not None:
        count(namespace, f"funnel.filtered.{reason}")
        yield TaggedOutput(OUTCOME, document_outcome(item, "filtered", reason))
        return
    count(namespace, "documents.after_dedup")
    count(namespace, "funnel.to_download")
    yield kept


class ApplyVerdictsFn(beam.DoFn):
    """(staging file name, the `Verdict`s of its documents) -> its documents streamed from the
    file with their verdicts applied (`apply_verdict`). Holds one staging file's verdicts: as
    many as the documents of one WARC file."""

    def __init__(self, *, output: str, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        self.output, self.config, self.namespace = output, config, namespace

    def process(self, element: tuple[str, Iterable[Verdict]]) -> Iterator[Any]:
        name, verdicts_ = element
        verdicts = {verdict.key: verdict for verdict in verdicts_}
        held(self.namespace, len(verdicts))
        url = join_url(self.output, STAGING_DIR, self.namespace, name)
        found = 0
        with fsspec.open(url, "rb") as handle:
            for item in _pickles(handle):
                verdict = verdicts.get(item.key)
                if verdict is not None:
                    found += 1
                    yield from apply_verdict(item, verdict, config=self.config, namespace=self.namespace)
        if found != len(verdicts):
            raise RuntimeError(f"staging file {url} lacks {len(verdicts) - found} of its documents; "
                               f"it was changed or removed during the run")


class DeduplicateDocuments(beam.PTransform):
    """PageDocuments -> the documents that survive dedup, with their corpus-wide removals applied
    (the job's steps on documents carried in the pipeline, joined with their verdicts by key;
    the job itself stages its documents, see `StageDocumentsFn`). Image bounds are not checked."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.config, self.namespace = config, namespace

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        cfg, namespace = self.config, self.namespace
        survivors, drops = (docs
                            | "DedupInfo" >> beam.Map(dedup_info, bands=cfg.minhash_bands, rows=cfg.minhash_rows)
                            | "Deduplicate" >> Deduplicate(config=cfg, namespace=namespace))
        verdicts = survivors | "Verdicts" >> Verdicts(config=cfg, drops=drops, namespace=namespace)

        def apply(element: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
            grouped = element[1]  # one document and its verdict
            for item in grouped["doc"]:
                for verdict in grouped["verdict"]:
                    for out in apply_verdict(item, verdict, config=cfg, namespace=namespace, bounds=False):
                        if isinstance(out, PageDocument):
                            yield out

        return ({"doc": docs | "KeyByDoc" >> beam.Map(lambda item: (item.key, item)),
                 "verdict": verdicts | "KeyByKey" >> beam.Map(lambda e: (e[1].key, e[1]))}
                | "JoinVerdicts" >> beam.CoGroupByKey()
                | "ApplyVerdicts" >> beam.FlatMap(apply))


# --- staging -------------------------------------------------------------------------------------

STAGING_DIR = "_staging"
"""Folder (beside the shards, under the output URL) holding the staged documents of each WARC file."""

STAGING_VERSION = 6
"""Bumped when what a staging file holds changes: older files are then not reused."""


def staging_fingerprint(config: M3WConfig) -> str:
    """A key of everything that shapes a staging file (extraction, filters, MinHash bands): a
    rerun reuses a staging file only if it was written under the same settings."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, set | frozenset):
            return sorted(plain(v) for v in value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value if value is None or isinstance(value, str | int | float | bool) else repr(value)

    settings = {"version": STAGING_VERSION, "extract": plain(config.extract), "filters": plain(config.filters),
                "bands": config.minhash_bands, "rows": config.minhash_rows,
                "skip_truncated": config.skip_truncated}
    return make_key(json.dumps(settings, sort_keys=True))


def _pickles(handle: Any) -> Iterator[Any]:
    """The objects of a stream of pickles (one `pickle.dump` after another)."""
    while True:
        try:
            yield pickle.load(handle)
        except EOFError:
            return


class StageDocumentsFn(beam.DoFn):
    """WARC file URL -> its pages read, extracted and filtered (`judge_page`); the surviving
    documents are written to `<output>/_staging/m3w/<name>.docs.pkl` and their `DedupInfo`s
    emitted; every other page is emitted as an `OUTCOME` (and dead letter, if it failed).

    The `.infos.pkl` file (the infos, then a footer with the file's counters, outcomes and dead
    letters) is renamed into place last: a file whose infos exist is complete, and a rerun
    reuses it, replaying its footer, instead of extracting again. A WARC file that cannot be
    parsed to its end is dead-lettered (`warc.read_error`); I/O errors fail the bundle (the
    runner retries it).
    """

    def __init__(self, *, output: str, config: M3WConfig, namespace: str = NAMESPACE,
                 max_body_bytes: int = 5 * 2**20) -> None:
        self.output, self.config, self.namespace, self.max_body_bytes = output, config, namespace, max_body_bytes

    def setup(self) -> None:
        from flamboyance.preprocess.extract import DEFAULT_CONFIG

        self.progress = Progress(namespace=self.namespace, stage="stage_documents")
        self.extract_config = self.config.extract or DEFAULT_CONFIG
        self.fingerprint = staging_fingerprint(self.config)
        self.root = join_url(self.output, STAGING_DIR, self.namespace)

    def process(self, url: str) -> Iterator[Any]:
        name = make_key(url, self.fingerprint)
        docs_url, infos_url = join_url(self.root, f"{name}.docs.pkl"), join_url(self.root, f"{name}.infos.pkl")
        fs, infos_path = fsspec.core.url_to_fs(infos_url)
        footer: dict[str, Any] | None = None
        if fs.exists(infos_path) and fs.exists(fsspec.core.url_to_fs(docs_url)[1]):
            footer = yield from self._replay(fs, infos_path)
            if footer is None:
                LOG.warning("%s: staging file %s is incomplete; staging %s again", self.namespace, infos_url, url)
        if footer is None:
            footer = yield from self._stage(url, docs_url, infos_url)
        for name_, value in footer["counters"].items():
            count(self.namespace, name_, value)
        for outcome in footer["outcomes"]:
            yield TaggedOutput(OUTCOME, Outcome(**outcome))
        for letter in footer["dead_letters"]:
            yield TaggedOutput(DEAD_LETTER, DeadLetter(**letter))

    def _replay(self, fs: Any, path: str) -> Iterator[Any]:
        """Yield the staged infos of a complete file; return its footer (None if it has none)."""
        infos = []
        try:
            with fs.open(path, "rb") as handle:
                for obj in _pickles(handle):
                    if isinstance(obj, DedupInfo):
                        infos.append(obj)
                    elif isinstance(obj, dict) and obj.get("version") == STAGING_VERSION:
                        yield from infos
                        return obj
        except Exception as err:  # noqa: BLE001 - any damage means "stage again", never a wrong reuse
            LOG.warning("%s: cannot read staging file %s (%s)", self.namespace, path, describe(err))
        return None

    def _stage(self, url: str, docs_url: str, infos_url: str) -> Iterator[Any]:
        from flamboyance.crawl import read_warc

        counters: Counter = Counter()
        outcomes: list[Outcome] = []
        letters: list[DeadLetter] = []
        skipped: Counter = Counter()
        fs, docs_path = fsspec.core.url_to_fs(docs_url)
        infos_path = fsspec.core.url_to_fs(infos_url)[1]
        fs.makedirs(posixpath.dirname(docs_path), exist_ok=True)
        suffix = f".{uuid.uuid4().hex}.tmp"  # a retried bundle never writes into another attempt's file
        docs_tmp, infos_tmp = docs_path + suffix, infos_path + suffix
        cfg = self.config
        try:
            with fs.open(docs_tmp, "wb") as docs_out, fs.open(infos_tmp, "wb") as infos_out:
                pages = read_warc(url, skipped=skipped, max_body_bytes=self.max_body_bytes,
                                  skip_truncated=cfg.skip_truncated)
                while True:
                    try:
                        page = next(pages)
                    except StopIteration:
                        break
                    except OSError:
                        raise
                    except Exception as err:  # noqa: BLE001 - a damaged file loses its rest, counted
                        counters["warc.read_error"] += 1
                        letters.append(DeadLetter(stage="warc", reason="read_error", ref=url, detail=describe(err)))
                        break
                    counters["warc.pages"] += 1
                    counters["funnel.pages"] += 1
                    self.progress.tick()
                    info = None
                    item, outcome, letter = judge_page(page, extract_config=self.extract_config,
                                                       filters=cfg.filters, counters=counters)
                    if item is not None:
                        try:
                            info = dedup_info(item, bands=cfg.minhash_bands, rows=cfg.minhash_rows,
                                              staged=posixpath.basename(docs_path))
                        except Exception as err:  # noqa: BLE001
                            counters["funnel.failed.dedup_keys_exception"] += 1
                            outcome = page_outcome(page, "failed", "dedup_keys_exception", describe(err))
                            letter = DeadLetter(stage="dedup_keys", reason="exception", ref=page_ref(page),
                                                detail=describe(err))
                    if letter is not None:
                        letters.append(letter)
                    if outcome is not None:
                        outcomes.append(outcome)
                    if info is None:
                        continue
                    pickle.dump(item, docs_out, protocol=pickle.HIGHEST_PROTOCOL)
                    pickle.dump(info, infos_out, protocol=pickle.HIGHEST_PROTOCOL)
                    yield info
                counters["warc.files"] += 1
                counters.update({f"warc.{reason}": n for reason, n in skipped.items()})
                footer = {"version": STAGING_VERSION, "warc": url, "counters": dict(counters),
                          "outcomes": [dataclasses.asdict(o) for o in outcomes],
                          "dead_letters": [dataclasses.asdict(letter) for letter in letters]}
                pickle.dump(footer, infos_out, protocol=pickle.HIGHEST_PROTOCOL)
            fs.mv(docs_tmp, docs_path)
            fs.mv(infos_tmp, infos_path)  # last: its presence says the file is complete
        finally:
            for tmp in (docs_tmp, infos_tmp):
                if fs.exists(tmp):
                    fs.rm(tmp)
        LOG.info("%s: staged %d documents of %d pages from %s (skipped %s)", self.namespace,
                 counters["extract.documents"], counters["warc.pages"], url, dict(skipped))
        return footer


class M3WDocuments(beam.PTransform):
    """WARC URL globs -> deduplicated, frequency-filtered, in-bounds `PageDocument`s (no
    downloads), staged under `output` (see `StageDocumentsFn`).

    Returns (documents, outcomes, dead_letters): `Outcome`s of every page that left the job."""

    def __init__(self, *, output: str, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.output, self.config, self.namespace = output, config, namespace

    def expand(self, patterns: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        cfg, namespace = self.config, self.namespace
        staged = (patterns
                  | "ExpandGlobs" >> beam.FlatMap(expand_glob)
                  | "SpreadFiles" >> beam.Reshuffle()
                  | "StageDocuments" >> beam.ParDo(StageDocumentsFn(output=self.output, config=cfg,
                                                                    namespace=namespace))
                  .with_outputs(DEAD_LETTER, OUTCOME, main="infos"))
        survivors, drops = staged.infos | "Deduplicate" >> Deduplicate(config=cfg, namespace=namespace)
        applied = (survivors
                   | "Verdicts" >> Verdicts(config=cfg, drops=drops, namespace=namespace)
                   | "GroupByStagingFile" >> beam.GroupByKey()
                   | "ApplyVerdicts" >> beam.ParDo(ApplyVerdictsFn(output=self.output, config=cfg,
                                                                   namespace=namespace))
                   .with_outputs(DEAD_LETTER, OUTCOME, main="docs"))
        outcomes = (staged[OUTCOME], applied[OUTCOME]) | "AllOutcomes" >> beam.Flatten()
        dead = (staged[DEAD_LETTER], applied[DEAD_LETTER]) | "DocumentDeadLetters" >> beam.Flatten()
        return applied.docs, outcomes, dead


# --- images and samples --------------------------------------------------------------------------

def _image_refs(element: tuple[int, PageDocument]) -> Iterator[tuple[str, str]]:
    # Raw URLs: what is fetched is what the page named.
    _, item = element
    for url in sorted({image.url for image in item.doc.images}):
        yield url, item.key


def _images_by_doc(element: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[str, tuple[str, ImageResult]]]:
    url, grouped = element  # one result, and the documents showing the image (as many as
    # `image_max_documents`: more made it a frequent image, removed before download)
    held(NAMESPACE, len(grouped["doc"]))
    result = grouped["result"][0] if grouped["result"] else ImageResult(url=url, reason="not_downloaded")
    for doc_key in grouped["doc"]:
        yield doc_key, (url, result)


class AssembleSampleFn(beam.DoFn):
    """(doc key, {shard, images}) -> (shard, ShardItem): failed images dropped, bounds checked,
    PII redacted, M3W sequence built. A document out of bounds once its failed images are gone
    becomes a `failed_to_download` row in its shard's parquet; an exception a `failed` row."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        self.config, self.namespace = config, namespace

    def process(self, element: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
        key, grouped = element
        if not grouped["doc"]:
            return
        shard, item = grouped["doc"][0]
        held(self.namespace, len(grouped["images"]))  # the document's images: `doc_max_images` at most
        try:
            yield shard, self._assemble(item, dict(grouped["images"]))
        except Exception as err:  # noqa: BLE001 - no document may fail the job
            count(self.namespace, "funnel.not_downloaded.assemble_exception")
            yield shard, document_outcome(item, "failed", "assemble_exception", describe(err)).item()
            yield TaggedOutput(DEAD_LETTER, DeadLetter(stage="assemble", reason="exception", ref=key,
                                                       detail=describe(err)))

    def _assemble(self, item: PageDocument, results: dict[str, ImageResult]) -> ShardItem:
        from flamboyance.preprocess.pii import redact_document
        from flamboyance.preprocess.sequence import to_sequence
        from flamboyance.shards.formats import M3WSample

        nodes, images, sizes = [], [], []
        failed: Counter = Counter()
        for node in item.doc.nodes:
            if isinstance(node, ImageNode):
                result = results.get(node.url)
                if result is None or not result.ok:
                    count(self.namespace, "doc.image_dropped")
                    failed["not_downloaded" if result is None else result.reason or "failed"] += 1
                    continue
                images.append(result.data)
                sizes.append([result.width, result.height])
            nodes.append(node)
        doc = redact_document(dataclasses.replace(item.doc, nodes=nodes))
        reason = image_bounds_reason(doc, self.config.filters)
        if reason is not None:
            count(self.namespace, f"doc.{reason}")
            count(self.namespace, f"funnel.not_downloaded.{reason}")
            detail = f"{reason} after image failures: " + ", ".join(f"{r} x{n}" for r, n in sorted(failed.items()))
            failure = document_outcome(item, "failed_to_download", reason, detail).item()
            failure.row["images_failed"] = sum(failed.values())
            return failure
        document = doc.to_dict()
        meta = doc.metadata
        document.update({"text": to_sequence(doc), "image_sizes": sizes, "language": doc.language,
                         "fetch_time": item.fetch_time, "warc_filename": meta.get("warc_filename"),
                         "warc_offset": meta.get("warc_offset")})
        count(self.namespace, "doc.kept")
        count(self.namespace, "funnel.downloaded")
        row = {"key": item.key, "images_failed": sum(failed.values())} if failed else None
        return ShardItem(key=item.key, sample=M3WSample(key=item.key, document=document, images=images), row=row)


def build_m3w(pipeline: beam.Pipeline, *, inputs: list[str], output: str, config: M3WConfig,
              download: bool = True) -> None:
    """Add the M3W job to `pipeline`: WARC globs `inputs` -> m3w shards under `output`.

    With `download=False` the job stops after dedup and the frequency filters (benchmarks).
    """
    namespace = NAMESPACE
    docs, outcomes, document_dead = (pipeline | "Inputs" >> beam.Create(inputs)
                                      | "Documents" >> M3WDocuments(output=output, config=config,
                                                                    namespace=namespace))
    if not download:
        _ = docs | "CountDocuments" >> beam.combiners.Count.Globally()
        _ = document_dead | "WriteDeadLetters" >> WriteDeadLetters(output, namespace=namespace)
        return
    per_shard = config.samples_per_shard
    assigned, pending, total = (docs | "KeyByDoc" >> beam.Map(lambda item: (item.key, item))
                                | "AssignShards" >> AssignShards(output=output, samples_per_shard=per_shard,
                                                                 namespace=namespace))
    rows = (outcomes | "OutcomeRows" >> beam.Map(Outcome.item)
            | "AssignRows" >> AssignRows(output=output, samples_per_shard=per_shard, namespace=namespace,
                                         total=total))
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
             | "AssembleSamples" >> beam.ParDo(AssembleSampleFn(config=config, namespace=namespace))
             .with_outputs(DEAD_LETTER, main="items"))
    _ = ((items.items, rows) | "SamplesAndRows" >> beam.Flatten()
         | "WriteShards" >> WriteShards(output=output, kind="m3w", namespace=namespace, pending=pending))
    _ = ((document_dead, downloaded[DEAD_LETTER], items[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> WriteDeadLetters(output, namespace=namespace))


def run_m3w(*, inputs: list[str], output: str, config: M3WConfig | None = None,
            options: PipelineOptions | None = None) -> dict[str, Any]:
    """Run the M3W job and return its stats (counters, funnel, work); also written to
    `<output>/etl_stats.json`."""
    config = config or M3WConfig()
    pipeline = beam.Pipeline(options=options or PipelineOptions())
    build_m3w(pipeline, inputs=inputs, output=output, config=config)
    return run_and_report(pipeline, output=output, namespace=NAMESPACE)
