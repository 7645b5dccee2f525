"""Building blocks shared by the three jobs: keys, counters, dead letters, inputs, shard writing.

Everything here is runner-agnostic: inputs and outputs are fsspec URLs opened inside DoFns,
DoFns carry only picklable configuration, and no step relies on process-global state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput
from apache_beam.runners.runner import PipelineRunner
from flamboyance.shards import writer as shard_writer

LOG = logging.getLogger("flamboyance.pipelines")

DEAD_LETTER = "dead_letter"
"""Tag of the dead-letter output of every DoFn that can meet a bad record."""

STATS_NAME = "etl_stats.json"
"""Counters of a run, written beside the shards."""

PLAN_NAME = "etl_plan.json"
"""How samples were assigned to shards (checked on rerun)."""

DEAD_LETTER_DIR = "dead_letter"
"""Folder (beside the shards) holding the dead-letter JSONL files."""


# --- keys and hashing -------------------------------------------------------------------------

def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same in every process and on every run (unlike hash())."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def make_key(*parts: str | int | None) -> str:
    """A sample key from identifying parts: 24 hex digits (no dots, valid for webdataset)."""
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:24]


def num_shards_for(count: int, samples_per_shard: int) -> int:
    """How many shards `count` samples fill at `samples_per_shard` each (at least one)."""
    return max(1, math.ceil(count / samples_per_shard))


def shard_of(key: str, num_shards: int) -> int:
    """The shard a key belongs to: a stable hash of the key modulo the shard count."""
    return stable_hash(key) % num_shards


def join_url(root: str, *names: str) -> str:
    """`root/name/...` for any fsspec URL (no os.path: the root may be gs://, s3://, ...)."""
    return posixpath.join(root.rstrip("/"), *names)


# --- counters, progress, dead letters ---------------------------------------------------------

def count(namespace: str, name: str, value: int = 1) -> None:
    """Increment the Beam counter `namespace:name`."""
    if value:
        Metrics.counter(namespace, name).inc(value)


def count_all(namespace: str, prefix: str, counter: Counter) -> None:
    """Mirror a collections.Counter of reasons into Beam counters `prefix.<reason>`."""
    for reason, value in counter.items():
        count(namespace, f"{prefix}.{reason}", value)


WORK_GROUP = "work.largest_group_in_memory"
"""Distribution: elements a DoFn held in memory at once from one group or iterable."""

WORK_SIDE_INPUT = "work.largest_side_input_elements"
"""Distribution: elements of a side input a DoFn read."""

WORK_COMPARISONS = "work.near_dedup_comparisons"
"""Counter: signature comparisons made by near-dedup."""


def held(namespace: str, elements: int) -> None:
    """Record that a DoFn held `elements` elements of one group in memory (`WORK_GROUP`)."""
    Metrics.distribution(namespace, WORK_GROUP).update(elements)


def side_input(namespace: str, elements: int) -> None:
    """Record the size of a side input a DoFn read (`WORK_SIDE_INPUT`)."""
    Metrics.distribution(namespace, WORK_SIDE_INPUT).update(elements)


class Progress:
    """Logs how many elements a stage has handled in this worker, at most every `every_s` seconds."""

    def __init__(self, *, namespace: str, stage: str, every_s: float = 10.0) -> None:
        self.namespace, self.stage, self.every_s = namespace, stage, every_s
        self.seen = 0
        self.last = time.monotonic()

    def tick(self, n: int = 1) -> None:
        self.seen += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            LOG.info("%s/%s: %d elements so far in this worker", self.namespace, self.stage, self.seen)


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A record that could not be processed: the stage, a short reason, what it was, and details."""

    stage: str
    reason: str
    ref: str
    """URL, WARC location or key identifying the bad record."""
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps({"stage": self.stage, "reason": self.reason, "ref": self.ref, "detail": self.detail},
                          sort_keys=True, ensure_ascii=False)


def dead_letter(namespace: str, stage: str, reason: str, ref: str, detail: str = "") -> TaggedOutput:
    """Count `namespace:<stage>.<reason>` and return the tagged dead-letter output for it."""
    count(namespace, f"{stage}.{reason}")
    return TaggedOutput(DEAD_LETTER, DeadLetter(stage=stage, reason=reason, ref=ref, detail=detail[:1000]))


DEAD_LETTERS_PER_FILE = 50_000
"""Dead letters of one stage per JSONL file (about): a stage with more is split into buckets."""


def dead_letter_file(stage: str, bucket: int, buckets: int) -> str:
    """The file name of one bucket of a stage's dead letters (`<stage>.jsonl` when there is one)."""
    return f"{stage}.jsonl" if buckets == 1 else f"{stage}-{bucket:05d}-of-{buckets:05d}.jsonl"


class _WriteDeadLetterFile(beam.DoFn):
    def __init__(self, output: str, namespace: str) -> None:
        self.output, self.namespace = output, namespace

    def process(self, element: tuple[tuple[str, int, int], Iterable[str]]) -> Iterator[str]:
        (stage, bucket, buckets), letters = element
        lines = sorted(letters)  # one bucket: about DEAD_LETTERS_PER_FILE lines, whatever the corpus
        held(self.namespace, len(lines))
        fs, root = fsspec.core.url_to_fs(join_url(self.output, DEAD_LETTER_DIR))
        fs.makedirs(root, exist_ok=True)
        name = dead_letter_file(stage, bucket, buckets)
        path, tmp = posixpath.join(root, name), posixpath.join(root, f".{name}.tmp")
        with fs.open(tmp, "wb") as handle:
            handle.write(("\n".join(lines) + "\n").encode("utf-8"))
        fs.mv(tmp, path)
        yield path


class WriteDeadLetters(beam.PTransform):
    """Write dead letters as `<output>/dead_letter/<stage>.jsonl`, or, for a stage with more than
    `DEAD_LETTERS_PER_FILE`, as `<stage>-<bucket>-of-<buckets>.jsonl` files (a stable hash of the
    line picks the bucket): no file, group or worker holds a corpus-sized share. Lines are sorted
    in each file, so reruns are identical."""

    def __init__(self, output: str, *, namespace: str = "etl", per_file: int = DEAD_LETTERS_PER_FILE) -> None:
        super().__init__()
        self.output, self.namespace, self.per_file = output, namespace, per_file

    def expand(self, letters: beam.PCollection) -> beam.PCollection:
        per_file, namespace = self.per_file, self.namespace
        lines = letters | "ToJson" >> beam.Map(lambda d: (d.stage, d.to_json()))
        per_stage = lines | "CountPerStage" >> beam.combiners.Count.PerKey()

        def bucketed(element: tuple[str, str], sizes: dict[str, int]) -> tuple[tuple[str, int, int], str]:
            stage, line = element
            side_input(namespace, len(sizes))
            buckets = num_shards_for(sizes[stage], per_file)
            return (stage, stable_hash(line) % buckets, buckets), line

        return (lines
                | "KeyByBucket" >> beam.Map(bucketed, beam.pvalue.AsDict(per_stage))
                | "GroupByBucket" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WriteDeadLetterFile(self.output, namespace)))


