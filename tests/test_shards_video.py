"""Frame sampling for video_text shards: 1 fps, at most `max_frames`, with timestamps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from flamboyance.shards import open_dataset
from flamboyance.shards.video import (
    FrameSamplingConfig,
    VideoDecodeError,
    make_video_sample,
    sample_video_frames,
)
from flamboyance.shards.writer import write_shard


def _mp4(seconds: int, fps: int = 4, size: tuple[int, int] = (32, 16)) -> bytes:
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(seconds * fps):
            # brightness encodes the second, so each sampled frame can be checked
            frame = np.full((size[1], size[0], 3), 20 * (i // fps), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def test_one_frame_per_second_up_to_the_limit(tmp_path: Path) -> None:
    video = _mp4(10)
    frames, meta = sample_video_frames(video)
    assert meta == {"duration": 10.0, "fps": 1.0, "timestamps": [float(t) for t in range(8)]}
    assert len(frames) == 8
    short, meta_short = sample_video_frames(_mp4(3), config=FrameSamplingConfig(max_frames=8))
    assert meta_short["timestamps"] == [0.0, 1.0, 2.0] and len(short) == 3
    sample = make_video_sample(key="v0", video=video, caption="a grey square", url="http://x/v.mp4",
                               config=FrameSamplingConfig(max_frames=4), keep_video=True)
    write_shard(str(tmp_path), kind="video_text", shard_index=0, samples=[sample])
    (record,) = list(open_dataset(str(tmp_path / "00000.tar"), kind="video_text"))
    assert record.metadata["timestamps"] == [0.0, 1.0, 2.0, 3.0]
    assert [round(f.getpixel((16, 8))[0] / 20) for f in record.frames] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="http://bad: cannot decode video"):
        sample_video_frames(b"not a video", source="http://bad")


def test_duration_cap_resizing_and_reasons() -> None:
    from PIL import Image

    video = _mp4(3, size=(64, 32))
    frames, meta = sample_video_frames(video, config=FrameSamplingConfig(image_size=16, max_duration_s=10))
    assert meta["timestamps"] == [0.0, 1.0, 2.0] and meta["duration"] == 3.0
    assert [Image.open(io.BytesIO(f)).size for f in frames] == [(16, 8)] * 3
    with pytest.raises(VideoDecodeError, match="http://long: too long") as info:
        sample_video_frames(video, config=FrameSamplingConfig(max_duration_s=2), source="http://long")
    assert info.value.reason == "too_long"
    with pytest.raises(VideoDecodeError) as info:
        sample_video_frames(b"garbage" * 10)
    assert info.value.reason == "corrupt"
