"""`flamboyance etl {m3w,image-text,video-text} --input GLOB --output URL [Beam options]`.

Options we do not know (`--runner`, `--project`, `--temp_location`, `--direct_num_workers`, ...)
are Beam's and go to `PipelineOptions` untouched. Without them the job runs on the DirectRunner
in multi-process mode with 2 workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from .config import DownloadConfig, ImageTextConfig, M3WConfig, VideoTextConfig

JOBS = ("m3w", "image-text", "video-text")
LOCAL_RUNNER = "flamboyance.pipelines.common.LocalRunner"
"""`common.LocalRunner`, named (importing Beam here would slow every `flamboyance` command)."""
DEFAULT_BEAM_ARGS = {"--direct_num_workers": "2", "--direct_running_mode": "multi_processing",
                     # worker processes log only warnings, plus our progress lines
                     "--default_sdk_harness_log_level": "WARNING",
                     "--sdk_harness_log_level_overrides": '{"flamboyance.pipelines": "INFO"}'}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `etl` options (Beam's own options pass through unparsed)."""
    parser.epilog = ("Any other option is a Beam pipeline option (--runner, --project, --region, "
                     "--temp_location, --direct_num_workers, ...). Default: DirectRunner, 2 worker processes.")
    parser.add_argument("job", choices=JOBS, help="which ETL job to run")
    parser.add_argument("--input", action="append", required=True, metavar="GLOB",
                        help="fsspec glob of WARC files, or of URL+caption tables (.parquet/.csv/.tsv/.jsonl) "
                             "for image-text and video-text; repeatable")
    parser.add_argument("--output", required=True, metavar="URL",
                        help="output dataset URL (image-text writes <output>/train and <output>/heldout)")
    parser.add_argument("--samples-per-shard", type=int, default=None,
                        help="target samples per shard (defaults: m3w 256, image-text 10000, video-text 100)")
    parser.add_argument("--image-size", type=int, default=DownloadConfig.image_size,
                        help="longest side of stored images and frames (only shrinks)")
    parser.add_argument("--timeout", type=float, default=DownloadConfig.timeout_s, help="download timeout (s)")
    parser.add_argument("--retries", type=int, default=DownloadConfig.retries,
                        help="retries of transient download failures (timeouts, 408/429/5xx)")
    parser.add_argument("--download-threads", type=int, default=DownloadConfig.threads,
                        help="download threads per worker")
    parser.add_argument("--allow-private-hosts", action="store_true",
                        help="download media from loopback/private addresses too (needed for the sample web "
                             "on 127.0.0.1; off by default as an SSRF guard)")
    parser.add_argument("--skip-truncated", action="store_true",
                        help="skip WARC records marked WARC-Truncated (default: keep them, marked truncated)")
    parser.add_argument("--ignore-x-robots-tag", action="store_true",
                        help="do not honour X-Robots-Tag noai/noimageai/noindex/noimageindex (not recommended)")
    m3w = parser.add_argument_group("m3w")
    m3w.add_argument("--near-duplicate-threshold", type=float, default=M3WConfig.near_duplicate_threshold,
                     help="MinHash Jaccard estimate at which LSH candidates count as near-duplicates")
    pairs = parser.add_argument_group("image-text / video-text")
    pairs.add_argument("--heldout-fraction", type=float, default=ImageTextConfig.heldout_fraction,
                       help="share of image-text pairs written to <output>/heldout (by image: URL, then bytes)")
    pairs.add_argument("--url-column", default="url", help="URL column of input tables")
    pairs.add_argument("--caption-column", default="caption", help="caption column of input tables")
    pairs.add_argument("--no-alt-text", action="store_true",
                       help="image-text from pages: only figcaptions, not alt texts")
    video = parser.add_argument_group("video-text")
    video.add_argument("--max-video-bytes", type=int, default=VideoTextConfig.max_video_bytes)
    video.add_argument("--max-duration", type=float, default=VideoTextConfig.max_duration_s,
                       help="videos longer than this (s) are skipped")
    video.add_argument("--fps", type=float, default=VideoTextConfig.fps, help="frames sampled per second")
    video.add_argument("--max-frames", type=int, default=VideoTextConfig.max_frames)
    video.add_argument("--keep-video", action="store_true", help="also store the mp4 in the shards")


