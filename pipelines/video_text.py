"""The video-text job: `<video>` elements with captions from pages, or a URL + caption table ->
HTTP download (byte cap) -> PyAV decode (duration cap) -> frames at 1 fps (up to 8), resized ->
video_text shards.

    inputs -> ReadCaptionPairs -> AssignShards -> DownloadVideos (unique URLs)
           -> JoinVideos (JoinMedia: keyed by URL) -> WriteShards

Corrupt, oversized or over-long videos are counted (`video.<reason>`), dead-lettered and
recorded as failure rows in their shard's parquet; they never fail the job.
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
    run_and_report,
)
from .config import VideoTextConfig
from .media import DownloadVideosFn, VideoResult
from .pairs import CaptionPair, JoinMedia, ReadCaptionPairs, count_download, failed_download, sample_row

NAMESPACE = "video_text"
# Reasons found after the bytes arrived (the rest are fetch failures).
_DECODE_REASONS = frozenset({"corrupt", "too_long", "no_video_stream", "no_frames"})


def to_shard_item(pair: CaptionPair, result: VideoResult | None, *, fps: float) -> ShardItem:
    """A downloaded pair as a `VideoTextSample`, or its failure row."""
    from flamboyance.shards.formats import VideoTextSample

    if result is None or not result.ok:
        reason = "not_downloaded" if result is None else (result.reason or "failed")
        return failed_download(pair, "failed_to_decode" if reason in _DECODE_REASONS else "failed_to_download", reason)
    metadata = {"url": pair.url, "duration": result.duration, "fps": fps, "timestamps": list(result.timestamps),
                "source": pair.source, **pair.metadata}
    return ShardItem(key=pair.key, sample=VideoTextSample(key=pair.key, frames=list(result.frames),
                                                          caption=pair.caption, metadata=metadata,
                                                          video=result.video), row=sample_row(pair))


def build_video_text(pipeline: beam.Pipeline, *, inputs: list[str], output: str, config: VideoTextConfig) -> None:
    """Add the video-text job to `pipeline`: `inputs` (WARC or table globs) -> video_text shards."""
    namespace = NAMESPACE
    pairs, rows, pair_dead = (pipeline | "Inputs" >> beam.Create(inputs)
                              | "ReadCaptionPairs" >> ReadCaptionPairs(namespace=namespace, kind="video",
                                                                       url_column=config.url_column,
                                                                       caption_column=config.caption_column,
                                                                       skip_truncated=config.skip_truncated))
    assigned, pending, total = (pairs
                            | "KeyByPair" >> beam.Map(lambda pair: (pair.key, pair))
                            | "AssignShards" >> AssignShards(output=output, samples_per_shard=config.samples_per_shard,
                                                             namespace=namespace))
    refs = assigned | "Refs" >> beam.Map(lambda element: (element[1].url, (element[0], element[1])))
    downloaded = (refs
                  | "VideoUrls" >> beam.Keys()
                  | "UniqueVideoUrls" >> beam.Distinct()
                  | "BatchUrls" >> beam.BatchElements(min_batch_size=1, max_batch_size=8)
                  | "DownloadVideos" >> beam.ParDo(DownloadVideosFn(
                      config=config.download, namespace=namespace, max_bytes=config.max_video_bytes,
                      max_duration_s=config.max_duration_s, fps=config.fps, max_frames=config.max_frames,
                      keep_video=config.keep_video)).with_outputs(DEAD_LETTER, main="videos"))
    fps = config.fps

    def item(element: tuple[int, CaptionPair, VideoResult | None]) -> tuple[int, ShardItem]:
        shard, pair, result = element
        shard_item = to_shard_item(pair, result, fps=fps)
        count(namespace, "pairs.kept" if shard_item.sample is not None else "pairs.failed")
        count_download(namespace, shard_item)
        return shard, shard_item

    rows = rows | "AssignRows" >> AssignRows(output=output, samples_per_shard=config.samples_per_shard,
                                             namespace=namespace, total=total, count_rows=True)
    _ = ((refs
          | "JoinVideosByUrl" >> JoinMedia(results=downloaded.videos, namespace=namespace)
          | "ShardItems" >> beam.Map(item), rows)
         | "SamplesAndRows" >> beam.Flatten()
         | "WriteShards" >> WriteShards(output=output, kind="video_text", namespace=namespace, pending=pending,
                                        count_rows=True))
    _ = ((pair_dead, downloaded[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> WriteDeadLetters(output, namespace=namespace))


def run_video_text(*, inputs: list[str], output: str, config: VideoTextConfig | None = None,
                   options: PipelineOptions | None = None) -> dict[str, Any]:
    """Run the video-text job; returns its stats (also written to `<output>/etl_stats.json`)."""
    pipeline = beam.Pipeline(options=options or PipelineOptions())
    build_video_text(pipeline, inputs=inputs, output=output, config=config or VideoTextConfig())
    return run_and_report(pipeline, output=output, namespace=NAMESPACE)
