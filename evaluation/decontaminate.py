"""`flamboyance decontaminate`: training shards without the evaluation sets in them.

A training sample is removed when it shows an eval image (same normalised URL, or same sha256
of the encoded bytes: `shards/identity.py`) or when its text shares a word n-gram with an eval
text (captions of captioning sets, questions of VQA sets; lower-cased, NFKC, words only). An eval
text shorter than n words counts as one gram, so it matches a training text equal to it after
normalisation. Class names of classification sets are not used as text: they are a few common
words, and would remove every training caption that names the class.

The eval sets are loaded into an index (image keys + 64-bit n-gram hashes): memory follows the
eval sets' size. The training shards are streamed one at a time and rewritten through
`shards.write_shard` (same shard indices, each file renamed into place when complete), then the
manifest; the counts go to `<output>/decontamination.json`. Each finished shard leaves its counts
beside it, so a rerun (after a kill) keeps the shards already done with the same eval sets.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
from flamboyance.evaluation.datasets import EvalDataset
from flamboyance.shards.identity import image_bytes_key, image_url_key

__all__ = ["DEFAULT_NGRAM", "STATS_NAME", "EvalIndex", "decontaminate", "text_ngrams"]

DEFAULT_NGRAM = 8
"""Word n-gram length (GPT-3 used 13 on long documents; captions are short)."""

STATS_NAME = "decontamination.json"

MARKER_SUFFIX = "decontamination.json"
"""`{shard:05d}_decontamination.json`: a finished shard's counts and the index it was made with."""

_WORD = re.compile(r"\w+")


