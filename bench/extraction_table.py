"""Extraction quality, side by side: flamboyance vs trafilatura vs readability-lxml.

Runs the shared scorer (`../shared/eval/extraction_eval.py`) once per extractor on every page
set given, then prints one table and optionally writes it as JSON.

    python bench/extraction_table.py --shared ../shared [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

EXTRACTORS = {
    "flamboyance": "flamboyance.preprocess:extract_document",
    "trafilatura": "trafilatura",
    "readability-lxml": "readability-lxml",
}
PAGE_SETS = ("readability-dev", "articles-dev")


def score(scorer: Path, pages: list[Path], extractor: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.json"
        cmd = [sys.executable, str(scorer), "--extractor", extractor, "--json", str(out)]
        for p in pages:
            cmd += ["--pages", str(p)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["results"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    ap.add_argument("--json", type=Path, help="write the table here")
    args = ap.parse_args(argv)
    scorer = args.shared / "eval" / "extraction_eval.py"
    pages = [args.shared / "data" / name for name in PAGE_SETS if (args.shared / "data" / name).is_dir()]
    if not scorer.exists() or not pages:
        print(f"no scorer or page sets under {args.shared}; nothing to measure", file=sys.stderr)
        return 2
    table: dict[str, dict] = {}
    for name, spec in EXTRACTORS.items():
        results = score(scorer, pages, spec)
        table[name] = {s: {k: results[s].get(k) for k in
                           ("text_f1", "image_f1", "image_order", "pages_per_second", "failures")}
                       for s in results}
    header = f"{'page set':<16} {'extractor':<18} {'text F1':>8} {'image F1':>9} {'order':>6} {'pages/s':>8} {'fail':>5}"
    print(header)
    print("-" * len(header))
    for page_set in (p.name for p in pages):
        for name, rows in table.items():
            r = rows[page_set]
            fmt = lambda v, w: f"{v:>{w}.3f}" if isinstance(v, float) else f"{'-':>{w}}"  # noqa: E731
            print(f"{page_set:<16} {name:<18} {fmt(r['text_f1'], 8)} {fmt(r['image_f1'], 9)} "
                  f"{fmt(r['image_order'], 6)} {r['pages_per_second']:>8.1f} {r['failures']:>5}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