# --- inputs ------------------------------------------------------------------------------------

def expand_glob(pattern: str) -> list[str]:
    """The URLs matching an fsspec glob (`data/web/*.warc.gz`, `gs://bucket/cc/*.warc.gz`), sorted.

    Raises FileNotFoundError naming the pattern if nothing matches.
    """
    fs, _, paths = fsspec.core.get_fs_token_paths(pattern, mode="rb", expand=True)
    urls = sorted(fs.unstrip_protocol(p) for p in paths if not fs.isdir(p))
    if not urls:
        raise FileNotFoundError(f"no input file matches {pattern!r}; check --input (an fsspec glob or URL)")
    return urls


class ReadWarcPages(beam.PTransform):
    """WARC globs -> `PageRecord`s (HTML responses), read in parallel one file per worker task.

    The file URLs are redistributed across workers, and each file's pages are handed, in the same
    worker, straight to the steps that follow (Beam fuses them): page bodies are never shuffled.
    That parallelises as far as there are files (Common Crawl: thousands); with
    `spread_pages=True` the pages are redistributed too, for inputs of few large files on many
    workers, at the price of moving every body through a shuffle.

    Skipped WARC records are counted as `<namespace>:warc.<reason>`.
    """

    def __init__(self, *, namespace: str, max_body_bytes: int = 5 * 2**20, spread_pages: bool = False,
                 skip_truncated: bool = False) -> None:
        super().__init__()
        self.namespace, self.max_body_bytes, self.spread_pages = namespace, max_body_bytes, spread_pages
        self.skip_truncated = skip_truncated

    def expand(self, patterns: beam.PCollection) -> beam.PCollection:
        pages = (patterns
                 | "ExpandGlobs" >> beam.FlatMap(expand_glob)
                 | "SpreadFiles" >> beam.Reshuffle()
                 | "ReadWarc" >> beam.ParDo(_ReadWarcFn(namespace=self.namespace, max_body_bytes=self.max_body_bytes,
                                                        skip_truncated=self.skip_truncated)))
        return pages | "SpreadPages" >> beam.Reshuffle() if self.spread_pages else pages


