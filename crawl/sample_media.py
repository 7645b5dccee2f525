"""Deterministic images and videos for the sample web: coloured shapes whose captions say what
they show ("a small red circle on a white background"), so a model trained on the sample web
can learn colour and shape words."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COLOURS", "BACKGROUNDS", "SHAPES", "MOTIONS", "ShapeSpec", "render_image", "render_video", "render_logo",
           "render_banner"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 210, 25),
    "orange": (245, 135, 20),
    "purple": (125, 50, 170),
    "pink": (240, 125, 185),
    "brown": (125, 80, 40),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "gray": (135, 135, 135),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
MOTIONS = {
    "left_to_right": "moving from left to right",
    "top_to_bottom": "moving from top to bottom",
    "circle": "moving in a circle",
    "bounce": "bouncing up and down",
}


@dataclass(frozen=True, slots=True)
class ShapeSpec:
    """What an image shows; `caption` is the plain description used as alt text."""

    colour: str
    shape: str
    background: str
    size: str  # "small" | "large"

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} on a {self.background} background"


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.9), (cx - r, cy + r * 0.9)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)], fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        w = r * 0.35
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _canvas(spec: ShapeSpec, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    # Light per-pixel noise so images are not flat (real photos never are) yet stay compressible.
    base = np.array(BACKGROUNDS[spec.background], dtype=np.int16)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def render_image(spec: ShapeSpec, *, seed: int, width: int = 224, height: int = 224, fmt: str = "PNG") -> bytes:
    """Encode one shape image (PNG or JPEG); same arguments give the same bytes."""
    rng = np.random.default_rng(seed)
    image = _canvas(spec, width, height, rng)
    side = min(width, height)
    r = side * (0.18 if spec.size == "small" else 0.36) * float(rng.uniform(0.9, 1.1))
    cx = width / 2 + float(rng.uniform(-1, 1)) * (width / 2 - r - 4)
    cy = height / 2 + float(rng.uniform(-1, 1)) * (height / 2 - r - 4)
    _draw_shape(ImageDraw.Draw(image), spec.shape, cx, cy, r, COLOURS[spec.colour])
    out = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        image.save(out, "JPEG", quality=90)
    else:
        image.save(out, "PNG", optimize=False)
    return out.getvalue()


def render_logo() -> bytes:
    """The site logo (shared by every page; boilerplate the pipelines should drop)."""
    image = Image.new("RGB", (240, 80), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 72, 72), fill=(235, 90, 140))
    draw.text((86, 30), "Flamboyance Gazette", fill=(30, 30, 30))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def render_banner(index: int) -> bytes:
    """An advertising banner (728x90, aspect > 2)."""
    colours = list(COLOURS.values())
    image = Image.new("RGB", (728, 90), colours[index % len(colours)])
    ImageDraw.Draw(image).text((20, 38), "Special offer! Click here", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def video_caption(spec: ShapeSpec, motion: str) -> str:
    """`a red circle moving from left to right on a white background`."""
    return f"a {spec.colour} {spec.shape} {MOTIONS[motion]} on a {spec.background} background"


def _video_codec() -> str:
    import av

    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - codec missing from this av build
            continue
    raise RuntimeError("PyAV has neither libx264 nor mpeg4 encoders; cannot render sample videos")


def render_video(
    spec: ShapeSpec, motion: str, *, seed: int, size: int = 128, seconds: int = 8, fps: int = 8
) -> bytes:
    """An MP4 of the shape moving on its background (deterministic, single-threaded encode)."""
    import av

    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {sorted(MOTIONS)}")
    rng = np.random.default_rng(seed)
    background = _canvas(spec, size, size, rng)
    r = size * 0.16
    out = io.BytesIO()
    container = av.open(out, "w", format="mp4")
    codec = _video_codec()
    stream = container.add_stream(codec, rate=fps)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.thread_count = 1
    if codec == "libx264":
        stream.options = {"preset": "veryfast", "crf": "23", "threads": "1"}
    frames = seconds * fps
    for i in range(frames):
        t = i / max(frames - 1, 1)
        lo, hi = r + 2, size - r - 2
        if motion == "left_to_right":
            cx, cy = lo + (hi - lo) * t, size / 2
        elif motion == "top_to_bottom":
            cx, cy = size / 2, lo + (hi - lo) * t
        elif motion == "circle":
            cx = size / 2 + (size / 2 - r - 2) * math.cos(2 * math.pi * t)
            cy = size / 2 + (size / 2 - r - 2) * math.sin(2 * math.pi * t)
        else:  # bounce
            cx, cy = size / 2, lo + (hi - lo) * abs(math.sin(2 * math.pi * t))
        image = background.copy()
        _draw_shape(ImageDraw.Draw(image), spec.shape, cx, cy, r, COLOURS[spec.colour])
        for packet in stream.encode(av.VideoFrame.from_image(image)):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return out.getvalue()
