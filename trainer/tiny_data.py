"""Tiny learnable shards for trainer tests and benchmarks: coloured shapes whose captions name
the colour and the shape ("a red circle on a white background"), written with
``flamboyance.shards.ShardWriter`` as m3w, image_text and video_text datasets."""

from __future__ import annotations

import random
from pathlib import Path

from flamboyance.crawl.sample_media import ShapeSpec, render_image
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN

# A learnable subset of the sample web's colours and shapes (drawn by the same code).
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


def _spec(colour: str, shape: str) -> ShapeSpec:
    return ShapeSpec(colour, shape, "white", "large")


def shape_png(colour: str, shape: str, *, size: int = 32, seed: int = 0) -> bytes:
    """A PNG of one coloured shape on white (the position varies with ``seed``)."""
    return render_image(_spec(colour, shape), seed=seed, width=size, height=size, fmt="PNG")


def caption(colour: str, shape: str) -> str:
    """The caption of a shape image."""
    return _spec(colour, shape).caption


def _pick(rng: random.Random) -> tuple[str, str]:
    return rng.choice(COLOURS), rng.choice(SHAPES)


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
                            image=shape_png(colour, shape, seed=rng.randrange(2**31)),
                            caption=caption(colour, shape),
                            metadata={"url": f"http://127.0.0.1/it/{i}.png"},
                        )
                    )
                elif kind == "video_text":
                    colour, shape = _pick(rng)
                    frame_bytes = [shape_png(colour, shape, seed=i * frames + t) for t in range(frames)]
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
