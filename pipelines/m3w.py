"""The M3W job: WARC pages -> interleaved image-text documents -> m3w shards.

    WARC files -> StageDocuments (per file: read, extract, filter; the documents go to a staging
                  file beside the output, only their small DedupInfo records go on)
          -> DedupDecisions (on DedupInfos: ExactDedup -> NearDedup -> SameUrlDedup
             -> SameImageSetDedup; the survivors' keys are gathered per staging file;
             CorpusFrequency counts their image URLs and paragraphs, read back from the staging
             files, combined before the shuffle, and only the frequent keys come out)
          -> ApplySurvivors (per staging file: stream its documents, keep the survivors, drop
             the corpus-frequent images and boilerplate paragraphs, given as side inputs)
          -> AssignShards -> DownloadImages (unique URLs)
          -> JoinImages (CoGroupByKey by URL, then by document) -> AssembleSamples -> WriteShards

Documents are never shuffled before dedup has decided: what crosses the dedup shuffles is a
packed record of about a hundred bytes per document (`DedupInfo.pack`; signatures, image and
paragraph keys stay in the staging files and are read back only where needed), so the runner's
memory (the DirectRunner keeps every shuffled PCollection in memory) and the serialisation work
stay small whatever the pages weigh. A rerun
into the same output reuses every staging file written by an earlier run with the same
extraction and filter settings (its counters and dead letters are replayed).

Each step wraps a `flamboyance.preprocess` function (extraction, filters, dedup keys, sequence
text, PII redaction); nothing here re-implements them. Documents that share a dedup key keep
the newest capture (then the smallest key, so ties are deterministic).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import posixpath
import struct
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import apache_beam as beam
import fsspec
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput
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
    LOG,
    AssignShards,
    DeadLetter,
    Progress,
    ShardItem,
    WriteDeadLetters,
    WriteShards,
    count,
    count_all,
    expand_glob,
    join_url,
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

def page_ref(page: Any) -> str:
    """How a dead letter names a page: its WARC location and URL."""
    return f"{page.warc_filename}@{page.warc_offset} {page.url}"


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
    return PageDocument(key=make_key(page.url, page.fetch_time, page.warc_filename, page.warc_offset),
                        fetch_time=page.fetch_time, doc=doc)


def judge_page(page: Any, *, extract_config: Any, filters: FilterConfig,
               counters: Counter) -> tuple[PageDocument | None, DeadLetter | None]:
    """One page extracted (`extract_document`) and filtered (`apply_filters`): the surviving
    document, or None, and the dead letter of an extraction rejection. Counts into `counters`
    `extract.documents`, `extract.<reason>` and `filter.<reason>`."""
    from flamboyance.preprocess.extract import ExtractionError

    try:
        item = page_document(page, extract_config)
    except ExtractionError as err:
        counters[f"extract.{err.reason}"] += 1
        return None, DeadLetter(stage="extract", reason=err.reason, ref=page_ref(page), detail=err.detail[:1000])
    counters["extract.documents"] += 1
    reasons: Counter = Counter()
    doc, _ = apply_filters(item.doc, filters, reasons)
    counters.update({f"filter.{reason}": n for reason, n in reasons.items()})
    return (None if doc is None else dataclasses.replace(item, doc=doc)), None


class JudgePageFn(beam.DoFn):
    """PageRecord -> its `PageDocument` if it survives extraction and the filters (`judge_page`);
    extraction rejections are dead letters. The job itself judges pages inside `StageDocumentsFn`."""

    def __init__(self, *, filter_config: FilterConfig, namespace: str = NAMESPACE, extract_config: Any = None) -> None:
        self.filter_config, self.namespace, self.extract_config = filter_config, namespace, extract_config

    def setup(self) -> None:
        from flamboyance.preprocess.extract import DEFAULT_CONFIG

        self.config = self.extract_config or DEFAULT_CONFIG

    def process(self, page: Any) -> Iterator[Any]:
        counters: Counter = Counter()
        item, letter = judge_page(page, extract_config=self.config, filters=self.filter_config, counters=counters)
        for name, value in counters.items():
            count(self.namespace, name, value)
        if letter is not None:
            yield TaggedOutput(DEAD_LETTER, letter)
        if item is not None:
            yield item


# --- dedup ---------------------------------------------------------------------------------------
#
# Dedup decisions are made on small `DedupInfo` records (hashes, keys, a MinHash signature),
# computed next to extraction where the work parallelises; the documents wait in their staging
# files (`StageDocumentsFn`) and only the survivors' keys go back to them. Keys that are only
# compared (URLs, paragraph keys, LSH bands) travel as 64-bit hashes (`short_key`), packed into
# one bytes value per field: a false match among a billion keys has probability about 2**-34,
# and a record is a few hundred bytes in a shuffle and in memory.

@dataclass(frozen=True, kw_only=True)
class DedupInfo:
    """What dedup and the corpus-wide counts need to know about one document."""

    key: str
    stamp: float
    """The capture's fetch time (POSIX seconds): with the key, its `rank`."""
    content_hash: bytes
    """`dedup.content_hash` (16 bytes)."""
    url_key: bytes
    """`short_key` of the normalised page URL."""
    image_set_key: bytes
    """`dedup.image_set_key` (16 bytes; empty for a document without images)."""
    band_keys: bytes = b""
    """LSH band keys of the text's MinHash signature, 8 bytes a band (none without text)."""
    signature: bytes = b""
    """The signature's values truncated to 32 bits (uint32 bytes), enough to estimate Jaccard
    similarity (a false slot match has probability 2**-32) at half the bytes in every shuffle."""
    image_keys: bytes = b""
    """`image_url_key`s of the document's images (distinct, sorted, 8 bytes each)."""
    paragraph_keys: bytes = b""
    """`boilerplate_key`s of its text nodes (distinct, sorted, 8 bytes each)."""
    staged: str = ""
    """Name of the staging file holding the document, in the job's staging folder ("" when the
    documents travel in the pipeline). A name, not a URL: an output moved elsewhere still works."""

    @property
    def rank(self) -> tuple[float, str]:
        """`recency` of the capture: larger is newer."""
        return self.stamp, self.key

    def pack(self) -> bytes:
        """The record as compact bytes (`unpack_info` reads them back): what every dedup shuffle
        carries. Hex keys and staging names travel as their raw bytes, each field behind its
        length: a record is about 60 bytes plus its packed keys."""
        out = bytearray(_STAMP.pack(self.stamp))
        for value in (_text_bytes(self.key), self.content_hash, self.url_key, self.image_set_key, self.band_keys,
                      self.signature, self.image_keys, self.paragraph_keys, _text_bytes(self.staged)):
            out += _varint(len(value))
            out += value
        return bytes(out)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickled (staging files, any PCollection a runner materialises) as its packed bytes
        return unpack_info, (self.pack(),)


