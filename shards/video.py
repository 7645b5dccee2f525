"""Frame sampling for video_text shards: frames at a fixed rate (1 fps, up to 8 by default)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from .formats import VideoTextSample


@dataclass(frozen=True, kw_only=True)
class FrameSamplingConfig:
    """How frames are taken from a video (FL: 8 frames at 1 fps)."""

    fps: float = 1.0
    """Frames per second of video time; frame i is the first at or after i / fps seconds."""
    max_frames: int = 8
    """At most this many frames (the first ones in time)."""
    jpeg_quality: int = 90
    """Quality of the JPEG each frame is stored as."""
    max_duration_s: float | None = None
    """Refuse videos longer than this (declared duration, or decoded time past it); None: no cap."""
    image_size: int | None = None
    """Shrink frames to at most this many pixels on the longest side (aspect kept); None: as decoded."""

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.max_frames < 1 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"invalid frame sampling config {self}")
        if (self.max_duration_s is not None and self.max_duration_s <= 0) or (
                self.image_size is not None and self.image_size < 1):
            raise ValueError(f"invalid frame sampling config {self}: max_duration_s and image_size must be > 0")


class VideoDecodeError(ValueError):
    """A video that yields no frames. `reason` is one of "corrupt", "no_video_stream",
    "too_long", "no_frames" (stable names for counters); the message names the source."""

    def __init__(self, *, source: str, reason: str, detail: str = "") -> None:
        what = "cannot decode video" if reason == "corrupt" else reason.replace("_", " ")
        super().__init__(f"{source}: {what}" + (f" ({detail})" if detail else ""))
        self.source, self.reason, self.detail = source, reason, detail


def sample_video_frames(video: bytes, *, config: FrameSamplingConfig | None = None,
                        source: str = "<bytes>") -> tuple[list[bytes], dict[str, Any]]:
    """Decode `video` (mp4 etc.) and return (JPEG frames, {"duration", "fps", "timestamps"}).

    Frame i is the first decoded frame at or after i / fps seconds. Raises `VideoDecodeError`
    (a ValueError naming `source`, with a `.reason`) if the video cannot be decoded, has no video
    stream or no frames, or is longer than `config.max_duration_s`.
    """
    import av
    from PIL import Image

    cfg = config or FrameSamplingConfig()
    frames: list[bytes] = []
    timestamps: list[float] = []
    try:
        with av.open(io.BytesIO(video)) as container:
            if not container.streams.video:
                raise VideoDecodeError(source=source, reason="no_video_stream")
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            if cfg.max_duration_s is not None and duration is not None and duration > cfg.max_duration_s:
                raise VideoDecodeError(source=source, reason="too_long",
                                       detail=f"{duration:.1f} s > {cfg.max_duration_s} s")
            last_time = 0.0
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                last_time = float(frame.time)
                if cfg.max_duration_s is not None and last_time > cfg.max_duration_s:
                    raise VideoDecodeError(source=source, reason="too_long",
                                           detail=f"decoded past {cfg.max_duration_s} s")
                if last_time + 1e-6 < len(frames) / cfg.fps:
                    continue
                image = frame.to_image()
                if cfg.image_size is not None:
                    image.thumbnail((cfg.image_size, cfg.image_size), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                image.convert("RGB").save(buf, "JPEG", quality=cfg.jpeg_quality)
                frames.append(buf.getvalue())
                timestamps.append(round(last_time, 6))
                if len(frames) >= cfg.max_frames:
                    break
    except (av.error.FFmpegError, IndexError, ValueError, OSError) as err:
        if isinstance(err, VideoDecodeError):
            raise
        raise VideoDecodeError(source=source, reason="corrupt", detail=f"{type(err).__name__}: {err}") from err
    if not frames:
        raise VideoDecodeError(source=source, reason="no_frames")
    meta = {"duration": round(duration or last_time, 6), "fps": cfg.fps, "timestamps": timestamps}
    return frames, meta


def make_video_sample(*, key: str, video: bytes, caption: str, url: str,
                      config: FrameSamplingConfig | None = None, keep_video: bool = False,
                      metadata: dict[str, Any] | None = None) -> VideoTextSample:
    """A VideoTextSample from an encoded video: sampled frames, caption, source URL, optional mp4."""
    frames, meta = sample_video_frames(video, config=config, source=url)
    return VideoTextSample(key=key, frames=frames, caption=caption,
                           metadata={**(metadata or {}), **meta, "url": url},
                           video=video if keep_video else None)
