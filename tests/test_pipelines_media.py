"""Media download over a real loopback HTTP server: opt-outs, transient retries only, size caps,
post-download image checks; video frames at 1 fps with PyAV; the DoFn's tagged failures."""

from __future__ import annotations

import io

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from flamboyance.crawl.sample_media import ShapeSpec, render_video
from flamboyance.pipelines.common import DEAD_LETTER
from flamboyance.pipelines.config import DownloadConfig
from flamboyance.pipelines.media import DownloadImagesFn, ImageDownloader, sample_frames
from PIL import Image
from pipelines_fixtures import MediaServer, make_pipeline, picture, run

CONFIG = DownloadConfig(retries=2, backoff_s=0.01, timeout_s=5, image_size=64, max_image_bytes=200_000,
                        allow_private_hosts=True)
PNG = "image/png"


def _routes() -> dict[str, tuple[int, dict[str, str], bytes]]:
    ok = picture(300, 200)
    return {
        "/ok.png": (200, {"Content-Type": PNG}, ok),
        "/flaky.png": (200, {"Content-Type": PNG}, ok),
        "/noai.png": (200, {"Content-Type": PNG, "X-Robots-Tag": "noai"}, ok),
        "/noimageindex.png": (200, {"Content-Type": PNG, "X-Robots-Tag": "flamboyance: noimageindex"}, ok),
        "/other-bot.png": (200, {"Content-Type": PNG, "X-Robots-Tag": "otherbot: noai"}, ok),
        "/tiny.png": (200, {"Content-Type": PNG}, picture(40, 40)),
        "/wide.png": (200, {"Content-Type": PNG}, picture(400, 100)),
        "/flat.png": (200, {"Content-Type": PNG}, _flat()),
        "/truncated.jpg": (200, {"Content-Type": "image/jpeg"}, picture(300, 200, fmt="JPEG")[:600]),
        "/huge.png": (200, {"Content-Type": PNG}, b"\x89PNG" + b"0" * 300_000),
        "/gone.png": (410, {}, b"gone"),
        "/busy.png": (503, {}, b"busy"),
        "/moved.png": (302, {"Location": "/ok.png"}, b""),
        "/loop.png": (302, {"Location": "/loop.png"}, b""),
    }


def _flat() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (9, 9, 9)).save(buffer, "PNG")
    return buffer.getvalue()


EXPECTED = {"/ok.png": None, "/flaky.png": None, "/other-bot.png": None,
            "/noai.png": "disallowed_by_x_robots_tag", "/noimageindex.png": "disallowed_by_x_robots_tag",
            "/tiny.png": "image_download_too_small", "/wide.png": "image_download_aspect_ratio",
            "/flat.png": "image_single_colour", "/truncated.jpg": "decode_error", "/huge.png": "too_large",
            "/gone.png": "http_410", "/busy.png": "http_503", "/missing.png": "http_404", "/moved.png": None,
            "/loop.png": "too_many_redirects"}


def test_image_downloader_reasons_and_retries():
    server = MediaServer(_routes(), fail_first={"/flaky.png": 2})
    downloader = ImageDownloader(config=CONFIG)
    with server.serve() as base:
        results = {path: downloader.finish(downloader.fetch(base + path)) for path in EXPECTED}
    assert {path: r.reason for path, r in results.items()} == EXPECTED
    ok = results["/ok.png"]
    assert (ok.width, ok.height, ok.original_width, ok.original_height) == (64, 43, 300, 200)
    assert Image.open(io.BytesIO(ok.data)).format == "JPEG"
    # transient failures are retried (flaky: 2 x 503 then 200; busy: 1 + 2 retries), others are not
    assert server.hits["/flaky.png"] == 3 and server.hits["/busy.png"] == 3
    assert server.hits["/gone.png"] == 1 and server.hits["/missing.png"] == 1 and server.hits["/noai.png"] == 1
    assert downloader.finish(downloader.fetch("file:///etc/passwd")).reason == "unsupported_scheme"


def test_private_addresses_are_refused_by_default():
    server = MediaServer(_routes())
    downloader = ImageDownloader(config=DownloadConfig(retries=2, backoff_s=0.01))
    with server.serve() as base:
        result = downloader.finish(downloader.fetch(base + "/ok.png"))
    assert result.reason == "refused_address" and server.hits["/ok.png"] == 0


def test_download_dofn_tags_failures_as_dead_letters():
    server = MediaServer(_routes())
    with server.serve() as base:
        urls = [base + p for p in ("/ok.png", "/noai.png", "/missing.png")]
        p = make_pipeline()
        out = (p | beam.Create([urls])
               | beam.ParDo(DownloadImagesFn(config=CONFIG, namespace="t")).with_outputs(DEAD_LETTER, main="images"))
        assert_that(out.images | beam.Map(lambda kv: (kv[0][len(base):], kv[1].reason)),
                    equal_to([("/ok.png", None), ("/noai.png", "disallowed_by_x_robots_tag"),
                              ("/missing.png", "http_404")]), label="Results")
        assert_that(out[DEAD_LETTER] | beam.Map(lambda d: (d.stage, d.reason, d.ref[len(base):])),
                    equal_to([("image", "disallowed_by_x_robots_tag", "/noai.png"),
                              ("image", "http_404", "/missing.png")]), label="Dead")
        counters = run(p, "t")
    assert counters == {"image.downloaded": 1, "image.disallowed_by_x_robots_tag": 1, "image.http_404": 1}


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return render_video(ShapeSpec("red", "circle", "white", "small"), "left_to_right", seed=1)


def test_sample_frames_at_one_fps(mp4):
    frames, stamps, duration = sample_frames(mp4, fps=1.0, max_frames=8, max_duration_s=60, image_size=32)
    assert len(frames) == len(stamps) and stamps == [float(i) for i in range(len(frames))]
    assert len(frames) == min(8, int(duration) + (duration > int(duration)))
    assert all(max(Image.open(io.BytesIO(f)).size) <= 32 for f in frames)
    two, two_stamps, _ = sample_frames(mp4, fps=1.0, max_frames=2, max_duration_s=60, image_size=32)
    assert two_stamps == [0.0, 1.0] and two == frames[:2]


def test_sample_frames_rejects_corrupt_and_long_videos(mp4):
    with pytest.raises(ValueError, match="^corrupt"):
        sample_frames(b"not a video at all" * 50, fps=1.0, max_frames=8, max_duration_s=60, image_size=32)
    with pytest.raises(ValueError, match="^too_long"):
        sample_frames(mp4, fps=1.0, max_frames=8, max_duration_s=0.5, image_size=32)
