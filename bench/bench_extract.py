"""Extraction speed: pages/s of `extract_document` vs trafilatura on the same pages, same core.

Pages come from the shared real page sets (`<shared>/data/readability-dev/*/source.html`,
`<shared>/data/articles-dev/html/*.html.gz`) when present, else from a small built-in set of
synthetic article pages. Both extractors run in this process, pinned to one CPU core, in
alternating rounds (ours, theirs, ours, ...) so that load from other processes hits both alike;
each extractor's figure is its best round. Prints the ratio and writes a JSON report.

    python bench/bench_extract.py --shared ../shared --rounds 3 --json bench/out/bench_extract.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flamboyance.preprocess import ExtractionError, extract_document

READABILITY_URL = "http://fakehost/test/page.html"


def load_pages(shared: Path, limit: int | None) -> tuple[list[tuple[str, str]], str]:
    """[(html, url)] from the shared page sets, or synthetic pages when they are absent."""
    pages: list[tuple[str, str]] = []
    readability = shared / "data" / "readability-dev"
    if readability.is_dir():
        for source in sorted(readability.glob("*/source.html")):
            pages.append((source.read_text(encoding="utf-8"), READABILITY_URL))
    articles = shared / "data" / "articles-dev"
    if (articles / "ground-truth.json").exists():
        truth = json.loads((articles / "ground-truth.json").read_text(encoding="utf-8"))
        for key, item in sorted(truth.items()):
            path = articles / "html" / f"{key}.html.gz"
            if path.exists():
                pages.append((gzip.decompress(path.read_bytes()).decode("utf-8", "replace"), item["url"]))
    source = f"{shared}/data" if pages else "synthetic"
    if not pages:
        pages = [(synthetic_page(i), f"https://example.org/news/{i}.html") for i in range(60)]
    return pages[:limit] if limit else pages, source


def synthetic_page(seed: int) -> str:
    """An article page with the usual furniture (nav, sidebar, footer, scripts, lazy images)."""
    words = ["river", "market", "council", "garden", "station", "harbour", "library", "festival"]
    paragraphs = "".join(
        f"<p>{' '.join(words[(seed + i + j) % len(words)] for j in range(40))}, and more, said the "
        f"report number {i}.</p>" + (f'<figure><img data-src="/img/{seed}-{i}.jpg" src="data:image/gif;base64,R0l"'
                                     f' width="640" height="480"><figcaption>Figure {i}</figcaption></figure>'
                                     if i % 3 == 0 else "")
        for i in range(12))
    nav = "".join(f'<li><a href="/s/{i}">Section {i}</a></li>' for i in range(30))
    return (f"<!doctype html><html><head><title>Story {seed}</title><script>var x = {seed};</script>"
            f"<style>p {{margin: 0}}</style></head><body><header><nav><ul>{nav}</ul></nav></header>"
            f'<div class="layout"><main><article><h1>Story {seed}</h1>{paragraphs}</article></main>'
            f'<aside class="sidebar"><ul>{nav}</ul></aside></div><footer>Copyright</footer></body></html>')


def ours(html: str, url: str) -> object:
    try:
        return extract_document(html, url)
    except ExtractionError:
        return None


def trafilatura_extract(html: str, url: str) -> object:
    import trafilatura

    # The same call the shared scorer uses for its trafilatura peer.
    return trafilatura.extract(html, url=url, include_images=True, output_format="xml",
                               include_comments=False, include_tables=True)


def time_round(fn: Callable[[str, str], object], pages: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for html, url in pages:
        fn(html, url)
    return time.perf_counter() - started


def pin_to_one_core() -> int | None:
    """Run on a single core (both extractors share it); returns the core, None if unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("/work/shared"), help="folder holding data/<page sets>")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per extractor")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many pages")
    ap.add_argument("--json", type=Path, default=Path("bench/out/bench_extract.json"), help="write the report here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    pages, source = load_pages(args.shared, args.limit)
    core = pin_to_one_core()
    try:
        import trafilatura  # noqa: F401
    except ImportError:
        print("trafilatura is not installed (pip install -e '.[test]'); nothing to compare", file=sys.stderr)
        return 2
    # Warm-up: imports, regex compilation, lxml parser set-up.
    ours(*pages[0])
    trafilatura_extract(*pages[0])
    rounds: dict[str, list[float]] = {"flamboyance": [], "trafilatura": []}
    for _ in range(args.rounds):
        rounds["flamboyance"].append(time_round(ours, pages))
        rounds["trafilatura"].append(time_round(trafilatura_extract, pages))
    best = {name: min(times) for name, times in rounds.items()}
    rate = {name: len(pages) / seconds for name, seconds in best.items()}
    ratio = rate["flamboyance"] / rate["trafilatura"]
    report = {
        "pages": len(pages), "page_source": source, "rounds": args.rounds, "core": core,
        "python": platform.python_version(), "seconds_per_round": rounds,
        "pages_per_second": rate, "speed_ratio_vs_trafilatura": ratio,
    }
    print(f"{len(pages)} pages from {source}, best of {args.rounds} rounds, core {core}")
    for name, value in rate.items():
        print(f"  {name:<12} {value:8.1f} pages/s")
    print(f"  ratio flamboyance / trafilatura = {ratio:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