class _ReadWarcFn(beam.DoFn):
    def __init__(self, *, namespace: str, max_body_bytes: int, skip_truncated: bool = False) -> None:
        self.namespace, self.max_body_bytes, self.skip_truncated = namespace, max_body_bytes, skip_truncated

    def setup(self) -> None:
        self.progress = Progress(namespace=self.namespace, stage="read_warc")

    def process(self, url: str) -> Iterator[Any]:
        from flamboyance.crawl import read_warc

        skipped: Counter = Counter()
        pages = 0
        for page in read_warc(url, skipped=skipped, max_body_bytes=self.max_body_bytes,
                              skip_truncated=self.skip_truncated):
            pages += 1
            self.progress.tick()
            yield page
        count(self.namespace, "warc.pages", pages)
        count(self.namespace, "funnel.pages", pages)
        count(self.namespace, "warc.files")
        count_all(self.namespace, "warc", skipped)
        LOG.info("%s: read %d pages from %s (skipped %s)", self.namespace, pages, url, dict(skipped))


def read_table_rows(url: str, *, batch_rows: int = 10000) -> Iterator[dict[str, Any]]:
    """Rows of a parquet, CSV or JSONL table at an fsspec URL, streamed in batches (memory stays flat).

    The format comes from the extension (`.parquet`, `.csv`, `.jsonl`/`.json`, optionally `.gz`).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    name = url.lower().removesuffix(".gz")
    compression = "gzip" if url.lower().endswith(".gz") else None
    if name.endswith(".parquet"):
        with fsspec.open(url, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows):
                yield from batch.to_pylist()
        return
    if name.endswith(".csv") or name.endswith(".tsv"):
        sep = "\t" if name.endswith(".tsv") else ","
        with fsspec.open(url, "rb", compression=compression) as handle:
            for chunk in pd.read_csv(handle, sep=sep, chunksize=batch_rows, dtype=str, keep_default_na=False):
                yield from chunk.to_dict("records")
        return
    if name.endswith(".jsonl") or name.endswith(".json"):
        with fsspec.open(url, "rt", compression=compression, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
        return
    raise ValueError(f"unsupported table format for {url!r}: use .parquet, .csv, .tsv or .jsonl (optionally .gz)")


def is_table(pattern: str) -> bool:
    """Whether an input glob names URL + caption tables rather than WARC files."""
    name = pattern.lower().removesuffix(".gz")
    return name.endswith((".parquet", ".csv", ".tsv", ".jsonl", ".json"))


# --- shards ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ShardItem:
    """What reaches a shard: a sample, or the parquet row of an input that produced none."""

    key: str
    sample: Any = None
    row: dict[str, Any] | None = field(default=None)


LINEAGE_STATUSES = ("failed_to_extract", "filtered", "duplicate", "failed", "failed_to_download",
                    "failed_to_resize", "failed_to_decode")
"""`status` of the parquet row of an input that left a job without a sample."""


def lineage_row(*, key: str, status: str, reason: str, url: str, warc_filename: str | None,
                warc_offset: int | None, detail: str = "", duplicate_of: str | None = None,
                **columns: Any) -> dict[str, Any]:
    """The parquet row of an input that produced no sample: its `status` (`LINEAGE_STATUSES`),
    `reason` (extraction reason, filter name, duplicate kind, download error), where it came from
    (`url`, and the WARC file and offset of its page: None for a table row) and, for a duplicate,
    the key of what was kept instead (`duplicate_of`); `columns` add job-specific ones."""
    return {"key": key, "status": status, "reason": reason, "error_message": detail or reason, "url": url,
            "warc_filename": warc_filename, "warc_offset": warc_offset, "duplicate_of": duplicate_of or None,
            **columns}


def page_key(page: Any) -> str:
    """The key of a WARC `PageRecord` (URL, fetch time, WARC location): its sample or row key."""
    return make_key(page.url, page.fetch_time, page.warc_filename, page.warc_offset)


class AssignShards(beam.PTransform):
    """(key, value) -> (shard_index, value), skipping shards already complete in `output`.

    The shard count comes from the total number of keys (`samples_per_shard` each), and a key's
    shard is a stable hash of the key: the assignment depends only on the set of keys, so a rerun
    (after a kill, or of a finished job) puts every sample in the same shard. Also emits, as the
    `shards` output, every shard index that still has to be written (empty ones included).
    """

    def __init__(self, *, output: str, samples_per_shard: int, namespace: str) -> None:
        super().__init__()
        self.output, self.samples_per_shard, self.namespace = output, samples_per_shard, namespace

    def expand(self, keyed: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        total = keyed | "CountKeys" >> beam.combiners.Count.Globally()
        done = shard_writer.completed_shards(self.output)
        if done:
            LOG.info("%s: %d shards already complete in %s; they are skipped", self.namespace, len(done),
                     self.output)
        per_shard = self.samples_per_shard
        namespace = self.namespace

        def assign(element: tuple[str, Any], n: int) -> Iterator[Any]:
            key, value = element
            side_input(namespace, 1)
            shard = shard_of(key, num_shards_for(n, per_shard))
            if shard in done:
                count(namespace, "shard.skipped_samples")
                count(namespace, "funnel.already_written")
                return
            yield shard, value

        output = self.output

        def pending(n: int) -> Iterator[int]:
            check_plan(output, {"samples": n, "samples_per_shard": per_shard,
                                "num_shards": num_shards_for(n, per_shard)})
            for index in range(num_shards_for(n, per_shard)):
                if index not in done:
                    yield index

        assigned = keyed | "Assign" >> beam.FlatMap(assign, AsSingleton(total))
        todo = total | "PendingShards" >> beam.FlatMap(pending)
        return assigned, todo, total


class AssignRows(beam.PTransform):
    """`ShardItem` rows (inputs that produced no sample) -> (shard_index, row item), in the shards
    `AssignShards` made for the samples (`total`: its sample count): a row goes to the shard its
    key hashes to, and rows of shards already complete are skipped like their samples (counted
    in `funnel.rows` with `count_rows`, as `WriteShards` counts the rows it writes)."""

    def __init__(self, *, output: str, samples_per_shard: int, namespace: str, total: beam.PCollection,
                 count_rows: bool = False) -> None:
        super().__init__()
        self.output, self.samples_per_shard, self.namespace, self.total = output, samples_per_shard, namespace, total
        self.count_rows = count_rows

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        done = shard_writer.completed_shards(self.output)
        per_shard, namespace, count_rows = self.samples_per_shard, self.namespace, self.count_rows

        def assign(item: ShardItem, n: int) -> Iterator[tuple[int, ShardItem]]:
            side_input(namespace, 1)
            shard = shard_of(item.key, num_shards_for(n, per_shard))
            if shard not in done:
                yield shard, item
            elif count_rows:  # written by an earlier run: still this input's one place
                count(namespace, FUNNEL_ROWS)

        return rows | "AssignRows" >> beam.FlatMap(assign, AsSingleton(self.total))


def check_plan(output: str, plan: dict[str, Any]) -> None:
    """Record how samples are split into shards (`<output>/etl_plan.json`), or check that a rerun
    into the same output splits them the same way.

    A rerun skips complete shards, which is only right if every sample lands in the same shard
    as before; a different input or shard size would mix two assignments (missing and duplicated
    samples), so it is refused with a ValueError naming the output.
    """
    fs, root = fsspec.core.url_to_fs(output)
    path = posixpath.join(root, PLAN_NAME)
    if fs.exists(path):
        with fs.open(path, "rb") as handle:
            previous = json.loads(handle.read())
        if previous != plan:
            raise ValueError(f"{output} was written from another input or shard size ({PLAN_NAME}: {previous}, "
                             f"this run: {plan}); write to a new --output, or delete the old one")
        return
    fs.makedirs(root, exist_ok=True)
    tmp = posixpath.join(root, f".{PLAN_NAME}.tmp")
    with fs.open(tmp, "wb") as handle:
        handle.write(json.dumps(plan, sort_keys=True).encode("utf-8"))
    fs.mv(tmp, path)


class _WriteShardFn(beam.DoFn):
    def __init__(self, *, output: str, kind: str, namespace: str, count_rows: bool = False) -> None:
        self.output, self.kind, self.namespace, self.count_rows = output, kind, namespace, count_rows

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        index, grouped = element
        # one shard: about `samples_per_shard` samples and the rows of the inputs hashed to it
        items: list[ShardItem] = sorted((i for i in grouped["items"] if i is not None), key=lambda i: i.key)
        held(self.namespace, len(items))
        samples = [i.sample for i in items if i.sample is not None]
        rows = [i.row for i in items if i.row is not None]  # a sample's row adds columns to its own
        info = shard_writer.write_shard(self.output, kind=self.kind, shard_index=index, samples=samples,
                                        rows=rows)
        count(self.namespace, "shard.written")
        count(self.namespace, "samples.written", len(samples))
        count(self.namespace, "funnel.written", len(samples))
        if self.count_rows:
            count(self.namespace, FUNNEL_ROWS, sum(1 for i in items if i.sample is None))
        LOG.info("%s: wrote shard %05d (%d samples, %d failed rows) to %s", self.namespace, index,
                 len(samples), len(rows), self.output)
        yield info


class WriteShards(beam.PTransform):
    """(shard_index, ShardItem) + pending shard indices -> shards written atomically, then the manifest.

    Every pending index gets a shard, even an empty one, so that a rerun sees the job as complete.
    With `count_rows`, the rows of inputs without a sample are counted (`funnel.rows`).
    The manifest is rebuilt from every complete shard's stats once all shards are written.
    """

    def __init__(self, *, output: str, kind: str, namespace: str, pending: beam.PCollection,
                 count_rows: bool = False) -> None:
        super().__init__()
        self.output, self.kind, self.namespace, self.pending = output, kind, namespace, pending
        self.count_rows = count_rows

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        slots = self.pending | "EmptySlots" >> beam.Map(lambda i: (i, None))
        grouped = ({"items": items, "slots": slots}
                   | "GroupByShard" >> beam.CoGroupByKey())
        infos = grouped | "WriteShard" >> beam.ParDo(_WriteShardFn(output=self.output, kind=self.kind,
                                                                   namespace=self.namespace, count_rows=self.count_rows))
        output, kind = self.output, self.kind
        return (infos
                | "CollectShards" >> beam.combiners.Count.Globally()
                | "WriteManifest" >> beam.Map(lambda _n: shard_writer.write_manifest(output, kind=kind)["samples"]))


# --- running -----------------------------------------------------------------------------------

def counters_of(result: Any, namespace: str | None = None) -> dict[str, int]:
    """The committed (or attempted) Beam counters of a finished run as {"namespace:name": value}."""
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace(namespace) if namespace else None)
    out: dict[str, int] = {}
    for res in query["counters"]:
        name = f"{res.key.metric.namespace}:{res.key.metric.name}"
        out[name] = out.get(name, 0) + int(_metric_value(res) or 0)
    return dict(sorted(out.items()))


def _metric_value(res: Any) -> Any:
    try:
        value = res.committed
    except (NotImplementedError, AttributeError):
        value = None
    return res.attempted if value is None else value


def distribution_max(result: Any, namespace: str, name: str) -> int:
    """The largest value a Beam distribution `namespace:name` recorded in a finished run (0 if none)."""
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    return max((int(value.max) for res in query["distributions"] if (value := _metric_value(res)) is not None
                and value.count), default=0)


FUNNEL_TOTALS = ("pages", "extracted", "pairs", "to_download", "already_written", "downloaded", "written")
"""Counters `funnel.<name>`: how many inputs reached each step."""

FUNNEL_DROPS = ("not_extracted", "filtered", "deduplicated", "failed", "not_downloaded")
"""Counters `funnel.<name>.<reason>`: how many inputs left at each step, by reason."""

FUNNEL_ROWS = "funnel.rows"
"""Counter: parquet rows of inputs that left without a sample (jobs that write one for every drop)."""


def funnel_of(counters: dict[str, int]) -> dict[str, Any]:
    """The funnel of a run from its `funnel.*` counters: totals, drops by reason, and `checks`
    (each equation of the funnel and whether it holds exactly).

    Every page is counted once where it ends: `pages = extracted + not_extracted`; every document
    (m3w) or caption pair (image-text, video-text: `pairs`) once in `filtered`, `deduplicated`,
    `failed` (an exception after extraction) or `to_download`; every one to download once in
    `already_written` (its shard is complete from an earlier run), `not_downloaded` or
    `downloaded`; and `written = downloaded`. A job that stops before downloading (m3w
    `download=False`) has no download checks. A job that counts its lineage rows (`funnel.rows`:
    the image-text and video-text jobs) also checks that every drop has its row."""
    funnel: dict[str, Any] = {name: counters.get(f"funnel.{name}", 0) for name in FUNNEL_TOTALS}
    for bucket in FUNNEL_DROPS:
        prefix = f"funnel.{bucket}."
        funnel[bucket] = {k[len(prefix):]: v for k, v in sorted(counters.items()) if k.startswith(prefix)}
    middle = "pairs" if "funnel.pairs" in counters else "extracted"
    if middle == "pairs":
        funnel.pop("extracted")
    else:
        funnel.pop("pairs")
    total = {bucket: sum(funnel[bucket].values()) for bucket in FUNNEL_DROPS}
    checks = {"pages = extracted + not_extracted":
              funnel["pages"] == counters.get("funnel.extracted", 0) + total["not_extracted"],
              f"{middle} = filtered + deduplicated + failed + to_download":
              funnel[middle] == total["filtered"] + total["deduplicated"] + total["failed"] + funnel["to_download"]}
    if any(f"funnel.{name}" in counters for name in ("already_written", "downloaded", "written")) or \
            total["not_downloaded"] or not funnel["to_download"]:
        checks["to_download = already_written + not_downloaded + downloaded"] = (
            funnel["to_download"] == funnel["already_written"] + total["not_downloaded"] + funnel["downloaded"])
        checks["written = downloaded"] = funnel["written"] == funnel["downloaded"]
    if FUNNEL_ROWS in counters:
        funnel["rows"] = counters[FUNNEL_ROWS]
        checks["rows = " + " + ".join(FUNNEL_DROPS)] = funnel["rows"] == sum(total.values())
    funnel["checks"] = checks
    return funnel


def top_drops(funnel: dict[str, Any], n: int = 5) -> list[tuple[str, int]]:
    """The `n` largest drops of a funnel as ("<step>.<reason>", count), largest first."""
    drops = [(f"{bucket}.{reason}", value) for bucket in FUNNEL_DROPS for reason, value in funnel[bucket].items()]
    return sorted(drops, key=lambda d: (-d[1], d[0]))[:n]


MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": 2**20, "MALLOC_ARENA_MAX": 2}
"""glibc malloc settings for the processes of a local run (`limit_heap_growth`)."""

_MALLOPT_PARAMS = {"MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}
"""glibc's `mallopt` parameter numbers (M_MMAP_THRESHOLD, M_ARENA_MAX) of those settings."""


