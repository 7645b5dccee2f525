"""Media download and decoding inside DoFns: images (img2dataset's Resizer and X-Robots-Tag check)
and videos (PyAV, frames at 1 fps).

We reuse img2dataset's building blocks rather than its `download()` (which starts its own process
pool): `is_disallowed` for `X-Robots-Tag` opt-outs and `Resizer` for re-encoding. HTTP goes
through the crawler's hardened single-exchange client (`flamboyance.crawl.fetch`: SSRF guard on
the connected address, timeouts, byte cap); on top of it we follow redirects, judge opt-outs on
the response head before any body is read, and retry only transient failures (timeouts, dropped
connections, 408/429/5xx) with exponential backoff, jitter and Retry-After.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from .common import Progress, count, dead_letter
from .config import DownloadConfig

# img2dataset imports albumentations, which otherwise checks PyPI for updates on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_USER_AGENT = "Mozilla/5.0 (compatible; {token}; +https://github.com/flamboyance)"
_TRANSIENT_STATUS = frozenset({408, 429})

# img2dataset's Resizer silences stdout/stderr by dup2-ing file descriptors 1 and 2 while it
# decodes; two threads doing that at once can leave the process writing to /dev/null, so calls
# into it (from any bundle thread of this worker) are serialised.
_RESIZE_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class Fetched:
    """The outcome of one HTTP fetch: the body, or a short failure reason and details."""

    url: str
    data: bytes | None = None
    reason: str | None = None
    detail: str = ""
    attempts: int = 1


@dataclass(frozen=True, kw_only=True)
class ImageResult:
    """A downloaded, checked and re-encoded image, or why it failed (`reason` is set then)."""

    url: str
    data: bytes | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.data is not None


_TRANSIENT_FETCH_ERRORS = frozenset({"connect_timeout", "read_timeout", "total_timeout", "dns_timeout",
                                     "connection_error"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Headers:
    """`get_all` over crawl's lower-cased header dict, as img2dataset's `is_disallowed` expects."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def get_all(self, name: str, default: Any = None) -> Any:
        value = self.headers.get(name.lower())
        return default if value is None else [value]


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: not worth parsing, use our own backoff
        return None


def _fetch_once(url: str, cfg: DownloadConfig, max_bytes: int) -> tuple[Fetched, bool, float | None]:
    """One attempt, following redirects: (result, whether a failure is transient, Retry-After)."""
    from flamboyance.crawl.fetch import FetchConfig, FetchError
    from flamboyance.crawl.fetch import fetch as http_get
    from img2dataset.downloader import is_disallowed

    token = cfg.user_agent_token.strip().lower()
    directives = {d.strip().lower() for d in cfg.disallowed_header_directives}
    config = FetchConfig(connect_timeout=cfg.timeout_s, read_timeout=cfg.timeout_s,
                         total_timeout=max(cfg.timeout_s, cfg.total_timeout_s), max_body_bytes=max_bytes,
                         user_agent=_USER_AGENT.format(token=token), allow_private_hosts=cfg.allow_private_hosts)
    verdict: dict[str, str] = {}

    def want_body(status: int, headers: dict[str, str]) -> bool:
        # Opt-outs and size are judged on the head: a refused body is never downloaded.
        if status != 200:
            return False
        if directives and is_disallowed(_Headers(headers), token, directives):
            verdict["reason"], verdict["detail"] = "disallowed_by_x_robots_tag", headers.get("x-robots-tag", "")
            return False
        return True

    current = url
    for _ in range(cfg.max_redirects + 1):
        try:
            response = http_get(current, config, want_body=want_body)
        except FetchError as err:
            reason = "too_large" if err.reason == "body_too_large" else err.reason
            return Fetched(url=url, reason=reason, detail=err.detail), err.reason in _TRANSIENT_FETCH_ERRORS, None
        status = response.status
        if status in _REDIRECTS and response.headers.get("location"):
            current = urllib.parse.urljoin(current, response.headers["location"])
            continue
        if status in _TRANSIENT_STATUS or status >= 500:
            return (Fetched(url=url, reason=f"http_{status}", detail=current), True,
                    _retry_after(response.headers.get("retry-after")))
        if verdict:
            return Fetched(url=url, reason=verdict["reason"], detail=verdict["detail"]), False, None
        if status != 200:
            return Fetched(url=url, reason=f"http_{status}", detail=current), False, None
        if response.truncated or response.body is None:
            return Fetched(url=url, reason="too_large", detail=f"body over {max_bytes} bytes"), False, None
        return Fetched(url=url, data=response.body), False, None
    return Fetched(url=url, reason="too_many_redirects", detail=current), False, None


