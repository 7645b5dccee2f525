"""Typed configurations of the three ETL jobs (one dataclass per job, a shared download block).

A job is `input + output + config`; the CLI maps its options onto these fields one to one, and
Beam's own options (runner, workers, ...) travel separately as `PipelineOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flamboyance.preprocess.extract import ExtractConfig
from flamboyance.preprocess.filters import FilterConfig

DEFAULT_DISALLOWED_DIRECTIVES: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
"""`X-Robots-Tag` directives that opt an image out (img2dataset's default list)."""


@dataclass(frozen=True, kw_only=True)
class DownloadConfig:
    """How media are fetched: timeouts, size caps, retries of transient failures, opt-outs."""

    timeout_s: float = 10.0
    """Connect and per-read socket timeout (img2dataset default: 10 s)."""
    total_timeout_s: float = 60.0
    """Wall-clock cap on one exchange (connect, head, body)."""
    max_redirects: int = 5
    """Redirects followed per URL."""
    allow_private_hosts: bool = False
    """Download from loopback/private/link-local addresses too (the sample web, intranets). Off by
    default: page-supplied URLs must not reach cloud metadata servers or internal services."""
    retries: int = 2
    """Extra attempts for transient failures only (timeouts, connection resets, 408/429/5xx)."""
    backoff_s: float = 0.5
    """Base of the exponential backoff between retries (with jitter; Retry-After wins, capped)."""
    max_retry_after_s: float = 30.0
    """Cap on a server's Retry-After."""
    max_image_bytes: int = 20 * 2**20
    """Images larger than this are refused (counted `too_large`)."""
    image_size: int = 224
    """Longest side after resizing (only shrinks; aspect ratio kept)."""
    encode_format: str = "jpg"
    """Stored image format (jpg, png or webp)."""
    encode_quality: int = 95
    """JPEG/WebP quality of the stored images."""
    threads: int = 16
    """Download threads inside one worker (I/O bound)."""
    batch_size: int = 64
    """URLs handed to one download call."""
    user_agent_token: str = "flamboyance"
    """Our token in the User-Agent, matched against `X-Robots-Tag: <token>: ...` directives."""
    disallowed_header_directives: tuple[str, ...] = DEFAULT_DISALLOWED_DIRECTIVES
    """`X-Robots-Tag` directives that opt a medium out; empty to ignore the header."""

    def __post_init__(self) -> None:
        if self.retries < 0 or self.timeout_s <= 0 or self.image_size <= 0 or self.threads <= 0:
            raise ValueError(f"DownloadConfig: retries >= 0, timeout_s/image_size/threads > 0 (got {self})")
        if self.encode_format not in ("jpg", "png", "webp"):
            raise ValueError(f"DownloadConfig.encode_format must be jpg, png or webp, got {self.encode_format!r}")


@dataclass(frozen=True, kw_only=True)
class M3WConfig:
    """The interleaved image-text (M3W) job."""

    samples_per_shard: int = 256
    """Target documents per shard (the shard count is fixed from the deduplicated document count)."""
    near_duplicate_threshold: float = 0.7
    """Estimated Jaccard similarity above which two LSH candidates are near-duplicates."""
    near_dedup_rounds: int = 8
    """Label-propagation rounds of near-dedup's connected components: a cluster whose links are
    longer than this (rare: members link to their bucket's representative) is counted
    `dedup.near_unconverged` and may keep more than one capture."""
    skip_truncated: bool = False
    """Skip WARC records marked `WARC-Truncated` (counted `warc.warc_truncated`). By default they
    are kept and marked `truncated: true`: Common Crawl cuts pages at 1 MiB, and the prefix
    usually holds the whole article."""
    minhash_bands: int = 14
    """LSH bands (datatrove: 14 x 8)."""
    minhash_rows: int = 8
    """Rows per band."""
    extract: ExtractConfig = field(default_factory=lambda: ExtractConfig(captions_as_text=True))
    """Main-content extraction. Figure captions are kept as text after their image: the page shows
    them, and the text right after an image is what M3W training ties to that image."""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """Node/document filter thresholds, including the corpus-wide ones (`image_max_documents`,
    `paragraph_boilerplate_min_count`), the image bounds and the post-download image checks."""
    download: DownloadConfig = field(default_factory=DownloadConfig)
    """Image download settings."""

    def __post_init__(self) -> None:
        if self.samples_per_shard <= 0 or not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise ValueError(f"M3WConfig: samples_per_shard > 0 and threshold in (0, 1] ({self})")
        if self.near_dedup_rounds < 1:
            raise ValueError(f"M3WConfig: near_dedup_rounds must be >= 1, got {self.near_dedup_rounds}")


@dataclass(frozen=True, kw_only=True)
class ImageTextConfig:
    """The image-text pairs job (alt-text/figcaption pairs from pages, or a URL + caption table)."""

    samples_per_shard: int = 10000
    """Target pairs per shard (img2dataset default)."""
    skip_truncated: bool = False
    """Skip WARC records marked `WARC-Truncated` (see `M3WConfig.skip_truncated`)."""
    heldout_fraction: float = 0.1
    """Share of images (by a stable hash of the normalised image URL; every caption of one image, and
    every URL serving the same bytes, lands in one split) written to `<output>/heldout`."""
    url_column: str = "url"
    """URL column of an input table."""
    caption_column: str = "caption"
    """Caption column of an input table."""
    use_alt_text: bool = True
    """From pages: fall back to the alt text when an image has no figcaption."""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """Image checks (URL boilerplate, declared sizes, post-download size/aspect/single colour)."""
    download: DownloadConfig = field(default_factory=DownloadConfig)
    """Image download settings."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.samples_per_shard <= 0:
            raise ValueError(f"samples_per_shard must be > 0, got {self.samples_per_shard}")


@dataclass(frozen=True, kw_only=True)
class VideoTextConfig:
    """The video-text pairs job (<video> elements with captions, or a URL + caption table)."""

    samples_per_shard: int = 100
    """Target videos per shard."""
    skip_truncated: bool = False
    """Skip WARC records marked `WARC-Truncated` (see `M3WConfig.skip_truncated`)."""
    max_video_bytes: int = 50 * 2**20
    """Videos larger than this are counted `too_large` and skipped."""
    max_duration_s: float = 120.0
    """Videos longer than this are counted `too_long` and skipped."""
    fps: float = 1.0
    """Frames sampled per second of video (FL: 1)."""
    max_frames: int = 8
    """Frames kept per video (FL: 8)."""
    keep_video: bool = False
    """Also store the original video bytes in the shard."""
    url_column: str = "url"
    """URL column of an input table."""
    caption_column: str = "caption"
    """Caption column of an input table."""
    download: DownloadConfig = field(default_factory=DownloadConfig)
    """Download settings (timeouts, retries, image_size for the frames)."""

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.max_frames <= 0 or self.max_duration_s <= 0:
            raise ValueError(f"VideoTextConfig: fps, max_frames, max_duration_s must be > 0 ({self})")
