"""Print where `make demo` put everything, and its headline numbers; or, with --compare, the
few-shot curves of several runs side by side (`make ablation`).

    python scripts/demo_summary.py --data data --run-dir runs/demo
    python scripts/demo_summary.py --compare "with M3W=runs/demo" "without M3W=runs/ablation/no_m3w"
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


EVALS = (("novel-names", "eval_novel_names_{}.json"), ("captioning", "eval_{}.json"))
"""Task and result file (per checkpoint: init / final) of the demo's evaluations."""


def _side_by_side(title: str, columns: list[tuple[str, dict | None]]) -> list[str]:
    """A table: one row per shot count, one column per result (mean over seeds, per-seed values)."""
    present = [(name, result) for name, result in columns if result]
    if not present:
        return []
    first = present[0][1]
    metric = first["metric"]
    chance = f", chance {first['chance']:.0f}" if "chance" in first else ""
    seeds = ",".join(str(s) for s in first.get("seeds", []))
    lines = [f"  {title} ({metric}, mean over seeds {seeds}{chance}; per seed in brackets):",
             "    " + f"{'shots':>5}" + "".join(f"  {name:>24}" for name, _ in present)]
    for shots in first["results"]:
        cells = []
        for _, result in present:
            row = result["results"].get(shots)
            if row is None:
                cells.append(f"  {'-':>24}")
                continue
            per_seed = "/".join(f"{v:.1f}" for v in row["per_seed"].values())
            cell = f"{row['mean']:.2f} [{per_seed}]"
            cells.append(f"  {cell:>24}")
        lines.append("    " + f"{shots:>5}" + "".join(cells))
    return lines


def compare(specs: list[str]) -> int:
    """Print the final checkpoints' curves of `NAME=RUN_DIR` runs side by side."""
    runs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"--compare expects NAME=RUN_DIR, got {spec!r}")
        runs.append((name, Path(path)))
    for task, pattern in EVALS:
        lines = _side_by_side(f"few-shot {task}", [(n, _load(p / pattern.format("final"))) for n, p in runs])
        print("\n".join(lines) if lines else f"  few-shot {task}: no results")
    for name, path in runs:
        first, last = _last_metrics(path)
        if first and last:
            losses = sorted(k for k in last if k.startswith("loss/"))
            moves = ", ".join(f"{k[5:]} {first[k]:.3f} -> {last[k]:.3f}" for k in losses if k in first)
            print(f"  {name}: {last['step']} steps; loss {moves}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--lm-dir", type=Path, default=Path("runs/lm"))
    ap.add_argument("--compare", nargs="+", metavar="NAME=RUN_DIR",
                    help="print these runs' few-shot curves side by side instead")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    shards = args.data / "shards"

    print("Where everything is")
    places = [("crawled WARC", args.data / "web"),
              ("m3w shards", shards / "m3w"),
              ("image-text shards", shards / "image_text"),
              ("video-text shards", shards / "video_text"),
              ("HTML report", args.data / "report" / "index.html"),
              ("pretrained frozen LM (pretrain_lm.json)", args.lm_dir),
              ("training run (metrics.jsonl, gate plot)", args.run_dir),
              ("checkpoints", args.run_dir / "final"),
              ("TensorBoard logs", args.run_dir / "tensorboard"),
              ("evaluation results", args.run_dir / "eval_final.json"),
              ("novel-names results", args.run_dir / "eval_novel_names_final.json")]
    optional = {"pretrained frozen LM (pretrain_lm.json)", "novel-names results"}  # PRETRAIN_LM=1 only
    for name, path in places:
        if name in optional and not path.exists():
            continue
        print(f"  {name:<42} {path}{'' if path.exists() else '  (missing)'}")

    print("\nHeadline numbers")
    for name in ("m3w", "image_text/train", "image_text/heldout", "video_text"):
        stats = _load(shards / name / "dataset_stats.json")
        if stats:
            print(f"  {name:<20} shards={stats.get('shards')} samples={stats.get('samples')} "
                  f"images={stats.get('images')} failures={sum((stats.get('failures') or {}).values())}")
    lm_report = _load(args.lm_dir / "pretrain_lm.json")
    if lm_report:
        acc = lm_report["induction_accuracy"]
        print(f"  pretrained LM: {lm_report['parameters'] / 1e6:.2f}M parameters, loss {lm_report['loss'][0][1]} -> "
              f"{lm_report['loss'][-1][1]}; held-out name copying {acc['before']:.2f} -> {acc['after']:.2f} "
              f"(chance 0.50)")
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
    for line in _side_by_side("few-shot novel-names (made-up names in context)",
                              [("untrained", _load(args.run_dir / EVALS[0][1].format("init"))),
                               ("trained", _load(args.run_dir / EVALS[0][1].format("final")))]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