def text_ngrams(text: str, n: int) -> set[int]:
    """64-bit hashes of the normalised word n-grams of `text` (the whole text as one gram when it
    has fewer than n words; empty when it has none)."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    if not words:
        return set()
    grams = [words] if len(words) < n else (words[i : i + n] for i in range(len(words) - n + 1))
    return {int.from_bytes(hashlib.blake2b(" ".join(g).encode(), digest_size=8).digest(), "big") for g in grams}


def _eval_texts(task: str, example: Any) -> list[str]:
    if task == "captioning":
        return [example.target, *example.references]
    if task == "vqa":
        return [example.question] if example.question else []
    return []


@dataclass(kw_only=True)
class EvalIndex:
    """What identifies the eval sets: image keys and text n-gram hashes."""

    ngram: int = DEFAULT_NGRAM
    image_keys: set[str] = field(default_factory=set)
    ngrams: set[int] = field(default_factory=set)
    examples: int = 0

    @classmethod
    def build(cls, datasets: Iterable[EvalDataset], *, ngram: int = DEFAULT_NGRAM) -> EvalIndex:
        """The index of every example of `datasets` (image files are read once, to hash them)."""
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        index = cls(ngram=ngram)
        for dataset in datasets:
            for example in dataset.examples:
                index.examples += 1
                index.image_keys |= example.image_identity(pixels=False)
                for text in _eval_texts(dataset.task, example):
                    index.ngrams |= text_ngrams(text, ngram)
        return index

    def fingerprint(self) -> str:
        """A digest of the whole index (a rerun reuses a finished shard only under the same index)."""
        digest = hashlib.sha256(f"{self.ngram}\0".encode())
        for key in sorted(self.image_keys):
            digest.update(key.encode() + b"\0")
        for gram in sorted(self.ngrams):
            digest.update(gram.to_bytes(8, "big"))
        return digest.hexdigest()

    def match(self, *, urls: Iterable[str], images: Iterable[bytes], texts: Iterable[str]) -> str | None:
        """"image" or "ngram" when a training sample with these image URLs, image bytes and texts
        overlaps the eval sets (the image checked first), else None."""
        if any(image_url_key(u) in self.image_keys for u in urls if u):
            return "image"
        if any(image_bytes_key(b) in self.image_keys for b in images):
            return "image"
        if any(text_ngrams(t, self.ngram) & self.ngrams for t in texts if t):
            return "ngram"
        return None


def _sample_parts(kind: str, sample: Any) -> dict[str, list]:
    """The image URLs, image bytes and texts of one training sample."""
    if kind == "image_text":
        return {"urls": [sample.metadata.get("url")], "images": [sample.image], "texts": [sample.caption]}
    if kind == "m3w":
        doc = sample.document
        return {"urls": [u for u in doc.get("images", []) if isinstance(u, str)], "images": list(sample.images),
                "texts": [t for t in doc.get("texts", []) if isinstance(t, str)]}
    if kind == "video_text":  # frames are not the eval's images: only the caption and the URL
        return {"urls": [sample.metadata.get("url")], "images": [], "texts": [sample.caption]}
    raise ValueError(f"unknown shard kind {kind!r}")


def _shard_index(url: str, position: int) -> int:
    stem = posixpath.basename(url).split(".", 1)[0]
    return int(stem) if stem.isdigit() else position


def decontaminate(
    train: str | list[str],
    output: str,
    index: EvalIndex,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rewrite the shards of `train` (a dataset folder / URL, a brace pattern or a list of tars)
    into `output` without the samples that match `index`; returns the stats (also written to
    `<output>/decontamination.json`): input / kept samples, removed by image and by n-gram, per
    shard, plus the samples the reader skipped as invalid."""
    from flamboyance.shards import completed_shards, write_manifest, write_shard
    from flamboyance.shards.reader import _to_sample
    from flamboyance.shards.source import iter_shard, locate
    from flamboyance.shards.writer import read_shard_info

    log = log or (lambda message: None)
    location = locate(train)
    fingerprint = index.fingerprint()
    fs, root = fsspec.core.url_to_fs(output)
    done = completed_shards(output)
    kind = location.kind
    totals: Counter = Counter()
    skipped: Counter = Counter()
    shard_errors: Counter = Counter()
    per_shard, infos = [], []
    seen_indices: set[int] = set()
    for position, ref in enumerate(location.shards):
        shard_index = _shard_index(ref.url, position)
        if shard_index in seen_indices:
            raise ValueError(f"{ref.url}: shard index {shard_index} given twice in {train}")
        seen_indices.add(shard_index)
        counts: Counter = Counter()
        marker = posixpath.join(root, f"{shard_index:05d}_{MARKER_SUFFIX}")
        previous = _read_marker(fs, marker) if shard_index in done else None
        info = read_shard_info(output, shard_index) if previous is not None else None
        if previous is not None and info is not None and previous.get("index") == fingerprint:
            # finished by an earlier run with the same eval sets: keep it and its counts
            infos.append(info)
            counts.update(previous["counts"])
            totals.update(counts)
            per_shard.append(_shard_row(ref.url, shard_index, counts))
            log(f"{ref.url}: already decontaminated in {output}")
            continue

        def kept(ref=ref, counts=counts) -> Iterator[Any]:
            for raw in iter_shard(ref, kind=kind, skipped=skipped, shard_errors=shard_errors):
                sample = _to_sample(kind, raw)
                counts["input"] += 1
                reason = index.match(**_sample_parts(kind, sample))
                if reason is not None:
                    counts[f"removed_by_{reason}"] += 1
                    continue
                counts["kept"] += 1
                yield sample

        infos.append(write_shard(output, kind=kind, shard_index=shard_index, samples=kept()))
        _write_json_atomic(fs, marker, {"index": fingerprint, "counts": dict(counts)})  # after the shard
        totals.update(counts)
        per_shard.append(_shard_row(ref.url, shard_index, counts))
        log(f"{ref.url}: kept {counts['kept']} of {counts['input']}")
    write_manifest(output, kind=kind, shards=infos, source=f"decontaminated:{location.kind}")
    stats = {
        "kind": kind, "ngram": index.ngram, "eval_examples": index.examples,
        "eval_image_keys": len(index.image_keys), "eval_ngrams": len(index.ngrams),
        "input": totals["input"], "kept": totals["kept"], "removed_by_image": totals["removed_by_image"],
        "removed_by_ngram": totals["removed_by_ngram"], "skipped_invalid": dict(sorted(skipped.items())),
        "shard_errors": dict(sorted(shard_errors.items())), "shards": per_shard,
    }
    _write_json_atomic(fs, posixpath.join(root, STATS_NAME), stats)
    return stats


def _shard_row(url: str, shard_index: int, counts: Counter) -> dict[str, Any]:
    return {"shard": url, "shard_index": shard_index,
            **{k: counts[k] for k in ("input", "kept", "removed_by_image", "removed_by_ngram")}}


def _read_marker(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        with fs.open(path, "rb") as handle:
            marker = json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("counts"), dict) else None


def _write_json_atomic(fs: Any, path: str, obj: Any) -> None:
    """Write JSON to a temporary name, then rename: never a half-written file under `path`."""
    with fs.open(path + ".tmp", "wb") as handle:
        handle.write(json.dumps(obj, indent=1, sort_keys=True).encode())
    fs.mv(path + ".tmp", path)