_STAMP = struct.Struct("<d")
_HEX_SUFFIXES = ("", ".docs.pkl")
"""What a packed text may end with after its hex digits (0: a key, 1: a staging file name)."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """The `_varint` at `data[at:]` and the offset after it."""
    n, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return n, at


def _text_bytes(text: str) -> bytes:
    """`text` as bytes: lowercase hex (even length), or hex + ".docs.pkl", as its raw bytes behind
    a tag byte; anything else as tag 0xFF + UTF-8."""
    for tag, suffix in enumerate(_HEX_SUFFIXES):
        digits = text[:len(text) - len(suffix)] if suffix else text
        if text.endswith(suffix) and digits and len(digits) % 2 == 0 and digits == digits.lower():
            try:
                return bytes([tag]) + bytes.fromhex(digits)
            except ValueError:
                continue
    return b"\xff" + text.encode("utf-8")


def _bytes_text(data: bytes) -> str:
    if not data:
        raise ValueError("a packed text is never empty")
    tag = data[0]
    return data[1:].decode("utf-8") if tag == 0xFF else data[1:].hex() + _HEX_SUFFIXES[tag]


def unpack_info(data: bytes) -> DedupInfo:
    """The `DedupInfo` that `DedupInfo.pack` wrote."""
    view = memoryview(data)
    stamp, = _STAMP.unpack_from(view)
    at, fields = _STAMP.size, []
    for _ in range(9):
        n, at = _read_varint(view, at)
        fields.append(bytes(view[at:at + n]))
        at += n
    if at != len(data):
        raise ValueError(f"a packed DedupInfo has {len(data) - at} trailing bytes")
    key, content, url, image_set, bands, signature, images, paragraphs, staged = fields
    return DedupInfo(key=_bytes_text(key), stamp=stamp, content_hash=content, url_key=url, image_set_key=image_set,
                     band_keys=bands, signature=signature, image_keys=images, paragraph_keys=paragraphs,
                     staged=_bytes_text(staged))


def dedup_info(item: PageDocument, *, bands: int, rows: int, staged: str = "") -> DedupInfo:
    """The `DedupInfo` of a document (all keys from `flamboyance.preprocess.dedup`)."""
    doc = item.doc
    text = doc.text()
    domain = dedup.domain_of(doc.url)
    paragraphs = {dedup.paragraph_key(node.text) for node in doc.texts} - {""}
    url_key = short_key(normalized_image_url(doc.url))
    band_keys = signature = b""
    if text.strip():
        full = dedup.minhash_signature(text, num_perm=bands * rows)
        # "NN:<16 hex digits>" -> the 8 bytes; the band index is the position
        band_keys = b"".join(bytes.fromhex(key.split(":", 1)[1]) for key in
                             dedup.lsh_band_keys(full, bands=bands, rows=rows))
        signature = full.astype(np.uint32).tobytes()
    return DedupInfo(key=item.key, stamp=recency(item)[0], content_hash=bytes.fromhex(dedup.content_hash(doc)),
                     url_key=url_key, image_set_key=bytes.fromhex(dedup.image_set_key(doc)),
                     band_keys=band_keys, signature=signature,
                     image_keys=b"".join(sorted({image_url_key(image.url) for image in doc.images})),
                     paragraph_keys=b"".join(sorted({boilerplate_key(domain, key) for key in paragraphs})),
                     staged=staged)


def short_key(text: str) -> bytes:
    """A 64-bit hash of `text` (8 bytes): what dedup compares instead of a long string."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def key_chunks(packed: bytes) -> Iterator[bytes]:
    """The 8-byte keys packed in a `DedupInfo` field."""
    return (packed[i:i + 8] for i in range(0, len(packed), 8))


