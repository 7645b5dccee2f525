"""Print where `make demo` put everything, and its headline numbers.

    python scripts/demo_summary.py --data data --run-dir runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _last_metrics(run_dir: Path) -> tuple[dict | None, dict | None]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None, None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return (rows[0], rows[-1]) if rows else (None, None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    args = ap.parse_args(argv)
    shards = args.data / "shards"

    print("Where everything is")
    places = [("crawled WARC", args.data / "web"),
              ("m3w shards", shards / "m3w"),
              ("image-text shards", shards / "image_text"),
              ("video-text shards", shards / "video_text"),
              ("HTML report", args.data / "report" / "index.html"),
              ("training run (metrics.jsonl, gate plot)", args.run_dir),
              ("checkpoints", args.run_dir / "final"),
              ("TensorBoard logs", args.run_dir / "tensorboard"),
              ("evaluation results", args.run_dir / "eval_final.json")]
    for name, path in places:
        print(f"  {name:<42} {path}{'' if path.exists() else '  (missing)'}")

    print("\nHeadline numbers")
    for name in ("m3w", "image_text/train", "image_text/heldout", "video_text"):
        stats = _load(shards / name / "dataset_stats.json")
        if stats:
            print(f"  {name:<20} shards={stats.get('shards')} samples={stats.get('samples')} "
                  f"images={stats.get('images')} failures={sum((stats.get('failures') or {}).values())}")
    first, last = _last_metrics(args.run_dir)
    if first and last:
        losses = sorted(k for k in last if k.startswith("loss/"))
        moves = ", ".join(f"{k[5:]} {first[k]:.3f} -> {last[k]:.3f}" for k in losses if k in first)
        print(f"  training: {last['step']} steps; loss {moves}")
    untrained, trained = _load(args.run_dir / "eval_init.json"), _load(args.run_dir / "eval_final.json")
    if untrained and trained:
        metric = trained["metric"]
        print(f"  few-shot {trained['task']} on the held-out split ({metric}, mean over seeds):")
        print(f"    {'shots':>5}  {'untrained':>10}  {'trained':>10}")
        for shots, row in trained["results"].items():
            before = untrained["results"].get(shots, {}).get("mean", float("nan"))
            print(f"    {shots:>5}  {before:>10.2f}  {row['mean']:>10.2f}")
        best_gain = max(row["mean"] - untrained["results"][s]["mean"] for s, row in trained["results"].items())
        verdict = "learned" if best_gain > 0 else "did NOT beat the untrained model"
        print(f"  -> the trained model {verdict} (best gain {best_gain:+.2f} {metric})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
