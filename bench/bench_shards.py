"""Benchmarks for flamboyance.shards (not tests): prints a table and writes JSON.

    .venv/bin/python bench/bench_shards.py [--out bench/out/shards.json] [--quick]

1. Streaming read throughput of `open_dataset(decode=False)` vs a plain `tarfile` read of the same
   shards (target: >= 0.8x), plus decoded records for reference.
2. `compute_stats` over 1,000 shards' parquet metadata (target: a few seconds).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from flamboyance.shards import ImageTextSample, ShardWriter, ShardWriterConfig, write_manifest, write_shard
from flamboyance.shards.stats import compute_stats
from PIL import Image


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _samples(n: int, *, size: int, seed: int = 0, prefix: str = "s") -> list[ImageTextSample]:
    rng = np.random.default_rng(seed)
    pool = [_jpeg(rng, size) for _ in range(16)]  # varied but cheap to make
    return [ImageTextSample(key=f"{prefix}{i:07d}", image=pool[i % 16], caption=f"caption {i} " * 3,
                            metadata={"url": f"http://example.com/{i}.jpg"}) for i in range(n)]


def _best_of(fn, repeats: int) -> tuple[float, int]:
    best, result = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_read(root: Path, *, shards: int, per_shard: int, image_size: int, repeats: int) -> dict:
    with ShardWriter(str(root), kind="image_text", config=ShardWriterConfig(max_samples=per_shard)) as writer:
        for sample in _samples(shards * per_shard, size=image_size):
            writer.write(sample)
    tars = sorted(root.glob("*.tar"))
    total_bytes = sum(p.stat().st_size for p in tars)

    def plain_tarfile() -> int:
        n = 0
        for path in tars:
            with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
                for member in tar:
                    tar.extractfile(member).read()
                    n += 1
        return n

    from flamboyance.shards import open_dataset

    def stream(decode: bool) -> int:
        return sum(1 for _ in open_dataset(str(root), decode=decode))

    t_tar, members = _best_of(plain_tarfile, repeats)
    t_raw, samples = _best_of(lambda: stream(False), repeats)
    t_dec, decoded = _best_of(lambda: stream(True), max(1, repeats // 2))
    assert samples == decoded == shards * per_shard and members == 3 * samples
    mb = total_bytes / 1e6
    return {"shards": shards, "samples": samples, "bytes": total_bytes,
            "tarfile_s": t_tar, "tarfile_MBps": mb / t_tar,
            "open_dataset_raw_s": t_raw, "open_dataset_raw_MBps": mb / t_raw,
            "open_dataset_decoded_s": t_dec, "open_dataset_decoded_samples_per_s": samples / t_dec,
            "raw_vs_tarfile": t_tar / t_raw}


def bench_stats(root: Path, *, shards: int, per_shard: int) -> dict:
    samples = _samples(per_shard, size=16)
    start = time.perf_counter()
    infos = []
    for index in range(shards):
        batch = [ImageTextSample(key=f"k{index:05d}{i:04d}", image=s.image, caption=s.caption, metadata=s.metadata)
                 for i, s in enumerate(samples)]
        rows = [{"key": f"k{index:05d}9999", "status": "failed_to_download", "error_message": "HTTP 404"}]
        infos.append(write_shard(str(root), kind="image_text", shard_index=index, samples=batch, rows=rows))
    write_manifest(str(root), kind="image_text", shards=infos)
    t_write = time.perf_counter() - start
    t_stats, stats = _best_of(lambda: compute_stats(str(root), progress=False), 2)
    assert stats["shards"] == shards and stats["samples"] == shards * per_shard
    assert stats["failures"] == {"HTTP 404": shards}
    return {"shards": shards, "samples": stats["samples"], "write_s": t_write, "stats_s": t_stats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/shards.json")
    parser.add_argument("--quick", action="store_true", help="smaller read benchmark")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        read = bench_read(Path(tmp) / "read", shards=8 if args.quick else 20, per_shard=250,
                          image_size=64, repeats=3)
        stats = bench_stats(Path(tmp) / "stats", shards=1000, per_shard=10)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"flamboyance.shards benchmarks ({platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} cpus)")
    table.add_column("benchmark")
    table.add_column("result", justify="right")
    table.add_column("target", justify="right")
    table.add_row(f"plain tarfile read ({read['shards']} shards, {read['bytes'] / 1e6:.1f} MB)",
                  f"{read['tarfile_MBps']:.0f} MB/s", "")
    table.add_row("open_dataset(decode=False)", f"{read['open_dataset_raw_MBps']:.0f} MB/s "
                  f"({read['raw_vs_tarfile']:.2f}x)", ">= 0.8x")
    table.add_row("open_dataset (decoded PIL)", f"{read['open_dataset_decoded_samples_per_s']:.0f} samples/s", "")
    table.add_row(f"write {stats['shards']} shards", f"{stats['write_s']:.1f} s", "")
    table.add_row(f"compute_stats over {stats['shards']} shards' parquet", f"{stats['stats_s']:.2f} s", "a few s")
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"read": read, "stats": stats}, indent=2, sort_keys=True))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