def fetch(url: str, cfg: DownloadConfig, *, max_bytes: int) -> Fetched:
    """GET `url` with the crawler's hardened client (http/https only, SSRF guard on the address
    actually connected to, timeouts, byte cap), following redirects, honouring `X-Robots-Tag`
    opt-outs before the body is downloaded.

    Transient failures (timeouts, dropped connections, 408/429/5xx) are retried up to
    `cfg.retries` times with exponential backoff and jitter (a server's Retry-After wins,
    capped); anything else fails at once. The failure reason of the last attempt is returned.
    """
    attempt = 0
    while True:
        attempt += 1
        result, transient, retry_after = _fetch_once(url, cfg, max_bytes)
        if not transient or attempt > cfg.retries:
            return dataclasses.replace(result, attempts=attempt)
        delay = cfg.backoff_s * 2 ** (attempt - 1) * (1 + random.random())
        if retry_after is not None:
            delay = min(retry_after, cfg.max_retry_after_s)
        time.sleep(delay)


class ImageDownloader:
    """Fetch one image URL, judge the decoded image (`downloaded_image_filter`: format, min side,
    aspect ratio, single colour) and re-encode it with img2dataset's `Resizer`."""

    def __init__(self, *, config: DownloadConfig, filter_config: Any = None) -> None:
        from flamboyance.preprocess.filters import FilterConfig
        from img2dataset.resizer import Resizer

        self.config = config
        self.filters = filter_config or FilterConfig()
        self.resizer = Resizer(image_size=config.image_size, resize_mode="keep_ratio_largest",
                               resize_only_if_bigger=True, encode_format=config.encode_format,
                               encode_quality=config.encode_quality)

    def fetch(self, url: str) -> Fetched:
        """The HTTP part (thread-safe; run it in a thread pool)."""
        return fetch(url, self.config, max_bytes=self.config.max_image_bytes)

    def finish(self, fetched: Fetched) -> ImageResult:
        """Decode, judge and re-encode a fetched body."""
        from flamboyance.preprocess.filters import downloaded_image_filter, is_single_colour
        from PIL import Image

        url = fetched.url
        if fetched.data is None:
            return ImageResult(url=url, reason=fetched.reason, detail=fetched.detail)
        try:
            with Image.open(io.BytesIO(fetched.data)) as image:
                width, height, fmt = image.width, image.height, image.format or ""
                if width * height > (Image.MAX_IMAGE_PIXELS or float("inf")):
                    # Pillow only warns about decompression bombs; refuse them before decoding.
                    return ImageResult(url=url, reason="decompression_bomb", detail=f"{width}x{height}")
                image.load()  # a truncated file opens fine and fails here
                single_colour = is_single_colour(image)
        except Image.DecompressionBombError as err:  # over twice the limit: Pillow refuses in open()
            return ImageResult(url=url, reason="decompression_bomb", detail=str(err))
        except (OSError, ValueError) as err:
            return ImageResult(url=url, reason="decode_error", detail=str(err))
        verdict = downloaded_image_filter(width, height, fmt, single_colour, cfg=self.filters)
        if verdict is not True:
            return ImageResult(url=url, reason=verdict[1], detail=f"{width}x{height} {fmt}")
        with _RESIZE_LOCK:
            data, new_width, new_height, _, _, error = self.resizer(io.BytesIO(fetched.data))
        if error is not None:
            return ImageResult(url=url, reason="decode_error", detail=error)
        return ImageResult(url=url, data=data, width=new_width, height=new_height, original_width=width,
                           original_height=height)