def beam_args(pipeline_args: list[str] | None) -> list[str]:
    """Beam options with our defaults added where not given: `LocalRunner` (the DirectRunner's
    engine, never Prism) with 2 worker processes."""
    args = list(pipeline_args or [])
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    runner = next((a.split("=", 1)[1] for a in args if a.startswith("--runner=")), None)
    if runner is None and "--runner" in args:
        runner = args[args.index("--runner") + 1] if args.index("--runner") + 1 < len(args) else None
    if runner is None:
        args.append(f"--runner={LOCAL_RUNNER}")  # never a runner downloaded at run time
    if runner in (None, "DirectRunner", "direct"):
        args += [f"{name}={value}" for name, value in DEFAULT_BEAM_ARGS.items() if name not in given]
    return args


def _download(args: argparse.Namespace) -> DownloadConfig:
    return DownloadConfig(image_size=args.image_size, timeout_s=args.timeout, retries=args.retries,
                          threads=args.download_threads, allow_private_hosts=args.allow_private_hosts,
                          disallowed_header_directives=() if args.ignore_x_robots_tag
                          else DownloadConfig.disallowed_header_directives)


def _with_shard_size(config: object, args: argparse.Namespace) -> object:
    if args.samples_per_shard is None:
        return config
    return dataclasses.replace(config, samples_per_shard=args.samples_per_shard)


def run(args: argparse.Namespace) -> int:
    """Run the chosen job; prints the counter summary. Returns 0 on success."""
    from apache_beam.options.pipeline_options import PipelineOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    from .common import check_output_reachable, expand_glob

    for pattern in args.input:  # fail before starting workers when an input matches nothing
        try:
            expand_glob(pattern)
        except FileNotFoundError as err:
            raise SystemExit(f"flamboyance etl {args.job}: {err}") from None
    options = PipelineOptions(beam_args(getattr(args, "pipeline_args", None)))
    try:  # a local --output that remote workers would not share: one line, before any work
        check_output_reachable(args.output, options)
    except ValueError as err:
        raise SystemExit(f"flamboyance etl {args.job}: {err}") from None
    download = _download(args)
    if args.job == "m3w":
        from .m3w import run_m3w

        config = _with_shard_size(M3WConfig(near_duplicate_threshold=args.near_duplicate_threshold,
                                            skip_truncated=args.skip_truncated, download=download), args)
        run_m3w(inputs=args.input, output=args.output, config=config, options=options)
    elif args.job == "image-text":
        from .image_text import run_image_text

        config = _with_shard_size(ImageTextConfig(heldout_fraction=args.heldout_fraction, url_column=args.url_column,
                                                  caption_column=args.caption_column,
                                                  use_alt_text=not args.no_alt_text, skip_truncated=args.skip_truncated,
                                                  download=download), args)
        run_image_text(inputs=args.input, output=args.output, config=config, options=options)
    else:
        from .video_text import run_video_text

        config = _with_shard_size(VideoTextConfig(max_video_bytes=args.max_video_bytes,
                                                  max_duration_s=args.max_duration, fps=args.fps,
                                                  max_frames=args.max_frames, keep_video=args.keep_video,
                                                  url_column=args.url_column, caption_column=args.caption_column,
                                                  skip_truncated=args.skip_truncated, download=download), args)
        run_video_text(inputs=args.input, output=args.output, config=config, options=options)
    return 0


COMMANDS = {
    "etl": ("Beam ETL jobs: WARC pages or URL+caption tables -> m3w / image_text / video_text shards",
            add_arguments, run),
}