def limit_heap_growth() -> dict[str, int]:
    """Keep glibc malloc from holding on to the memory of large transient buffers, in this
    process (`mallopt`) and in the processes it starts from now on (the DirectRunner's SDK
    workers, through their environment); returns the settings applied.

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MiB),
    so later large blocks (gRPC messages and the encoded buffers of every shuffled bundle) come
    from the heap, where their memory is not given back, and each thread gets an arena of its
    own. A local run then grows by kilobytes per shuffled record, several times the record;
    with a fixed 1 MiB threshold and two arenas its peak stays close to flat as its input grows
    (measured on the m3w job: 1.03x at 10x input instead of 1.05x, and a few percent faster:
    page-sized blocks still come from the heap, the multi-megabyte ones are given back).

    Settings already in the environment are the user's and are kept; nothing happens where the
    C library is not glibc. Remote workers (Dataflow, Flink, Spark) are not touched.
    """
    import ctypes
    import os
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return {}
    applied = {}
    for name, value in MALLOC_SETTINGS.items():
        if name in os.environ:
            continue
        os.environ[name] = str(value)
        if mallopt(_MALLOPT_PARAMS[name], value) == 1:
            applied[name] = value
    return applied


class LocalRunner(PipelineRunner):
    """The engine of Beam's DirectRunner for batch jobs (the FnApiRunner: `--direct_num_workers`
    worker processes with `--direct_running_mode=multi_processing`), and nothing else.

    Beam's `DirectRunner` first tries the Prism runner, which it downloads (a binary from
    GitHub) on first use, and runs on this engine only where that fails: a local job's engine,
    parallelism and memory would then depend on the network. `flamboyance etl` runs here unless
    `--runner` names a runner; `--runner DirectRunner` still gets Beam's own choice."""

    NAME = f"{__name__}.LocalRunner"
    """The `--runner` value that selects it."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: Any) -> Any:
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        # the workers get the job's options (log levels and the rest) as the DirectRunner gives them
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=info).run_pipeline(pipeline, options)


def is_local_runner(runner: Any) -> bool:
    """Whether the `--runner` value runs the job in local processes (a DirectRunner or `LocalRunner`)."""
    name = runner if isinstance(runner, str) else type(runner).__name__
    return "direct" in name.lower() or name.endswith("LocalRunner")


def run_and_report(pipeline: beam.Pipeline, *, output: str, namespace: str,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `pipeline`, print the counter summary and write it to `<output>/etl_stats.json`.

    A local run first applies `limit_heap_growth`."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = pipeline.options.view_as(StandardOptions).runner or "DirectRunner"
    check_output_reachable(output, pipeline.options)
    if is_local_runner(runner):
        limit_heap_growth()
    LOG.info("%s: starting on %s -> %s (progress is logged per stage and worker)", namespace, runner, output)
    started = time.monotonic()
    result = pipeline.run()
    result.wait_until_finish()
    counters = {k.split(":", 1)[1]: v for k, v in counters_of(result, namespace).items()}
    funnel = funnel_of(counters)
    work = {"near_dedup_comparisons": counters.get(WORK_COMPARISONS, 0),
            "largest_side_input_elements": distribution_max(result, namespace, WORK_SIDE_INPUT),
            "largest_group_in_memory": distribution_max(result, namespace, WORK_GROUP)}
    stats = {"job": namespace, "output": output, "seconds": round(time.monotonic() - started, 3),
             "counters": counters, "funnel": funnel, "work": work, **(extra or {})}
    lines = [f"== {namespace} ETL summary ({stats['seconds']} s) -> {output}"]
    lines += [f"  {name:<48} {value:>10}" for name, value in stats["counters"].items()]
    lines.append("  work: " + ", ".join(f"{k} {v}" for k, v in work.items()))
    if not all(funnel["checks"].values()):
        lines.append(f"  WARNING: the funnel does not add up: {funnel['checks']}")
    wrote_nothing = not counters.get("samples.written") and not counters.get("shard.skipped_samples")
    if wrote_nothing and "written = downloaded" in funnel["checks"]:
        drops = ", ".join(f"{name} {value}" for name, value in top_drops(funnel)) or "no input pages or rows"
        lines.append(f"  0 samples written: top drops: {drops}")
    print("\n".join(lines), flush=True)
    fs, root = fsspec.core.url_to_fs(output)
    fs.makedirs(root, exist_ok=True)
    tmp = posixpath.join(root, f".{STATS_NAME}.tmp")
    with fs.open(tmp, "wb") as handle:
        handle.write(json.dumps(stats, indent=1, sort_keys=True).encode("utf-8"))
    fs.mv(tmp, posixpath.join(root, STATS_NAME))
    return stats


def check_output_reachable(output: str, options: Any) -> None:
    """Refuse, before any work, a local `output` that the job's workers do not share.

    A path without protocol (or `file://`) is on this machine's disk. The workers of a local
    runner (`LocalRunner`, the DirectRunner, Prism) run here; so do those of a portable runner
    (`PortableRunner`, `FlinkRunner`, `SparkRunner`) whose job endpoint or master is local
    (loopback, Flink's `[local]`/`[auto]`, Spark's `local[...]`) and whose SDK workers are
    `PROCESS` or an `EXTERNAL` pool on loopback, or are `LOOPBACK` (this process). Any other
    runner (Dataflow, a cluster, Docker workers) would leave each worker's staging and shard
    files on its own disk: raises ValueError naming the output and the runner.
    """
    import ipaddress
    from urllib.parse import urlsplit

    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        PortableOptions,
        SparkRunnerOptions,
        StandardOptions,
    )

    if fsspec.core.split_protocol(output)[0] not in (None, "file", "local"):
        return
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    if is_local_runner(runner) or "prism" in name.lower():
        return

    def local(address: str | None) -> bool:
        if not address:
            return False
        if address in ("[local]", "[auto]") or address.startswith("local"):
            return True  # Flink's embedded cluster, Spark's local master
        host = urlsplit(address if "//" in address else f"//{address}").hostname or ""
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    portable = options.view_as(PortableOptions)
    kind = name.lower()
    if "flink" in kind:
        master = portable.job_endpoint or options.view_as(FlinkRunnerOptions).flink_master
    elif "spark" in kind:
        master = portable.job_endpoint or options.view_as(SparkRunnerOptions).spark_master_url
    elif "portable" in kind:
        master = portable.job_endpoint
    else:
        master = None  # Dataflow and unknown runners: workers elsewhere
    environment = (portable.environment_type or "DOCKER").upper()
    if master is not None and environment == "LOOPBACK":
        return  # the SDK worker is this process
    if local(master) and (environment == "PROCESS" or (
            environment == "EXTERNAL" and local((portable.environment_config or "").strip()))):
        return
    where = (f"job endpoint/master {master!r}" if master else "its own workers") + f", {environment} SDK workers"
    raise ValueError(
        f"--output {output!r} is a local path, but {name} runs the job on other machines or containers "
        f"({where}): each worker would write its staging and shard files to its own disk. Write to storage "
        f"every worker reaches (s3://bucket/..., gs://bucket/..., hdfs://...), or run locally (no --runner).")