def normalized_image_url(url: str) -> str:
    """The URL form counted for image frequency (`normalize_url`, or the URL itself if it cannot be)."""
    try:
        return dedup.normalize_url(url)
    except ValueError:
        return url


def image_url_key(url: str) -> bytes:
    """The key an image URL is counted under for image frequency (its normalised form, hashed)."""
    return short_key(normalized_image_url(url))


def boilerplate_key(domain: str, paragraph_key: str) -> bytes:
    """The key a paragraph is counted under for domain boilerplate (its domain and key, hashed)."""
    return short_key(f"{domain}\x1f{paragraph_key}")


class KeepNewest(beam.PTransform):
    """Among `DedupInfo`s sharing `key_fn(info)` keep the newest; the others count as `dedup.<reason>`.

    Infos whose key is empty (e.g. no images for the image-set key) are never grouped.
    """

    def __init__(self, *, key_fn: Callable[[DedupInfo], bytes], reason: str, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.key_fn, self.reason, self.namespace = key_fn, reason, namespace

    def expand(self, infos: beam.PCollection) -> beam.PCollection:
        key_fn, reason, namespace = self.key_fn, self.reason, self.namespace

        def keyed(info: DedupInfo) -> tuple[bytes, bytes]:
            return (key_fn(info) or b"unique:" + info.key.encode()), info.pack()

        def newest(element: tuple[bytes, Iterable[bytes]]) -> DedupInfo:
            # One streaming pass: a group as large as a site's captures is never collected.
            best, members = None, 0
            for packed in element[1]:
                info = unpack_info(packed)
                if best is None or info.rank > best.rank:
                    best = info
                members += 1
            count(namespace, f"dedup.{reason}", members - 1)
            return best

        # A plain GroupByKey, not a CombinePerKey: dedup keys are nearly all distinct, so a
        # combiner lifted before the shuffle would reduce nothing and hold one Python record per
        # document in every worker until its bundle ends (Beam keeps up to 100,000 keys).
        return (infos | "KeyBy" >> beam.Map(keyed)
                | "Group" >> beam.GroupByKey()
                | "Newest" >> beam.Map(newest))


class _ConcatFn(beam.CombineFn):
    """Concatenates packed fixed-size records: an accumulator is the record bytes and nothing else."""

    def create_accumulator(self) -> bytearray:
        return bytearray()

    def add_input(self, accumulator: bytearray, packed: bytes) -> bytearray:
        accumulator += packed
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[bytearray]) -> bytearray:
        merged = bytearray()
        for accumulator in accumulators:
            merged += accumulator
        return merged

    def extract_output(self, accumulator: bytearray) -> bytes:
        return bytes(accumulator)


class GatherRecords(beam.PTransform):
    """Packed records (bytes, `size` bytes each, keyed by their first 8 bytes) -> `(bucket, all
    records of the bucket)`, in `buckets` buckets by the records' first byte.

    Dedup keys and LSH bands are counted this way instead of with one shuffle element per key:
    the records are combined before the shuffle (into a bytes buffer per bucket in each worker),
    so a key costs its `size` bytes in every worker and in the runner, not a Python object of a
    few hundred bytes. The buckets spread the work on runners with many workers."""

    def __init__(self, *, size: int, buckets: int = 256) -> None:
        super().__init__()
        if not 0 < buckets <= 256:
            raise ValueError(f"buckets must be in 1..256, got {buckets}")
        self.size, self.buckets = size, buckets

    def expand(self, packed: beam.PCollection) -> beam.PCollection:
        size, buckets = self.size, self.buckets

        def by_bucket(records: bytes) -> Iterator[tuple[int, bytes]]:
            for i in range(0, len(records), size):
                yield records[i] % buckets, records[i:i + size]

        return (packed | "ByBucket" >> beam.FlatMap(by_bucket)
                | "Concatenate" >> beam.CombinePerKey(_ConcatFn()))


