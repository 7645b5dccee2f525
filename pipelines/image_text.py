"""The image-text job: alt-text/figcaption pairs from pages, or a URL + caption table ->
caption filters -> train / held-out split -> image download -> image_text shards.

    inputs -> ReadCaptionPairs -> SplitTrainHeldout -> AssignShards (per split)
           -> DownloadImages (unique URLs) -> JoinImages (JoinMedia: keyed by URL) -> WriteShards

Output: `<output>/train` and `<output>/heldout`, each an img2dataset-layout dataset
(`{shard:05d}.tar` with `{key}.jpg/.txt/.json`, `.parquet` with every input's status,
`_stats.json`, `manifest.json`); counters in `<output>/etl_stats.json`, bad records in
`<output>/dead_letter/`.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from .common import (
    DEAD_LETTER,
    AssignRows,
    AssignShards,
    ShardItem,
    WriteDeadLetters,
    WriteShards,
    count,
    join_url,
    run_and_report,
)
from .config import ImageTextConfig
from .media import DownloadImagesFn, ImageResult
from .pairs import CaptionPair, JoinMedia, ReadCaptionPairs, count_download, failed_download, sample_row
from .split import SplitByImageBytes, heldout_by_image_url

NAMESPACE = "image_text"
SPLITS: tuple[str, ...] = ("train", "heldout")

# Reasons that come from looking at the decoded image rather than from fetching it.
_RESIZE_REASONS = frozenset({"decode_error", "decompression_bomb", "image_download_format",
                             "image_download_too_small", "image_download_too_large",
                             "image_download_aspect_ratio", "image_single_colour"})


def to_shard_item(pair: CaptionPair, result: ImageResult | None) -> ShardItem:
    """A downloaded pair as an `ImageTextSample`, or its img2dataset failure row."""
    from flamboyance.shards.formats import ImageTextSample

    if result is None or not result.ok:
        reason = "not_downloaded" if result is None else (result.reason or "failed")
        return failed_download(pair, "failed_to_resize" if reason in _RESIZE_REASONS else "failed_to_download", reason)
    metadata = {"url": pair.url, "caption": pair.caption, "status": "success", "error_message": None,
                "width": result.width, "height": result.height, "original_width": result.original_width,
                "original_height": result.original_height, "source": pair.source, **pair.metadata}
    return ShardItem(key=pair.key, sample=ImageTextSample(key=pair.key, image=result.data, caption=pair.caption,
                                                          metadata=metadata), row=sample_row(pair))


def build_image_text(pipeline: beam.Pipeline, *, inputs: list[str], output: str, config: ImageTextConfig) -> None:
    """Add the image-text job to `pipeline`: `inputs` (WARC or table globs) -> `<output>/{train,heldout}`."""
    namespace = NAMESPACE
    pairs, rows, pair_dead = (pipeline | "Inputs" >> beam.Create(inputs)
                              | "ReadCaptionPairs" >> ReadCaptionPairs(namespace=namespace, kind="image",
                                                                       filters=config.filters,
                                                                       use_alt_text=config.use_alt_text,
                                                                       url_column=config.url_column,
                                                                       caption_column=config.caption_column,
                                                                       skip_truncated=config.skip_truncated))
    fraction = config.heldout_fraction
    by_split = pairs | "SplitTrainHeldout" >> beam.Partition(
        lambda pair, _n: 1 if heldout_by_image_url(pair.url, fraction) else 0, len(SPLITS))
    refs, pending, totals = [], {}, {}
    for index, split in enumerate(SPLITS):
        label = split.capitalize()
        assigned, pending[split], totals[split] = (by_split[index]
                                       | f"KeyBy{label}" >> beam.Map(lambda pair: (pair.key, pair))
                                       | f"AssignShards{label}" >> AssignShards(
                                           output=join_url(output, split), samples_per_shard=config.samples_per_shard,
                                           namespace=namespace))
        refs.append(assigned | f"Refs{label}" >> beam.Map(
            lambda element, split=split: (element[1].url, ((split, element[0]), element[1]))))
    refs = refs | "AllRefs" >> beam.Flatten()
    downloaded = (refs
                  | "ImageUrls" >> beam.Keys()
                  | "UniqueImageUrls" >> beam.Distinct()
                  | "BatchUrls" >> beam.BatchElements(min_batch_size=1, max_batch_size=config.download.batch_size)
                  | "DownloadImages" >> beam.ParDo(DownloadImagesFn(config=config.download, namespace=namespace,
                                                                   filter_config=config.filters))
                  .with_outputs(DEAD_LETTER, main="images"))

    def item(element: tuple[Any, CaptionPair, ImageResult | None]) -> tuple[tuple[str, int], ShardItem]:
        tag, pair, result = element
        shard_item = to_shard_item(pair, result)
        count(namespace, f"pairs.{tag[0]}" if shard_item.sample is not None else "pairs.failed")
        count_download(namespace, shard_item)
        return tag, shard_item

    items = (refs
             | "JoinImagesByUrl" >> JoinMedia(results=downloaded.images, namespace=namespace)
             | "ShardItems" >> beam.Map(item)
             | "SplitByImageBytes" >> SplitByImageBytes(output=output, namespace=namespace, fraction=fraction,
                                                        samples_per_shard=config.samples_per_shard, totals=totals))
    # a dropped candidate's row goes to the split its URL (the image's, or a failed page's) hashes to
    rows_by_split = rows | "SplitRows" >> beam.Partition(
        lambda item, _n: 1 if heldout_by_image_url(item.row["url"], fraction) else 0, len(SPLITS))
    for index, split in enumerate(SPLITS):
        label = split.capitalize()
        split_rows = rows_by_split[index] | f"AssignRows{label}" >> AssignRows(
            output=join_url(output, split), samples_per_shard=config.samples_per_shard, namespace=namespace,
            total=totals[split], count_rows=True)
        _ = ((items
              | f"Only{label}" >> beam.Filter(lambda element, split=split: element[0][0] == split)
              | f"ShardOf{label}" >> beam.Map(lambda element: (element[0][1], element[1])), split_rows)
             | f"SamplesAndRows{label}" >> beam.Flatten()
             | f"WriteShards{label}" >> WriteShards(output=join_url(output, split), kind="image_text",
                                                    namespace=namespace, pending=pending[split], count_rows=True))
    _ = ((pair_dead, downloaded[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> WriteDeadLetters(output, namespace=namespace))


def run_image_text(*, inputs: list[str], output: str, config: ImageTextConfig | None = None,
                   options: PipelineOptions | None = None) -> dict[str, Any]:
    """Run the image-text job; returns its stats (also written to `<output>/etl_stats.json`)."""
    pipeline = beam.Pipeline(options=options or PipelineOptions())
    build_image_text(pipeline, inputs=inputs, output=output, config=config or ImageTextConfig())
    return run_and_report(pipeline, output=output, namespace=NAMESPACE)
