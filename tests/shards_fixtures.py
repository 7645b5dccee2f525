"""Tiny literal data for the shards tests (imported by tests/test_shards_*.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from flamboyance.shards import ImageTextSample, M3WSample, ShardWriter, ShardWriterConfig, VideoTextSample
from PIL import Image

COLOURS = [(255, 0, 0), (0, 128, 0), (0, 0, 255), (255, 255, 0), (128, 0, 128), (0, 255, 255)]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def image_text_samples(n: int) -> list[ImageTextSample]:
    return [ImageTextSample(key=f"it{i:04d}", image=png(COLOURS[i % 6], (8 + i, 6)),
                            caption=f"a shape number {i}", metadata={"url": f"http://example.com/{i}.png"})
            for i in range(n)]


def m3w_samples(n: int) -> list[M3WSample]:
    out = []
    for i in range(n):
        k = 1 + i % 3  # 1..3 images
        texts: list[str | None] = []
        images: list[str | None] = []
        for j in range(k):
            texts += [f"paragraph {j} of document {i}", None]
            images += [None, f"http://example.com/d{i}/img{j}.png"]
        sizes = [[8 + j, 6] for j in range(k)]
        doc = {"url": f"http://example.com/d{i}", "texts": texts, "images": images,
               "metadata": [None] * len(texts), "general_metadata": {"url": f"http://example.com/d{i}"},
               "text": " <image> ".join(t for t in texts if t) + " <EOC>", "image_sizes": sizes,
               "warc_filename": "crawl-00000.warc.gz", "warc_offset": 1000 * i, "language": "en",
               "filter_scores": {"stop_word_ratio": 0.4}}
        out.append(M3WSample(key=f"doc{i:04d}", document=doc,
                             images=[png(COLOURS[(i + j) % 6], (8 + j, 6)) for j in range(k)]))
    return out


def video_samples(n: int, frames: int = 3) -> list[VideoTextSample]:
    return [VideoTextSample(key=f"vid{i:04d}", frames=[jpeg(COLOURS[(i + t) % 6]) for t in range(frames)],
                            caption=f"a moving shape {i}",
                            metadata={"duration": float(frames), "fps": 1.0,
                                      "timestamps": [float(t) for t in range(frames)],
                                      "url": f"http://example.com/v{i}.mp4"})
            for i in range(n)]


SAMPLES = {"image_text": image_text_samples, "m3w": m3w_samples, "video_text": video_samples}


def write_dataset(out: Path | str, kind: str, n: int, per_shard: int) -> list:
    samples = SAMPLES[kind](n)
    with ShardWriter(str(out), kind=kind, config=ShardWriterConfig(max_samples=per_shard)) as writer:
        for s in samples:
            writer.write(s)
    return samples


def read_members(tar_path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def write_members(tar_path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def all_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}
