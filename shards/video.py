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

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.max_frames < 1 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"invalid frame sampling config {self}")


def sample_video_frames(video: bytes, *, config: FrameSamplingConfig | None = None,
                        source: str = "<bytes>") -> tuple[list[bytes], dict[str, Any]]:
    """Decode `video` (mp4 etc.) and return (JPEG frames, {"duration", "fps", "timestamps"}).

    Raises ValueError naming `source` if the video cannot be decoded or has no frames.
    """
    import av
    from PIL import Image

    cfg = config or FrameSamplingConfig()
    frames: list[bytes] = []
    timestamps: list[float] = []
    try:
        with av.open(io.BytesIO(video)) as container:
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            last_time = 0.0
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                last_time = float(frame.time)
                target = len(frames) / cfg.fps
                if last_time + 1e-6 < target:
                    continue
                buf = io.BytesIO()
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(buf, "JPEG", quality=cfg.jpeg_quality)
                frames.append(buf.getvalue())
                timestamps.append(round(last_time, 6))
                if len(frames) >= cfg.max_frames:
                    break
    except (av.error.FFmpegError, IndexError, ValueError, OSError) as err:
        raise ValueError(f"{source}: cannot decode video ({type(err).__name__}: {err})") from err
    if not frames:
        raise ValueError(f"{source}: video has no decodable frames")
    meta = {"duration": round(duration if duration is not None else last_time, 6), "fps": cfg.fps,
            "timestamps": timestamps}
    return frames, meta


def make_video_sample(*, key: str, video: bytes, caption: str, url: str,
                      config: FrameSamplingConfig | None = None, keep_video: bool = False,
                      metadata: dict[str, Any] | None = None) -> VideoTextSample:
    """A VideoTextSample from an encoded video: sampled frames, caption, source URL, optional mp4."""
    frames, meta = sample_video_frames(video, config=config, source=url)
    return VideoTextSample(key=key, frames=frames, caption=caption,
                           metadata={**(metadata or {}), **meta, "url": url},
                           video=video if keep_video else None)
