"""`flamboyance stats PATH_OR_URL [--json FILE] [--report DIR] [--verify]`."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="dataset root (manifest.json or img2dataset output), tar URL or brace "
                                     "pattern; any fsspec URL")
    parser.add_argument("--json", metavar="FILE", help="write the numbers as JSON to FILE")
    parser.add_argument("--report", metavar="DIR", help="write PNG plots and an index.html with sample documents")
    parser.add_argument("--verify", action="store_true",
                        help="re-check every shard's sha256, bytes and sample count against the manifest")
    parser.add_argument("--tokenizer", help="count text tokens with this (local) Hugging Face tokenizer "
                                            "instead of words")
    parser.add_argument("--scan", action="store_true", help="ignore the parquet files and scan the tars")
    parser.add_argument("--report-samples", type=int, default=8, metavar="N",
                        help="documents shown in the report (default 8)")


def run(args: argparse.Namespace) -> int:
    from .stats import compute_stats, print_stats, verify

    if args.verify:
        result = verify(args.path)
        for problem in result.problems:
            print(f"MISMATCH {problem}", file=sys.stderr)
        print(f"verified {result.shards} shards, {result.samples} samples: "
              f"{'OK' if result.ok else f'{len(result.problems)} problem(s)'}")
        if not result.ok:
            return 1
    stats = compute_stats(args.path, tokenizer=args.tokenizer, scan=args.scan)
    print_stats(stats, title=args.path)
    if args.json:
        import fsspec

        with fsspec.open(args.json, "w") as handle:
            json.dump(stats, handle, indent=2, sort_keys=True)
    if args.report:
        from .report import write_report

        index = write_report(args.path, args.report, stats=stats, num_samples=args.report_samples)
        print(f"report: {index}")
    for url, sizes in stats["size_mismatches"].items():
        actual = "missing" if sizes["actual"] is None else f"{sizes['actual']} bytes"
        print(f"MISMATCH {url}: {actual}, manifest says {sizes['manifest']} bytes (truncated or replaced; "
              f"run with --verify)", file=sys.stderr)
    return 1 if stats["size_mismatches"] else 0


COMMANDS = {"stats": ("Statistics, integrity check and HTML report of a shard dataset", add_arguments, run)}