def _key_counts(records: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The distinct 8-byte keys of packed records and how often each occurs."""
    return np.unique(np.frombuffer(records, dtype="<u8"), return_counts=True)


_BAND_SALTS = np.array([int.from_bytes(hashlib.blake2b(b"lsh band %d" % band, digest_size=8).digest(), "little")
                        for band in range(256)], dtype="<u8")
"""Per-band constants XORed into the band digests, so that equal digests in two bands are two keys."""


def band_records(info: DedupInfo) -> bytes:
    """The document's LSH bands as 16-byte records: (band key, `short_key` of the document key)."""
    digests = np.frombuffer(info.band_keys, dtype="<u8")
    if not digests.size:
        return b""
    records = np.empty((digests.size, 2), dtype="<u8")
    records[:, 0] = digests ^ _BAND_SALTS[:digests.size]
    records[:, 1] = np.frombuffer(short_key(info.key), dtype="<u8")[0]
    return records.tobytes()


def shared_band_members(records: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(document id, band key) of every document in a band that holds more than one document."""
    table = np.frombuffer(records, dtype="<u8").reshape(-1, 2)
    table = table[np.argsort(table[:, 0], kind="stable")]
    bands = table[:, 0]
    starts = np.flatnonzero(np.r_[True, bands[1:] != bands[:-1]])
    sizes = np.diff(np.r_[starts, bands.size])
    for start, n in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        band = table[start, 0].tobytes()
        for row in range(start, start + n):
            yield table[row, 1].tobytes(), band


class NearDedup(beam.PTransform):
    """Near-duplicates by MinHash LSH: documents sharing a band key are candidates; a candidate
    whose estimated Jaccard similarity with a newer one in the band reaches `threshold` is removed.

    The newest document of any near-duplicate cluster is never removed (it is the newest in
    every band it shares), and no two kept documents are confirmed near-duplicates of each other.
    """

    def __init__(self, *, threshold: float, namespace: str = NAMESPACE, staging_root: str | None = None) -> None:
        super().__init__()
        self.threshold, self.namespace, self.staging_root = threshold, namespace, staging_root

    def expand(self, infos: beam.PCollection) -> beam.PCollection:
        threshold, namespace = self.threshold, self.namespace

        def with_signature(element: tuple[bytes, dict[str, list[Any]]]) -> Iterator[tuple[bytes, Any]]:
            _, grouped = element
            for rank, signature in grouped["signature"]:
                for band_key in grouped["band"]:
                    yield band_key, (rank, signature)

        def duplicates(element: tuple[str, Iterable[Any]]) -> Iterator[str]:
            members = sorted(element[1], key=lambda m: m[0], reverse=True)
            sigs = [np.frombuffer(sig, dtype=np.uint32) for _, sig in members]
            for i in range(1, len(members)):
                if any(dedup.jaccard_estimate(sigs[i], newer) >= threshold for newer in sigs[:i]):
                    yield members[i][0][1]

        # Almost every band key is a document's own: bands are gathered as packed records, and
        # signatures travel only for the documents that share a band with another one.
        if self.staging_root is None:
            bands = infos | "BandRecords" >> beam.Map(band_records)
        else:
            # Staged documents leave their band keys and signatures in their staging files: the
            # bands of the documents that reach this step are read back per staging file, and the
            # signatures for the candidates only, so no shuffle carries either for every document.
            by_file = (infos
                       | "ByStagingFile" >> beam.Map(survivor_record)
                       | "GatherByStagingFile" >> beam.CombinePerKey(_ConcatFn()))
            bands = (by_file
                     | "ReadBands" >> beam.ParDo(_StagedSurvivorsFn(root=self.staging_root))
                     | "BandRecords" >> beam.Map(band_records))
        candidates = (bands
                      | "GatherBands" >> GatherRecords(size=16)
                      | "SharedBands" >> beam.FlatMap(lambda element: shared_band_members(element[1])))
        signatures = (infos | "Signatures" >> beam.FlatMap(
            lambda info: [(short_key(info.key), (info.rank, info.signature))] if info.signature else []))
        if self.staging_root is not None:
            candidate_ids = candidates | "CandidateIds" >> beam.Keys() | "DistinctIds" >> beam.Distinct()
            staged = (by_file
                      | "StagingFiles" >> beam.Keys()
                      | "ReadSignatures" >> beam.ParDo(_StagedSignaturesFn(root=self.staging_root),
                                                       beam.pvalue.AsList(candidate_ids)))
            signatures = (signatures, staged) | "AllSignatures" >> beam.Flatten()
        removed = ({"signature": signatures, "band": candidates}
                   | "AttachSignatures" >> beam.CoGroupByKey()
                   | "CandidateBands" >> beam.FlatMap(with_signature)
                   | "GroupBands" >> beam.GroupByKey()
                   | "Candidates" >> beam.FlatMap(duplicates)
                   # a document removed in several bands is listed once per band; the join below
                   # only asks whether it is listed at all
                   | "KeyRemoved" >> beam.Map(lambda key: (key, True)))

        def keep(element: tuple[str, dict[str, list[Any]]]) -> Iterator[DedupInfo]:
            for packed in element[1]["info"]:
                if element[1]["removed"]:
                    count(namespace, "dedup.near_duplicate")
                else:
                    yield unpack_info(packed)

        # the signature, band keys and content hash have served: the join and later shuffles
        # carry the rest only
        rest = infos | "KeyByDoc" >> beam.Map(
            lambda info: (info.key, dataclasses.replace(info, content_hash=b"", band_keys=b"", signature=b"").pack()))
        return ({"info": rest, "removed": removed}
                | "JoinRemovals" >> beam.CoGroupByKey()
                | "Keep" >> beam.FlatMap(keep))


def infos_name(staged: str) -> str:
    """The name of the infos file beside the staging file `staged` (`<name>.docs.pkl`)."""
    return staged.removesuffix(".docs.pkl") + ".infos.pkl"


class _StagedSignaturesFn(beam.DoFn):
    """Staging file name + candidate document ids (side input) -> `(document id, (rank,
    signature))` of the candidates staged in that file, read from its infos file."""

    def __init__(self, *, root: str) -> None:
        self.root = root

    def setup(self) -> None:
        self.wanted = _KeySet()

    def process(self, staged: str, candidate_ids: list[bytes]) -> Iterator[tuple[bytes, Any]]:
        wanted = self.wanted(candidate_ids)
        if not wanted:
            return
        with fsspec.open(join_url(self.root, infos_name(staged)), "rb") as handle:
            for obj in _pickles(handle):
                if isinstance(obj, DedupInfo) and obj.signature:
                    doc_id = short_key(obj.key)
                    if doc_id in wanted:
                        yield doc_id, (obj.rank, obj.signature)


class _StagedSurvivorsFn(beam.DoFn):
    """(staging file name, `survivor_record`s of some of its documents) -> their staged
    `DedupInfo`s in full but for the signatures, read from the file's infos: the band keys of
    the documents near-dedup compares, the image and paragraph keys of those counted."""

    def __init__(self, *, root: str) -> None:
        self.root = root

    def process(self, element: tuple[str, bytes]) -> Iterator[DedupInfo]:
        name, records = element
        for info in staged_infos(self.root, name, survivor_keys(records)):
            yield dataclasses.replace(info, signature=b"")


def staged_infos(root: str, name: str, keys: Collection[str]) -> Iterator[DedupInfo]:
    """The `DedupInfo`s of the documents `keys` staged in `name`, read from its infos file."""
    with fsspec.open(join_url(root, infos_name(name)), "rb") as handle:
        for obj in _pickles(handle):
            if isinstance(obj, DedupInfo) and obj.key in keys:
                yield obj


def staged_record(info: DedupInfo) -> DedupInfo:
    """What `StageDocumentsFn` emits of a staged document's info: the band keys, signature,
    image keys and paragraph keys stay in the staging file, read back for the documents that
    need them."""
    return dataclasses.replace(info, band_keys=b"", signature=b"", image_keys=b"", paragraph_keys=b"")


class CorpusFrequency(beam.PTransform):
    """`DedupInfo`s -> (frequent image keys, boilerplate paragraph keys): the `image_url_key` of
    every image URL found on more than `image_max_documents` documents, and the `boilerplate_key`
    of every paragraph repeated on at least `paragraph_boilerplate_min_count` documents of one domain.

    Documents list each of their URLs and paragraph keys once, so a count is a number of
    documents. The keys are gathered as packed records (`GatherRecords`: 8 bytes a key in every
    shuffle) and only the frequent keys come out: they are few, and go to the documents as side
    inputs. Counts `frequency.frequent_image_urls` and `frequency.boilerplate_paragraphs`.
    """

    def __init__(self, *, filter_config: FilterConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.filter_config, self.namespace = filter_config, namespace

    def expand(self, infos: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        max_docs = self.filter_config.image_max_documents
        min_repeats = self.filter_config.paragraph_boilerplate_min_count
        namespace = self.namespace

        def frequent(counter: str, at_least: int) -> Callable[[tuple[int, bytes]], Iterator[bytes]]:
            def emit(element: tuple[int, bytes]) -> Iterator[bytes]:
                keys, counts = _key_counts(element[1])
                hits = keys[counts >= at_least]
                count(namespace, f"frequency.{counter}", int(hits.size))
                yield from (key.tobytes() for key in hits)
            return emit

        images = (infos | "ImageRefs" >> beam.Map(lambda info: info.image_keys)
                  | "GatherImageKeys" >> GatherRecords(size=8)
                  | "FrequentImages" >> beam.FlatMap(frequent("frequent_image_urls", max_docs + 1)))
        paragraphs = (infos | "ParagraphRefs" >> beam.Map(lambda info: info.paragraph_keys)
                      | "GatherParagraphKeys" >> GatherRecords(size=8)
                      | "Boilerplate" >> beam.FlatMap(frequent("boilerplate_paragraphs", min_repeats)))
        return images, paragraphs


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


class DedupDecisions(beam.PTransform):
    """`DedupInfo`s -> (survivors, frequent image keys, boilerplate paragraph keys).

    Survivors are the `DedupInfo`s of the documents that survive dedup (exact, near, same URL,
    same image set: the newest capture wins); the two key sets (`CorpusFrequency`, over the
    survivors) are applied with `apply_removals` to the documents they touch (`touches`).

    With `staging_root` the infos are those `StageDocumentsFn` emits (`staged_record`: no band
    keys, signature, image or paragraph keys, which stay in the staging files and are read back
    for the documents that need them), and survivors are `(staging file name, survivor records)`,
    what `ApplySurvivorsFn` takes. Every shuffle then carries a hundred-odd bytes a document."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE, staging_root: str | None = None) -> None:
        super().__init__()
        self.config, self.namespace, self.staging_root = config, namespace, staging_root

    def expand(self, infos: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        cfg, namespace = self.config, self.namespace
        survivors = (infos
                     | "ExactDedup" >> KeepNewest(key_fn=lambda i: i.content_hash, reason="exact",
                                                  namespace=namespace)
                     | "NearDedup" >> NearDedup(threshold=cfg.near_duplicate_threshold, namespace=namespace,
                                                staging_root=self.staging_root)
                     | "SameUrlDedup" >> KeepNewest(key_fn=lambda i: i.url_key, reason="same_url",
                                                    namespace=namespace)
                     | "SameImageSetDedup" >> KeepNewest(key_fn=lambda i: i.image_set_key, reason="same_image_set",
                                                         namespace=namespace))
        if self.staging_root is not None:
            # the survivors' keys gathered per staging file, packed before the shuffle; their
            # image and paragraph keys, left in the staging files, are read back from there
            survivors = (survivors
                         | "ByStagingFile" >> beam.Map(survivor_record)
                         | "GatherByStagingFile" >> beam.CombinePerKey(_ConcatFn()))
            counted = survivors | "ReadSurvivorKeys" >> beam.ParDo(_StagedSurvivorsFn(root=self.staging_root))
        else:
            counted = survivors
        images, paragraphs = counted | "CorpusFrequency" >> CorpusFrequency(filter_config=cfg.filters,
                                                                            namespace=namespace)
        return survivors, images, paragraphs


def touches(info: DedupInfo, *, frequent_images: AbstractSet[bytes], boilerplate: AbstractSet[bytes]) -> bool:
    """Whether a corpus-wide removal touches the document of `info` (one of its image keys is
    frequent, or one of its paragraph keys boilerplate): the others go through untouched."""
    return (not frequent_images.isdisjoint(key_chunks(info.image_keys))
            or not boilerplate.isdisjoint(key_chunks(info.paragraph_keys)))


def survivor_record(info: DedupInfo) -> tuple[str, bytes]:
    """(staging file name, the document key packed behind its length): what `ApplySurvivorsFn`
    gathers per staging file, a dozen bytes a document."""
    packed = _text_bytes(info.key)
    return info.staged, _varint(len(packed)) + packed


def survivor_keys(records: bytes) -> set[str]:
    """The document keys in concatenated `survivor_record` bytes."""
    keys, at = set(), 0
    while at < len(records):
        n, at = _read_varint(records, at)
        keys.add(_bytes_text(records[at:at + n]))
        at += n
    return keys


def apply_removals(item: PageDocument, *, frequent_images: Collection[bytes], boilerplate: Collection[bytes],
                   filters: FilterConfig, namespace: str = NAMESPACE) -> PageDocument | None:
    """`item` with the corpus-wide removals that touch it (its images whose `image_url_key` is in
    `frequent_images`, its paragraphs whose `boilerplate_key` is in `boilerplate`) applied by
    `apply_filters(..., frequent_image_urls=, boilerplate_paragraphs=)` (counted as
    `filter.image_frequent_url`, `filter.paragraph_boilerplate` and any document-level reason
    that then applies), or None if the document goes."""
    doc = item.doc
    images: set[str] = set()
    if frequent_images:
        images = {url for url in map(normalized_image_url, (n.url for n in doc.images))
                  if short_key(url) in frequent_images}
    paragraphs: set[str] = set()
    if boilerplate:
        domain = dedup.domain_of(doc.url)
        paragraphs = {key for key in (dedup.paragraph_key(node.text) for node in doc.texts)
                      if key and boilerplate_key(domain, key) in boilerplate}
    if not removals_hit(doc, images=images, paragraphs=paragraphs):
        # apply_filters would keep every node and reuse the stored scores: the same document
        return item
    reasons: Counter = Counter()
    # item.doc is FilterDocuments' output, unchanged since: its stored scores are those of its
    # text, so the text is scored again only if a paragraph goes.
    kept, _ = apply_filters(doc, filters, reasons, frequent_image_urls=images, boilerplate_paragraphs=paragraphs,
                            known_stats=judged_stats(doc))
    count_all(namespace, "filter", reasons)
    return None if kept is None else dataclasses.replace(item, doc=kept)


class _KeySet:
    """A side input list as a set, built once per list object (a bundle's side input)."""

    def __init__(self) -> None:
        self._source: Any = None
        self._set: frozenset[bytes] = frozenset()

    def __call__(self, values: list[bytes]) -> frozenset[bytes]:
        if values is not self._source:
            self._source, self._set = values, frozenset(values)
        return self._set


class DeduplicateDocuments(beam.PTransform):
    """PageDocuments -> the documents that survive dedup, with their corpus-wide removals applied
    (`DedupDecisions` + `apply_removals` on documents carried in the pipeline; the job itself
    stages its documents instead, see `StageDocumentsFn`)."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.config, self.namespace = config, namespace

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        cfg, namespace = self.config, self.namespace
        survivors, images, paragraphs = (
            docs
            | "DedupInfo" >> beam.Map(dedup_info, bands=cfg.minhash_bands, rows=cfg.minhash_rows)
            | "Decisions" >> DedupDecisions(config=cfg, namespace=namespace))
        image_set, paragraph_set = _KeySet(), _KeySet()

        def apply(element: tuple[str, dict[str, list[Any]]], frequent: list[bytes],
                  boilerplate: list[bytes]) -> Iterator[PageDocument]:
            _, grouped = element
            if not grouped["keep"]:
                return
            images, paragraphs = image_set(frequent), paragraph_set(boilerplate)
            touched = touches(grouped["keep"][0], frequent_images=images, boilerplate=paragraphs)
            for item in grouped["doc"]:
                if not touched:
                    yield item
                    continue
                kept = apply_removals(item, frequent_images=images, boilerplate=paragraphs,
                                      filters=cfg.filters, namespace=namespace)
                if kept is not None:
                    yield kept

        keep = survivors | "KeyBySurvivor" >> beam.Map(lambda info: (info.key, info))
        return ({"doc": docs | "KeyByDoc" >> beam.Map(lambda item: (item.key, item)), "keep": keep}
                | "JoinSurvivors" >> beam.CoGroupByKey()
                | "ApplyRemovals" >> beam.FlatMap(apply, beam.pvalue.AsList(images), beam.pvalue.AsList(paragraphs)))


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


# --- staging -------------------------------------------------------------------------------------

STAGING_DIR = "_staging"
"""Folder (beside the shards) holding the staged documents of each WARC file."""

STAGING_VERSION = 5
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
                "bands": config.minhash_bands, "rows": config.minhash_rows}
    return make_key(json.dumps(settings, sort_keys=True))


def _pickles(handle: Any) -> Iterator[Any]:
    """The objects of a stream of pickles (one `pickle.dump` after another)."""
    while True:
        try:
            yield pickle.load(handle)
        except EOFError:
            return


class StageDocumentsFn(beam.DoFn):
    """WARC file URL -> its pages read, extracted and filtered, the surviving documents written
    to `<output>/_staging/m3w/<name>.docs.pkl`; emits the documents' `DedupInfo`s (and dead
    letters), never the documents themselves, and as `staged_record`s: without their LSH band
    keys and MinHash signatures (`NearDedup` reads back the bands of the exact-dedup survivors and
    the signatures of the candidates from the `.infos.pkl` file) and image and paragraph keys
    (read back for the survivors, `DedupDecisions`).

    Each staging file is written under a temporary name and renamed, the `.infos.pkl` file (the
    infos, then the file's counters and dead letters) last: a file whose infos exist is complete,
    and a rerun reuses it, replaying its counters and dead letters, instead of extracting again.
    Skipped WARC records count as `warc.<reason>`, extraction rejections as `extract.<reason>`
    (dead letters), filter drops as `filter.<reason>`.
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
        for letter in footer["dead_letters"]:
            yield TaggedOutput(DEAD_LETTER, DeadLetter(**letter))

    def _replay(self, fs: Any, path: str) -> Iterator[Any]:
        """Yield the staged infos of a complete file; return its footer (None if it has none)."""
        infos = []
        try:
            with fs.open(path, "rb") as handle:
                for obj in _pickles(handle):
                    if isinstance(obj, DedupInfo):
                        infos.append(staged_record(obj))
                    elif isinstance(obj, dict) and obj.get("version") == STAGING_VERSION:
                        yield from infos
                        return obj
        except Exception as err:  # noqa: BLE001 - any damage means "stage again", never a wrong reuse
            LOG.warning("%s: cannot read staging file %s (%s: %s)", self.namespace, path, type(err).__name__, err)
        return None

    def _stage(self, url: str, docs_url: str, infos_url: str) -> Iterator[Any]:
        from flamboyance.crawl import read_warc

        counters: Counter = Counter()
        letters: list[dict[str, str]] = []
        skipped: Counter = Counter()
        fs, docs_path = fsspec.core.url_to_fs(docs_url)
        infos_path = fsspec.core.url_to_fs(infos_url)[1]
        fs.makedirs(posixpath.dirname(docs_path), exist_ok=True)
        suffix = f".{uuid.uuid4().hex}.tmp"  # a retried bundle never writes into another attempt's file
        docs_tmp, infos_tmp = docs_path + suffix, infos_path + suffix
        cfg = self.config
        try:
            with fs.open(docs_tmp, "wb") as docs_out, fs.open(infos_tmp, "wb") as infos_out:
                for page in read_warc(url, skipped=skipped, max_body_bytes=self.max_body_bytes):
                    counters["warc.pages"] += 1
                    self.progress.tick()
                    item, letter = judge_page(page, extract_config=self.extract_config, filters=cfg.filters,
                                              counters=counters)
                    if letter is not None:
                        letters.append(dataclasses.asdict(letter))
                    if item is None:
                        continue
                    info = dedup_info(item, bands=cfg.minhash_bands, rows=cfg.minhash_rows,
                                      staged=posixpath.basename(docs_path))
                    pickle.dump(item, docs_out, protocol=pickle.HIGHEST_PROTOCOL)
                    pickle.dump(info, infos_out, protocol=pickle.HIGHEST_PROTOCOL)
                    yield staged_record(info)
                counters["warc.files"] += 1
                counters.update({f"warc.{reason}": n for reason, n in skipped.items()})
                footer = {"version": STAGING_VERSION, "warc": url, "counters": dict(counters),
                          "dead_letters": letters}
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


class ApplySurvivorsFn(beam.DoFn):
    """(staging file name, its survivors' `survivor_record`s) + frequent image keys + boilerplate
    keys (side inputs) -> the file's surviving documents, streamed from it, with their
    corpus-wide removals applied to those they touch (judged by the keys in the file's infos)."""

    def __init__(self, *, output: str, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        self.output, self.config, self.namespace = output, config, namespace

    def setup(self) -> None:
        self.image_set, self.paragraph_set = _KeySet(), _KeySet()
        self.root = join_url(self.output, STAGING_DIR, self.namespace)

    def process(self, element: tuple[str, bytes], frequent: list[bytes],
                boilerplate: list[bytes]) -> Iterator[PageDocument]:
        name, records = element
        url = join_url(self.root, name)
        wanted = survivor_keys(records)
        images, paragraphs = self.image_set(frequent), self.paragraph_set(boilerplate)
        touched: set[str] = set()
        if images or paragraphs:
            touched = {info.key for info in staged_infos(self.root, name, wanted)
                       if touches(info, frequent_images=images, boilerplate=paragraphs)}
        found = 0
        with fsspec.open(url, "rb") as handle:
            for item in _pickles(handle):
                if item.key not in wanted:
                    continue
                found += 1
                if item.key not in touched:
                    yield item
                    continue
                kept = apply_removals(item, frequent_images=images, boilerplate=paragraphs,
                                      filters=self.config.filters, namespace=self.namespace)
                if kept is not None:
                    yield kept
        if found != len(wanted):
            raise RuntimeError(f"staging file {url} lacks {len(wanted) - found} of the documents dedup kept; "
                               f"it was changed or removed during the run")


class M3WDocuments(beam.PTransform):
    """WARC URL globs -> deduplicated, frequency-filtered `PageDocument`s (no downloads), staged
    under `output` (see `StageDocumentsFn`).

    Returns (documents, dead_letters)."""

    def __init__(self, *, output: str, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.output, self.config, self.namespace = output, config, namespace

    def expand(self, patterns: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cfg, namespace = self.config, self.namespace
        staged = (patterns
                  | "ExpandGlobs" >> beam.FlatMap(expand_glob)
                  | "SpreadFiles" >> beam.Reshuffle()
                  | "StageDocuments" >> beam.ParDo(StageDocumentsFn(output=self.output, config=cfg,
                                                                    namespace=namespace))
                  .with_outputs(DEAD_LETTER, main="infos"))
        survivors, images, paragraphs = staged.infos | "Decisions" >> DedupDecisions(
            config=cfg, namespace=namespace, staging_root=join_url(self.output, STAGING_DIR, namespace))
        docs = (survivors
                | "ApplySurvivors" >> beam.ParDo(ApplySurvivorsFn(output=self.output, config=cfg, namespace=namespace),
                                                 beam.pvalue.AsList(images), beam.pvalue.AsList(paragraphs))
                | "BoundsBeforeDownload" >> beam.ParDo(_BoundsFn(config=cfg, namespace=namespace)))
        return docs, staged[DEAD_LETTER]


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
                          | "Documents" >> M3WDocuments(output=output, config=config, namespace=namespace))
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
