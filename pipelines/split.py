"""The train / held-out split of the image-text job, by image identity.

Hashing (url, caption) would put one image with two captions in both splits, so the eval set
would hold images the model was trained on. Two steps keep every image on one side:

1. Before download, the split of a pair is decided by its image's normalised URL
   (`heldout_by_image_url`): every caption of one URL (and every spelling of it that
   `normalize_url` folds together: host case, default port, tracking parameters, fragment)
   lands in the same split.
2. After download, `SplitByImageBytes` groups the samples by the sha256 of their image bytes
   (CoGroupByKey by digest): different URLs serving the same bytes (mirrors, CDNs) that landed
   in both splits are moved, as a whole group, to one side chosen by the digest, and get a shard
   of that side. No image bytes are then in both splits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.pvalue import AsSingleton
from flamboyance.shards import writer as shard_writer
from flamboyance.shards.identity import image_bytes_key, image_url_key

from .common import ShardItem, count, join_url, num_shards_for, shard_of
from .pairs import is_heldout

HELDOUT, TRAIN = "heldout", "train"


def heldout_by_image_url(url: str, fraction: float) -> bool:
    """Whether the pairs of this image URL go to the held-out split (all of them, whatever their
    captions)."""
    return is_heldout(image_url_key(url), fraction)


Tagged = tuple[tuple[str, int], ShardItem]
"""((split, shard index), item): what the image-text job writes."""


class _ResolveSplitFn(beam.DoFn):
    """One digest group -> its items, moved to one side when they were in both splits."""

    def __init__(self, *, namespace: str, fraction: float, samples_per_shard: int,
                 done: dict[str, set[int]]) -> None:
        self.namespace, self.fraction, self.samples_per_shard, self.done = (namespace, fraction, samples_per_shard,
                                                                            done)

    def process(self, element: tuple[str, Iterable[Tagged]], train_total: int,
                heldout_total: int) -> Iterator[Tagged]:
        digest, group = element
        # a group value may be streamed from disk: iterate it twice, never hold it in a list
        splits = {tag[0] for tag, _ in group}
        if len(splits) == 1:
            yield from group
            return
        target = HELDOUT if is_heldout(digest, self.fraction) else TRAIN
        num_shards = num_shards_for(train_total if target == TRAIN else heldout_total, self.samples_per_shard)
        count(self.namespace, "split.image_in_both_splits")
        for tag, item in group:
            if tag[0] == target:
                yield tag, item
                continue
            shard = shard_of(item.key, num_shards)
            if shard in self.done[target]:
                # a rerun: that shard was written before; a sample missing from it is counted, not hidden
                count(self.namespace, f"split.moved_into_complete_shard.{target}")
                continue
            count(self.namespace, f"split.moved_to.{target}")
            yield (target, shard), item


class SplitByImageBytes(beam.PTransform):
    """((split, shard), ShardItem) -> the same, with no image bytes in both splits.

    Samples are grouped by the sha256 of their image bytes; a group whose samples sit in both
    splits goes whole to the held-out side when `is_heldout(digest, fraction)` says so, else to
    train, each moved sample taking the shard its key gets on that side (shard counts come from
    `totals`, the per-split sample counts of `AssignShards`). Items without a sample (failure
    rows) pass through. Counters: `split.image_in_both_splits`, `split.moved_to.<split>`,
    `split.moved_into_complete_shard.<split>` (rerun into a shard already written: dropped).
    """

    def __init__(self, *, output: str, namespace: str, fraction: float, samples_per_shard: int,
                 totals: dict[str, beam.PCollection]) -> None:
        super().__init__()
        self.output, self.namespace, self.fraction = output, namespace, fraction
        self.samples_per_shard, self.totals = samples_per_shard, totals

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        done = {split: shard_writer.completed_shards(join_url(self.output, split)) for split in (TRAIN, HELDOUT)}
        samples, rows = items | "SamplesOrRows" >> beam.Partition(
            lambda element, _n: 0 if element[1].sample is not None else 1, 2)
        resolved = (samples
                    | "KeyByImageBytes" >> beam.Map(lambda element: (image_bytes_key(element[1].sample.image),
                                                                     element))
                    | "GroupByImageBytes" >> beam.GroupByKey()
                    | "OneSidePerImage" >> beam.ParDo(
                        _ResolveSplitFn(namespace=self.namespace, fraction=self.fraction,
                                        samples_per_shard=self.samples_per_shard, done=done),
                        AsSingleton(self.totals[TRAIN]), AsSingleton(self.totals[HELDOUT])))
        return (resolved, rows) | "SamplesAndRows" >> beam.Flatten()
