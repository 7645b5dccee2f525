"""Benchmarks for flamboyance.trainer (not tests): prints a table and writes JSON.

    .venv/bin/python bench/bench_trainer.py [--config trainer/configs/demo.yaml] [--steps 40]
        [--synthetic] [--out bench/out/trainer.json]

1. Fraction of the step time spent waiting for data on the demo config (target: < 5%), measured
   by the loop itself (time blocked in the loaders / step wall time, summed over workers), after
   the first `--warmup` steps (loader start-up).
2. Samples/s with 2 Ray workers vs 1 (same config, same data, same per-worker batch sizes).

Uses the demo's shards (data/shards/...) when they exist, else (or with --synthetic) tiny
synthetic shards written to a temporary folder (coloured shapes, see trainer/tiny_data.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from flamboyance.trainer.build import INIT_DIR, prepare_run
from flamboyance.trainer.config import load_config
from flamboyance.trainer.launch import train
from flamboyance.trainer.metrics import METRICS_NAME, read_metrics
from flamboyance.trainer.tiny_data import write_tiny_shards

ROOT = Path(__file__).resolve().parents[1]


def _summary(records: list[dict], warmup: int) -> dict:
    steady = [r for r in records if r["step"] > warmup]
    total_time = sum(r["step_time_s"] for r in steady)
    return {
        "steps": len(steady),
        "data_wait_fraction": sum(r["data_wait_fraction"] * r["step_time_s"] for r in steady) / total_time,
        "samples_per_s": sum(r["samples_per_s"] * r["step_time_s"] for r in steady) / total_time,
        "tokens_per_s": sum(r["tokens_per_s"] * r["step_time_s"] for r in steady) / total_time,
        "step_time_s": total_time / len(steady),
        "first_losses": {k: records[0][k] for k in records[0] if k.startswith("loss/")},
        "last_losses": {k: records[-1][k] for k in records[-1] if k.startswith("loss/")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "trainer/configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--synthetic", action="store_true", help="use synthetic shards even if the demo's exist")
    parser.add_argument("--out", default=str(ROOT / "bench/out/trainer.json"))
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()

    os.chdir(ROOT)  # the demo config's paths are relative to the repository
    work = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    base = load_config(args.config, args.overrides)
    overrides = list(args.overrides)
    missing = [u for s in base.data.sources().values() for u in s.urls if not Path(u).exists()]
    data_note = "demo shards"
    if args.synthetic or missing:
        shards = write_tiny_shards(work / "shards", samples=256, per_shard=64, kinds=tuple(base.data.sources()))
        overrides += [f"data.{name}.urls=[{url}]" for name, url in shards.items()]
        data_note = "synthetic shards (trainer/tiny_data.py)" + (f"; missing: {missing}" if missing else "")
    common = [*overrides, f"max_steps={args.steps}", "checkpoint.every=1000000", "logging.progress=false",
              "logging.tensorboard=false"]
    init_cfg = load_config(args.config, [*common, f"run_dir={work / 'init_run'}"]).resolved()
    started = time.perf_counter()
    prepare_run(init_cfg)
    init_seconds = time.perf_counter() - started

    results: dict = {}
    for workers in (1, 2):
        run_dir = work / f"workers{workers}"
        shutil.copytree(work / "init_run" / INIT_DIR, run_dir / INIT_DIR)
        cfg = load_config(args.config, [*common, f"run_dir={run_dir}", f"parallel.num_workers={workers}"])
        started = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - started
        summary = _summary(read_metrics(run_dir / METRICS_NAME), args.warmup)
        summary["wall_s"] = wall
        results[f"workers_{workers}"] = summary

    report = {
        "config": args.config,
        "overrides": overrides,
        "data": data_note,
        "steps": args.steps,
        "warmup_steps_excluded": args.warmup,
        "init_build_s": init_seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
        "speedup_2_vs_1_workers": results["workers_2"]["samples_per_s"] / results["workers_1"]["samples_per_s"],
    }
    print(f"{'workers':>8} {'data wait':>10} {'samples/s':>10} {'tokens/s':>10} {'step s':>8} {'wall s':>8}")
    for workers in (1, 2):
        r = results[f"workers_{workers}"]
        print(f"{workers:>8} {r['data_wait_fraction']:>10.1%} {r['samples_per_s']:>10.1f} {r['tokens_per_s']:>10.0f} "
              f"{r['step_time_s']:>8.3f} {r['wall_s']:>8.1f}")
    print(f"samples/s 2 vs 1 workers: x{report['speedup_2_vs_1_workers']:.2f}  (data: {data_note})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
