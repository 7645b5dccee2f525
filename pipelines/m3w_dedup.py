"""The M3W job's dedup stages, on small `DedupInfo` records (the documents wait in their staging
files): exact, near, same URL and same image set (`Deduplicate`), the corpus-wide frequent
images and boilerplate paragraphs (`CorpusFrequency`), and one `Verdict` per document (`Verdicts`).

Every stage is a keyed shuffle whose DoFns stream their groups (two passes where the winner must
be known first), so no group, side input or worker holds a corpus-sized share: dedup decisions,
frequent images and boilerplate paragraphs reach the documents by keyed joins.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import TaggedOutput
from flamboyance.preprocess import dedup
from flamboyance.preprocess.filters import FilterConfig

from .common import WORK_COMPARISONS, count, held
from .config import M3WConfig

NAMESPACE = "m3w"
DROPPED = "dropped"
"""Tag of the dedup steps' `Drop`s."""

def fetch_stamp(fetch_time: str) -> float:
    """A capture's fetch time as POSIX seconds (0 if it cannot be read)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(fetch_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# --- dedup records -------------------------------------------------------------------------------
#
# Dedup decides on small `DedupInfo` records computed next to extraction; the documents wait in
# their staging files. Keys that are only compared (URLs, paragraph keys, LSH bands) travel as
# 64-bit hashes (`short_key`, 8 bytes each): a false match among a billion keys has probability
# about 2**-34.

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
    """The signature's values truncated to 16 bits (uint16 bytes): enough to estimate Jaccard
    similarity (a false slot match has probability 2**-16) at an eighth of the bytes."""
    image_keys: bytes = b""
    """`image_url_key`s of the document's images (distinct, sorted, 8 bytes each)."""
    paragraph_keys: bytes = b""
    """`boilerplate_key`s of its text nodes (distinct, sorted, 8 bytes each)."""
    staged: str = ""
    """Name of the staging file holding the document ("" when documents travel in the pipeline)."""

    @property
    def rank(self) -> tuple[float, str]:
        """`recency` of the capture: larger is newer."""
        return self.stamp, self.key

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickled positionally (shuffles, staging files): no field names in every record
        return _info, tuple(getattr(self, f.name) for f in dataclasses.fields(self))


def _info(*values: Any) -> DedupInfo:
    return DedupInfo(**dict(zip((f.name for f in dataclasses.fields(DedupInfo)), values, strict=True)))


@dataclass(frozen=True, kw_only=True)
class Drop:
    """A document dedup removed: which kind of duplicate, and the key of the document kept."""

    key: str
    staged: str
    kind: str
    kept: str


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What happens to one deduplicated document: dropped (`drop`), or kept with the corpus-wide
    removals that touch it (its frequent image keys and boilerplate paragraph keys)."""

    key: str
    drop: Drop | None = None
    images: frozenset[bytes] = frozenset()
    paragraphs: frozenset[bytes] = frozenset()


def dedup_info(item: Any, *, bands: int, rows: int, staged: str = "") -> DedupInfo:
    """The `DedupInfo` of a `PageDocument` (all keys from `flamboyance.preprocess.dedup`)."""
    doc = item.doc
    text = doc.text()
    domain = dedup.domain_of(doc.url)
    paragraphs = {dedup.paragraph_key(node.text) for node in doc.texts} - {""}
    band_keys = signature = b""
    if text.strip():
        full = dedup.minhash_signature(text, num_perm=bands * rows)
        # "NN:<16 hex digits>" -> the 8 bytes; the band index is the position
        band_keys = b"".join(bytes.fromhex(key.split(":", 1)[1]) for key in
                             dedup.lsh_band_keys(full, bands=bands, rows=rows))
        signature = full.astype(np.uint16).tobytes()
    return DedupInfo(key=item.key, stamp=fetch_stamp(item.fetch_time), content_hash=bytes.fromhex(dedup.content_hash(doc)),
                     url_key=short_key(normalized_image_url(doc.url)),
                     image_set_key=bytes.fromhex(dedup.image_set_key(doc)), band_keys=band_keys, signature=signature,
                     image_keys=b"".join(sorted({image_url_key(image.url) for image in doc.images})),
                     paragraph_keys=b"".join(sorted({boilerplate_key(domain, key) for key in paragraphs})),
                     staged=staged)


def short_key(text: str) -> bytes:
    """A 64-bit hash of `text` (8 bytes): what dedup compares instead of a long string."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def key_chunks(packed: bytes) -> list[bytes]:
    """The 8-byte keys packed in a `DedupInfo` field."""
    return [packed[i:i + 8] for i in range(0, len(packed), 8)]


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


