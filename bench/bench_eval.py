"""Benchmark: the two evaluation costs of the paper's protocol, each against the way it was done
before, measured in the same run.

1. Classification ranking: every option scored after an 8-shot prompt (9 images), with the
   prompt's KV cache reused across options (one prompt forward per query, then only the option
   tokens) vs one full forward of prompt + option per (query, option) pair. Runs alternate; the
   best of ``--repeats`` counts; the two score matrices must agree.
2. RICES top-k: float32 chunks with a running top-k vs one dense float64 queries x support
   matrix. Each variant runs in a fresh process; its peak is the growth of the process's peak
   RSS over its RSS just before the selection (the features already built). The two selections
   must be identical.

    .venv/bin/python bench/bench_eval.py [--out bench/out/eval.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rices_child(variant: str, queries: int, support: int, dim: int, k: int) -> dict:
    """One selection in this process: seconds, peak RSS growth (MB) and a digest of the result."""
    from flamboyance.evaluation.rices import rices_select, rices_select_dense

    gen = torch.Generator().manual_seed(0)
    query_features = torch.randn(queries, dim, generator=gen)
    support_features = torch.randn(support, dim, generator=gen)
    exclude = [[q % support] for q in range(queries)]  # as when the pool is the query set
    select = rices_select if variant == "chunked" else rices_select_dense
    before = _rss_mb()
    start = time.perf_counter()
    selected = select(query_features, support_features, k, exclude=exclude)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_growth_mb": max(0.0, _peak_rss_mb() - before), "rss_before_mb": before,
            "selection": hash(tuple(tuple(s) for s in selected))}


def bench_rices(*, queries: int, support: int, dim: int, k: int) -> dict:
    out = {}
    for variant in ("dense", "chunked"):
        proc = subprocess.run([sys.executable, __file__, "--rices-child", variant, "--rices-queries", str(queries),
                               "--rices-support", str(support), "--rices-dim", str(dim), "--rices-k", str(k)],
                              capture_output=True, text=True, cwd=ROOT, check=True)
        out[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    dense, chunked = out["dense"], out["chunked"]
    if dense["selection"] != chunked["selection"]:
        raise SystemExit("RICES: chunked selection differs from the dense one")
    return {"queries": queries, "support": support, "dim": dim, "k": k,
            "dense_matrix_mb": queries * support * 8 / 2**20, **out,
            "memory_ratio_dense_over_chunked": dense["peak_growth_mb"] / max(chunked["peak_growth_mb"], 1.0),
            "speedup_chunked_vs_dense": dense["seconds"] / chunked["seconds"]}


def bench_ranking(*, queries: int, shots: int, options: int, batch_size: int, repeats: int) -> dict:
    import numpy as np
    from flamboyance.evaluation import EvalExample
    from flamboyance.evaluation.evaluate import _Query, _Runner
    from flamboyance.evaluation.prompts import build_prompt
    from flamboyance.model import Flamingo
    from flamboyance.model.tiny import tiny_config
    from PIL import Image

    model = Flamingo.from_config(tiny_config(init_seed=0, hidden_size=128, num_layers=4)).eval()
    rng = np.random.default_rng(0)

    def image(i: int) -> EvalExample:
        pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        return EvalExample(key=f"img{i}", image=Image.fromarray(pixels), target="x", references=("x",))

    names = [f"class {i} of the benchmark" for i in range(options)]
    batch = []
    for q in range(queries):
        shots_examples = [image(q * (shots + 1) + s) for s in range(shots + 1)]
        prompt = build_prompt("classification", support=[(names[(q + s) % options], None) for s in range(shots)])
        batch.append(_Query(example=shots_examples[-1], prompt=prompt, images=tuple(shots_examples)))
    runner = _Runner(model, batch_size=batch_size, cache_images=queries * (shots + 1))
    times: dict[str, list[float]] = {"cached": [], "full": []}
    scores = {}
    with torch.inference_mode():
        runner.option_scores(batch[:1], names)  # warm-up (and decodes every image into the pixel cache)
        for _ in range(repeats):
            for variant in ("full", "cached"):
                start = time.perf_counter()
                scores[variant] = runner.option_scores(batch, names, reuse_prompt_cache=variant == "cached")
                times[variant].append(time.perf_counter() - start)
    difference = float((scores["cached"] - scores["full"]).abs().max())
    if difference > 1e-3:
        raise SystemExit(f"ranking: cached scores differ from full-forward ones by {difference}")
    best = {variant: min(t) for variant, t in times.items()}
    return {"queries": queries, "shots": shots, "options": options, "batch_size": batch_size, "repeats": repeats,
            "cached_s": best["cached"], "full_s": best["full"], "max_abs_score_difference": difference,
            "speedup_cached_vs_full": best["full"] / best["cached"], "all_times": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "eval.json")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--rices-child", choices=["dense", "chunked"], help=argparse.SUPPRESS)
    ap.add_argument("--rices-queries", type=int, default=2000)
    ap.add_argument("--rices-support", type=int, default=50000)
    ap.add_argument("--rices-dim", type=int, default=256)
    ap.add_argument("--rices-k", type=int, default=32)
    args = ap.parse_args(argv)
    if args.rices_child:
        torch.set_num_threads(1)
        print(json.dumps(rices_child(args.rices_child, args.rices_queries, args.rices_support, args.rices_dim,
                                     args.rices_k)))
        return 0
    torch.set_num_threads(1)  # a shared CPU: one thread keeps the two variants comparable
    quick = args.quick
    ranking = bench_ranking(queries=4 if quick else 8, shots=8, options=10, batch_size=8, repeats=1 if quick else 3)
    print(f"ranking: cached {ranking['cached_s']:.2f}s, full {ranking['full_s']:.2f}s -> "
          f"{ranking['speedup_cached_vs_full']:.1f}x", flush=True)
    sizes = (500, 20000) if quick else (args.rices_queries, args.rices_support)
    rices = bench_rices(queries=sizes[0], support=sizes[1], dim=args.rices_dim, k=args.rices_k)
    print(f"rices: dense {rices['dense']['peak_growth_mb']:.0f} MB {rices['dense']['seconds']:.2f}s, chunked "
          f"{rices['chunked']['peak_growth_mb']:.0f} MB {rices['chunked']['seconds']:.2f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ranking": ranking, "rices": rices}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
