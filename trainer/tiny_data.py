"""Tiny learnable shards for trainer tests and benchmarks: coloured shapes whose captions name
the colour and the shape ("a red circle on a white background"), written with
``flamboyance.shards.ShardWriter`` as m3w, image_text and video_text datasets."""

from __future__ import annotations

import io
import random
from pathlib import Path

from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 60, 220),
    "yellow": (235, 210, 40),
    "purple": (130, 40, 160),
    "orange": (240, 140, 20),
}
SHAPES = ("circle", "square", "triangle")


def shape_png(colour: str, shape: str, *, size: int = 32, offset: tuple[int, int] = (0, 0)) -> bytes:
    """A PNG of one coloured shape on white."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    dx, dy = offset
    box = (size // 5 + dx, size // 5 + dy, size - size // 5 + dx, size - size // 5 + dy)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def caption(colour: str, shape: str) -> str:
    """The caption of a shape image."""
    return f"a {colour} {shape} on a white background"


def _pick(rng: random.Random) -> tuple[str, str]:
    return rng.choice(list(COLOURS)), rng.choice(SHAPES)


def write_tiny_shards(
    root: str | Path,
    *,
    samples: int = 64,
    per_shard: int = 16,
    seed: int = 0,
    kinds: tuple[str, ...] = ("m3w", "image_text", "video_text"),
    frames: int = 4,
) -> dict[str, str]:
    """Write ``samples`` records of each kind under ``root/<kind>`` (shards of ``per_shard``);
    returns kind -> dataset folder."""
    from flamboyance.shards import ImageTextSample, M3WSample, ShardWriter, ShardWriterConfig, VideoTextSample

    root = Path(root)
    out: dict[str, str] = {}
    for kind in kinds:
        rng = random.Random(f"{seed}/{kind}")
        folder = root / kind
        config = ShardWriterConfig(max_samples=per_shard)
        with ShardWriter(str(folder), kind=kind, config=config) as writer:
            for i in range(samples):
                if kind == "image_text":
                    colour, shape = _pick(rng)
                    writer.write(
                        ImageTextSample(
                            key=f"it{i:05d}",
                            image=shape_png(colour, shape, offset=(rng.randint(-3, 3), rng.randint(-3, 3))),
                            caption=caption(colour, shape),
                            metadata={"url": f"http://127.0.0.1/it/{i}.png"},
                        )
                    )
                elif kind == "video_text":
                    colour, shape = _pick(rng)
                    frame_bytes = [shape_png(colour, shape, offset=(t - frames // 2, 0)) for t in range(frames)]
                    writer.write(
                        VideoTextSample(
                            key=f"vid{i:05d}",
                            frames=frame_bytes,
                            caption=f"a {colour} {shape} moving to the right",
                            metadata={
                                "duration": float(frames),
                                "fps": 1.0,
                                "timestamps": [float(t) for t in range(frames)],
                                "url": f"http://127.0.0.1/v/{i}.mp4",
                            },
                        )
                    )
                else:
                    writer.write(_m3w_sample(i, rng, M3WSample))
        out[kind] = str(folder)
    return out


def _m3w_sample(i: int, rng: random.Random, sample_type: type) -> object:
    count = rng.randint(1, 4)
    texts: list[str | None] = []
    images: list[str | None] = []
    payloads: list[bytes] = []
    sequence = f"Our gallery of shapes, page {i}."
    texts.append(sequence)
    images.append(None)
    for j in range(count):
        colour, shape = _pick(rng)
        paragraph = f"This picture shows {caption(colour, shape)}. The {shape} is {colour}."
        images += [f"http://127.0.0.1/d{i}/img{j}.png", None]
        texts += [None, paragraph]
        payloads.append(shape_png(colour, shape))
        sequence += (EOC_TOKEN if j else "") + IMAGE_TOKEN + paragraph
    sequence += EOC_TOKEN
    # OBELICS layout: parallel lists where exactly one of texts[k] / images[k] is set
    node_texts, node_images = [], []
    for t, im in zip(texts, images):
        if t is None and im is None:
            continue
        node_texts.append(t)
        node_images.append(im)
    document = {
        "url": f"http://127.0.0.1/d{i}",
        "texts": node_texts,
        "images": node_images,
        "metadata": [None] * len(node_texts),
        "general_metadata": {"url": f"http://127.0.0.1/d{i}"},
        "text": sequence,
        "image_sizes": [[32, 32]] * count,
        "language": "en",
    }
    return sample_type(key=f"doc{i:05d}", document=document, images=payloads)


__all__ = ["COLOURS", "SHAPES", "caption", "shape_png", "write_tiny_shards"]