class DownloadImagesFn(beam.DoFn):
    """Batches of unique image URLs -> `(url, ImageResult)` for every URL; failures are counted
    (`<namespace>:image.<reason>`) and dead-lettered, and still emitted so joins can drop them."""

    def __init__(self, *, config: DownloadConfig, namespace: str, filter_config: Any = None) -> None:
        self.config, self.namespace, self.filter_config = config, namespace, filter_config

    def setup(self) -> None:
        self.downloader = ImageDownloader(config=self.config, filter_config=self.filter_config)
        self.pool = ThreadPoolExecutor(max_workers=self.config.threads)
        self.progress = Progress(namespace=self.namespace, stage="download_images")

    def teardown(self) -> None:
        self.pool.shutdown(wait=True)

    def _one(self, url: str) -> ImageResult:
        try:
            return self.downloader.finish(self.downloader.fetch(url))
        except Exception as err:  # noqa: BLE001 - one image never fails the job: an "exception" result
            return ImageResult(url=url, reason="exception", detail=f"{type(err).__name__}: {err}"[:1000])

    def process(self, urls: Iterable[str]) -> Iterator[Any]:
        for result in self.pool.map(self._one, list(urls)):
            self.progress.tick()
            if result.ok:
                count(self.namespace, "image.downloaded")
            else:
                yield dead_letter(self.namespace, "image", result.reason or "failed", result.url, result.detail)
            yield result.url, result


# --- video -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class VideoResult:
    """Frames sampled from one video (encoded JPEG bytes, time order), or why it failed."""

    url: str
    frames: tuple[bytes, ...] = ()
    timestamps: tuple[float, ...] = ()
    duration: float | None = None
    video: bytes | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def sample_frames(data: bytes, *, fps: float, max_frames: int, max_duration_s: float, image_size: int,
                  quality: int = 95) -> tuple[list[bytes], list[float], float]:
    """(JPEG frames, their timestamps, duration) of a downloaded video, by
    `flamboyance.shards.video.sample_video_frames` (frame i is the first at or after i / fps
    seconds; frames shrunk to `image_size` on the longest side). Raises `ValueError("<reason>: ...")`
    with reason too_long, no_video_stream, no_frames or corrupt for videos that must be skipped.
    """
    from flamboyance.shards.video import FrameSamplingConfig, VideoDecodeError, sample_video_frames

    config = FrameSamplingConfig(fps=fps, max_frames=max_frames, jpeg_quality=quality,
                                 max_duration_s=max_duration_s, image_size=image_size)
    try:
        frames, meta = sample_video_frames(data, config=config)
    except VideoDecodeError as err:
        raise ValueError(f"{err.reason}: {err.detail}") from err
    return frames, [round(t, 3) for t in meta["timestamps"]], round(meta["duration"], 3)


class DownloadVideosFn(beam.DoFn):
    """Batches of video URLs -> `(url, VideoResult)`; corrupt, oversized or over-long videos are
    counted (`<namespace>:video.<reason>`) and dead-lettered, never fatal."""

    def __init__(self, *, config: DownloadConfig, namespace: str, max_bytes: int, max_duration_s: float,
                 fps: float, max_frames: int, keep_video: bool) -> None:
        self.config, self.namespace = config, namespace
        self.max_bytes, self.max_duration_s = max_bytes, max_duration_s
        self.fps, self.max_frames, self.keep_video = fps, max_frames, keep_video

    def setup(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, self.config.threads)))
        self.progress = Progress(namespace=self.namespace, stage="download_videos")

    def teardown(self) -> None:
        self.pool.shutdown(wait=True)

    def _one(self, url: str) -> VideoResult:
        try:
            return self._download(url)
        except Exception as err:  # noqa: BLE001 - one video never fails the job: an "exception" result
            return VideoResult(url=url, reason="exception", detail=f"{type(err).__name__}: {err}"[:1000])

    def _download(self, url: str) -> VideoResult:
        fetched = fetch(url, self.config, max_bytes=self.max_bytes)
        if fetched.data is None:
            return VideoResult(url=url, reason=fetched.reason, detail=fetched.detail)
        try:
            frames, stamps, duration = sample_frames(
                fetched.data, fps=self.fps, max_frames=self.max_frames, max_duration_s=self.max_duration_s,
                image_size=self.config.image_size, quality=self.config.encode_quality)
        except ValueError as err:
            reason, _, detail = str(err).partition(":")
            return VideoResult(url=url, reason=reason, detail=detail.strip())
        return VideoResult(url=url, frames=tuple(frames), timestamps=tuple(stamps), duration=duration,
                           video=fetched.data if self.keep_video else None)

    def process(self, urls: Iterable[str]) -> Iterator[Any]:
        for result in self.pool.map(self._one, list(urls)):
            self.progress.tick()
            if result.ok:
                count(self.namespace, "video.downloaded")
            else:
                yield dead_letter(self.namespace, "video", result.reason or "failed", result.url, result.detail)
            yield result.url, result