# --- dedup ---------------------------------------------------------------------------------------

def _dropped(namespace: str, info: DedupInfo, kind: str, kept: str) -> TaggedOutput:
    count(namespace, f"dedup.{kind}")
    count(namespace, f"funnel.deduplicated.{kind}")
    return TaggedOutput(DROPPED, Drop(key=info.key, staged=info.staged, kind=kind, kept=kept))


class _KeepNewestFn(beam.DoFn):
    """(dedup key, infos) -> the newest info; the others as `Drop`s naming it. Two streaming
    passes over the group: nothing but the newest is held, whatever the group's size."""

    def __init__(self, *, kind: str, namespace: str) -> None:
        self.kind, self.namespace = kind, namespace

    def process(self, element: tuple[bytes, Iterable[DedupInfo]]) -> Iterator[Any]:
        best = None
        for info in element[1]:
            if best is None or info.rank > best.rank:
                best = info
        held(self.namespace, 1)
        for info in element[1]:
            if info.key != best.key:
                yield _dropped(self.namespace, info, self.kind, best.key)
        yield best


class KeepNewest(beam.PTransform):
    """Among `DedupInfo`s sharing `key_fn(info)` keep the newest; returns (survivors, `Drop`s).
    Infos whose key is empty (e.g. no images for the image-set key) are never grouped."""

    def __init__(self, *, key_fn: Callable[[DedupInfo], bytes], kind: str, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.key_fn, self.kind, self.namespace = key_fn, kind, namespace

    def expand(self, infos: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        key_fn = self.key_fn
        out = (infos
               | "KeyBy" >> beam.Map(lambda info: (key_fn(info) or b"unique:" + info.key.encode(), info))
               | "Group" >> beam.GroupByKey()
               | "Newest" >> beam.ParDo(_KeepNewestFn(kind=self.kind, namespace=self.namespace))
               .with_outputs(DROPPED, main="kept"))
        return out.kept, out[DROPPED]


Node = tuple[str, float]
"""A near-dedup candidate: (document key, fetch stamp). Ordered by key (keys are unique)."""


def band_members(info: DedupInfo) -> Iterator[tuple[bytes, Node]]:
    """(band index + band key, node) for each LSH band of the document."""
    node = (info.key, info.stamp)
    for band, key in enumerate(key_chunks(info.band_keys)):
        yield bytes([band]) + key, node


class _LinkToRepresentativeFn(beam.DoFn):
    """(band bucket, nodes) -> (member, representative) for every member of a bucket of two or
    more, its representative being its smallest key, in two streaming passes (datatrove's MinHash
    buckets, linked as stars): a bucket of n members gives n - 1 candidate links."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def process(self, element: tuple[bytes, Iterable[Node]]) -> Iterator[tuple[Node, Node]]:
        representative, members = None, 0
        for node in element[1]:
            members += 1
            if representative is None or node < representative:
                representative = node
        held(self.namespace, 1)
        if members > 1:
            for node in element[1]:
                if node != representative:
                    yield node, representative


LATER = "later"
"""Tag of `_VerifyFn`'s entries for the second verification round (anchors and later checks)."""


class _VerifyFn(beam.DoFn):
    """(representative key, tagged values) -> the verified links (member, representative): the
    member is a near-duplicate (`threshold`) of the representative. Two streaming passes over the
    group: its own signature and anchor first, then one comparison per link to check.

    Tagged values: ("signature", the representative's signature); ("first", (link, member
    signature, the member's other representatives)): the member's link to its smallest
    representative, verified in the first round; ("anchor", node): the representative, as a
    member, was verified against its own smallest representative `node`; ("check", (link, member
    signature, via)): a later link of a member, compared in the second round unless the member was
    verified against `via` and the representative is anchored at `via` too (both already joined
    through verified links: the comparison could not change a component).

    A first link yields, under `LATER`, the member's anchor (when verified) and a check of each of
    its other links."""

    def __init__(self, *, threshold: float, namespace: str) -> None:
        self.threshold, self.namespace = threshold, namespace

    def process(self, element: tuple[str, Iterable[tuple[str, Any]]]) -> Iterator[Any]:
        _, tagged = element
        signature = anchor = None
        for tag, value in tagged:
            if tag == "signature":
                signature = value
            elif tag == "anchor":
                anchor = value
        held(self.namespace, 1)
        if signature is None:
            return
        rep = np.frombuffer(signature, dtype=np.uint16)
        comparisons = 0
        for tag, value in tagged:
            if tag == "first":
                link, member, others = value
                comparisons += 1
                verified = dedup.jaccard_estimate(np.frombuffer(member, dtype=np.uint16), rep) >= self.threshold
                if verified:
                    yield link
                    yield TaggedOutput(LATER, (link[0][0], ("anchor", link[1])))
                for other in others:
                    yield TaggedOutput(LATER, (other[0], ("check", ((link[0], other), member,
                                                                    link[1] if verified else None))))
            elif tag == "check":
                link, member, via = value
                if via is not None and via == anchor:
                    continue
                comparisons += 1
                if dedup.jaccard_estimate(np.frombuffer(member, dtype=np.uint16), rep) >= self.threshold:
                    yield link
        count(self.namespace, WORK_COMPARISONS, comparisons)


class _SpreadLabelFn(beam.DoFn):
    """(node, [("label", label)] + [("next", neighbour), ...]) -> its label to itself and to each
    neighbour, in two streaming passes (a representative may have a bucket's worth of neighbours)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def process(self, element: tuple[Node, Iterable[tuple[str, Node]]]) -> Iterator[tuple[Node, tuple[Node, bool]]]:
        node, tagged = element
        label = next(value for tag, value in tagged if tag == "label")
        held(self.namespace, 1)
        yield node, (label, True)
        for tag, neighbour in tagged:
            if tag == "next":
                yield neighbour, (label, False)


class _MinLabel(beam.CombineFn):
    """(smallest label offered, the node's own label): whether the label changed this round."""

    def create_accumulator(self) -> tuple[Node | None, Node | None]:
        return None, None

    def add_input(self, acc: tuple[Any, Any], offer: tuple[Node, bool]) -> tuple[Any, Any]:
        label, own = offer
        low, mine = acc
        return (label if low is None or label < low else low), (label if own else mine)

    def merge_accumulators(self, accs: Iterable[tuple[Any, Any]]) -> tuple[Any, Any]:
        low = mine = None
        for a_low, a_mine in accs:
            if a_low is not None and (low is None or a_low < low):
                low = a_low
            mine = a_mine if a_mine is not None else mine
        return low, mine

    def extract_output(self, acc: tuple[Any, Any]) -> tuple[Node, bool]:
        low, mine = acc
        return low, low != mine


class ConnectedComponents(beam.PTransform):
    """Edges (node, node) -> (node, component label: the smallest node reachable), by label
    propagation in at most `rounds` rounds (each: every node offers its label to its neighbours
    and takes the smallest offered). Nodes still changing in the last round are counted
    (`dedup.near_unconverged`): they end in a component of their own label."""

    def __init__(self, *, rounds: int, namespace: str) -> None:
        super().__init__()
        self.rounds, self.namespace = rounds, namespace

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        namespace = self.namespace
        neighbours = edges | "BothWays" >> beam.FlatMap(lambda e: [(e[0], ("next", e[1])), (e[1], ("next", e[0]))])
        labels = (edges | "Nodes" >> beam.FlatMap(lambda e: e) | "DistinctNodes" >> beam.Distinct()
                  | "OwnLabel" >> beam.Map(lambda node: (node, node)))
        for round_ in range(self.rounds):
            offers = ((labels | f"Label{round_}" >> beam.Map(lambda e: (e[0], ("label", e[1]))), neighbours)
                      | f"Tagged{round_}" >> beam.Flatten()
                      | f"ByNode{round_}" >> beam.GroupByKey()
                      | f"Spread{round_}" >> beam.ParDo(_SpreadLabelFn(namespace)))
            changed = offers | f"Smallest{round_}" >> beam.CombinePerKey(_MinLabel())
            labels = changed | f"Labels{round_}" >> beam.MapTuple(lambda node, result: (node, result[0]))

        def unconverged(element: tuple[Node, tuple[Node, bool]]) -> None:
            if element[1][1]:
                count(namespace, "dedup.near_unconverged")

        _ = changed | "CountUnconverged" >> beam.Map(unconverged)
        return labels


class _NewestInClusterFn(beam.DoFn):
    """(component label, nodes) -> (key, kept key) for every node but the newest."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def process(self, element: tuple[Node, Iterable[Node]]) -> Iterator[tuple[str, str]]:
        newest = max(element[1], key=lambda node: (node[1], node[0]))
        held(self.namespace, 1)
        for node in element[1]:
            if node != newest:
                yield node[0], newest[0]


class NearDedup(beam.PTransform):
    """Near-duplicates by MinHash LSH; returns (survivors, `Drop`s). In each band bucket every
    member is linked to the bucket's representative (its smallest key); a link holds when the
    estimated Jaccard similarity reaches `threshold`; each connected component of the holding
    links keeps its newest capture.

    A member of many buckets has as many representatives: it is compared with its smallest one
    first, and with another one only when that comparison could change a component (`_VerifyFn`):
    on a templated site (every page linked to the first copy, and to a few others through some
    bands) about one comparison a member, the same components as comparing every link."""

    def __init__(self, *, threshold: float, rounds: int, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.threshold, self.rounds, self.namespace = threshold, rounds, namespace

    def expand(self, infos: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        namespace = self.namespace
        candidates = (infos
                      | "BandMembers" >> beam.FlatMap(band_members)
                      | "GroupBands" >> beam.GroupByKey()
                      | "LinkToRepresentative" >> beam.ParDo(_LinkToRepresentativeFn(namespace))
                      | "DistinctLinks" >> beam.Distinct())
        # Signatures cross two shuffles once each, not once per band: joined to each link by its
        # member (a member has one link per band at most), then compared by representative.
        signatures = infos | "Signatures" >> beam.FlatMap(
            lambda info: [(info.key, info.signature)] if info.signature else [])

        def first_link(element: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[str, Any]]:
            grouped = element[1]  # one signature and the member's links: one a band at most
            links = sorted(grouped["link"], key=lambda link: link[1])
            for signature in grouped["signature"]:
                if links:
                    yield links[0][1][0], ("first", (links[0], signature, tuple(link[1] for link in links[1:])))

        tagged_signatures = signatures | "TagRepresentative" >> beam.MapTuple(lambda key, sig: (key, ("signature", sig)))
        # Round 1: each member against its smallest representative only. Round 2: its other links,
        # skipping those whose two ends are already joined through round 1's verified links.
        first = (({"signature": signatures, "link": candidates | "ByMember" >> beam.Map(lambda e: (e[0][0], e))}
                  | "JoinMemberSignatures" >> beam.CoGroupByKey()
                  | "FirstLinks" >> beam.FlatMap(first_link)),
                 tagged_signatures)
        verified = (first
                    | "FirstComparisons" >> beam.Flatten()
                    | "ByRepresentative" >> beam.GroupByKey()
                    | "Verify" >> beam.ParDo(_VerifyFn(threshold=self.threshold, namespace=namespace))
                    .with_outputs(LATER, main="edges"))
        later = ((verified[LATER], tagged_signatures)
                 | "LaterComparisons" >> beam.Flatten()
                 | "ByLaterRepresentative" >> beam.GroupByKey()
                 | "VerifyLater" >> beam.ParDo(_VerifyFn(threshold=self.threshold, namespace=namespace)))
        edges = (verified.edges, later) | "VerifiedLinks" >> beam.Flatten()
        removed = (edges
                   | "Components" >> ConnectedComponents(rounds=self.rounds, namespace=namespace)
                   | "ByComponent" >> beam.MapTuple(lambda node, label: (label, node))
                   | "GroupComponents" >> beam.GroupByKey()
                   | "NewestInCluster" >> beam.ParDo(_NewestInClusterFn(namespace)))

        def keep(element: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
            grouped = element[1]  # one info, and its kept key if it was removed: two elements at most
            for info in grouped["info"]:
                if grouped["kept"]:
                    yield _dropped(namespace, info, "near_duplicate", grouped["kept"][0])
                else:
                    yield info

        # the content hash, bands and signature have served: later shuffles carry the rest only
        slim = infos | "KeyByDoc" >> beam.Map(
            lambda info: (info.key, dataclasses.replace(info, content_hash=b"", band_keys=b"", signature=b"")))
        out = ({"info": slim, "kept": removed}
               | "JoinRemovals" >> beam.CoGroupByKey()
               | "Keep" >> beam.FlatMap(keep).with_outputs(DROPPED, main="kept"))
        return out.kept, out[DROPPED]


class Deduplicate(beam.PTransform):
    """`DedupInfo`s -> (survivors, `Drop`s): exact, near, same URL, same image set, in that order
    (each on the survivors of the one before; the newest capture wins)."""

    def __init__(self, *, config: M3WConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.config, self.namespace = config, namespace

    def expand(self, infos: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cfg, namespace = self.config, self.namespace
        survivors, exact = infos | "ExactDedup" >> KeepNewest(key_fn=lambda i: i.content_hash, kind="exact",
                                                                namespace=namespace)
        survivors, near = survivors | "NearDedup" >> NearDedup(threshold=cfg.near_duplicate_threshold,
                                                               rounds=cfg.near_dedup_rounds, namespace=namespace)
        survivors, same_url = survivors | "SameUrlDedup" >> KeepNewest(key_fn=lambda i: i.url_key, kind="same_url",
                                                                       namespace=namespace)
        survivors, same_images = survivors | "SameImageSetDedup" >> KeepNewest(
            key_fn=lambda i: i.image_set_key, kind="same_image_set", namespace=namespace)
        drops = (exact, near, same_url, same_images) | "AllDrops" >> beam.Flatten()
        return survivors, drops


class _FrequentKeyFn(beam.DoFn):
    """(tagged key, document keys) -> (document key, tagged key) for each document holding a key
    found on at least `image_min` (images, tag b"i") or `paragraph_min` (paragraphs, b"p")
    documents; two streaming passes (only frequent keys are read twice)."""

    def __init__(self, *, image_min: int, paragraph_min: int, namespace: str) -> None:
        self.image_min, self.paragraph_min, self.namespace = image_min, paragraph_min, namespace

    def process(self, element: tuple[bytes, Iterable[str]]) -> Iterator[tuple[str, bytes]]:
        key, docs = element
        image = key[:1] == b"i"
        at_least = self.image_min if image else self.paragraph_min
        documents = 0
        for _ in docs:
            documents += 1
            if documents >= at_least:
                break
        held(self.namespace, 1)
        if documents < at_least:
            return
        count(self.namespace, "frequency.frequent_image_urls" if image else "frequency.boilerplate_paragraphs")
        for doc_key in docs:
            yield doc_key, key


class CorpusFrequency(beam.PTransform):
    """Survivor `DedupInfo`s -> (document key, tagged key) for every image URL found on more than
    `image_max_documents` documents (tag b"i" + `image_url_key`) and every paragraph repeated on
    at least `paragraph_boilerplate_min_count` documents of one domain (b"p" + `boilerplate_key`),
    for each document holding it: a keyed group per key, so the work spreads with the keys.
    Counts `frequency.frequent_image_urls` and `frequency.boilerplate_paragraphs`."""

    def __init__(self, *, filter_config: FilterConfig, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.filter_config, self.namespace = filter_config, namespace

    def expand(self, infos: beam.PCollection) -> beam.PCollection:
        def refs(info: DedupInfo) -> Iterator[tuple[bytes, str]]:
            for key in key_chunks(info.image_keys):
                yield b"i" + key, info.key
            for key in key_chunks(info.paragraph_keys):
                yield b"p" + key, info.key

        return (infos
                | "KeyRefs" >> beam.FlatMap(refs)
                | "GroupKeys" >> beam.GroupByKey()
                | "FrequentKeys" >> beam.ParDo(_FrequentKeyFn(
                    image_min=self.filter_config.image_max_documents + 1,
                    paragraph_min=self.filter_config.paragraph_boilerplate_min_count, namespace=self.namespace)))


class Verdicts(beam.PTransform):
    """Survivor infos + `Drop`s -> a `Verdict` for every document dedup saw: survivors joined with
    their frequent keys (`CorpusFrequency`) by document key."""

    def __init__(self, *, config: M3WConfig, drops: beam.PCollection, namespace: str = NAMESPACE) -> None:
        super().__init__()
        self.config, self.drops, self.namespace = config, drops, namespace

    def expand(self, survivors: beam.PCollection) -> beam.PCollection:
        namespace = self.namespace
        frequent = survivors | "CorpusFrequency" >> CorpusFrequency(filter_config=self.config.filters,
                                                                     namespace=namespace)

        def keep(element: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[str, Verdict]]:
            key, grouped = element  # one document and its frequent keys: bounded by the document's size
            held(namespace, len(grouped["frequent"]) + 1)
            for staged in grouped["staged"]:
                tagged = grouped["frequent"]
                yield staged, Verdict(key=key, images=frozenset(k[1:] for k in tagged if k[:1] == b"i"),
                                           paragraphs=frozenset(k[1:] for k in tagged if k[:1] == b"p"))

        kept = ({"staged": survivors | "KeyByDoc" >> beam.Map(lambda info: (info.key, info.staged)),
                 "frequent": frequent}
                | "JoinFrequentKeys" >> beam.CoGroupByKey()
                | "KeepVerdicts" >> beam.FlatMap(keep))
        dropped = self.drops | "DropVerdicts" >> beam.Map(lambda d: (d.staged, Verdict(key=d.key, drop=d)))
        return (kept, dropped) | "AllVerdicts" >> beam.Flatten()
