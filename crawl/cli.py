"""`flamboyance crawl` and `flamboyance sample-web` subcommands."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

__all__ = ["COMMANDS"]


def _read_seeds(source: str) -> list[str]:
    if source.startswith(("http://", "https://")):
        return [source]
    path = Path(source)
    if not path.is_file():
        raise SystemExit(f"flamboyance crawl: seeds file {source!r} not found (one URL per line, or pass a URL)")
    seeds = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seeds.append(line)
    return seeds


def _add_crawl_arguments(parser: argparse.ArgumentParser) -> None:
    from flamboyance.crawl.crawler import CrawlConfig

    defaults = CrawlConfig()
    parser.add_argument("seeds", metavar="SEEDS", help="file with one seed URL per line ('#' comments), or one URL")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (WARC + crawl_log.jsonl)")
    parser.add_argument("--max-pages", type=int, default=defaults.max_pages, help="page fetches (default %(default)s)")
    parser.add_argument("--same-host", action="store_true", help="only follow links to the seeds' hosts")
    parser.add_argument("--allow-private-hosts", action="store_true",
                        help="allow loopback/private/link-local targets (refused by default)")
    parser.add_argument("--delay", type=float, default=defaults.delay,
                        help="seconds between requests to one host (default %(default)s)")
    parser.add_argument("--max-depth", type=int, default=None, help="link depth limit (default: none)")
    parser.add_argument("--connect-timeout", type=float, default=defaults.connect_timeout)
    parser.add_argument("--read-timeout", type=float, default=defaults.read_timeout)
    parser.add_argument("--total-timeout", type=float, default=defaults.total_timeout)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)


def _run_crawl(args: argparse.Namespace) -> int:
    from flamboyance.crawl.crawler import crawl

    seeds = _read_seeds(args.seeds)
    try:
        result = crawl(
            seeds,
            out_dir=args.out,
            max_pages=args.max_pages,
            same_host=args.same_host,
            allow_private_hosts=args.allow_private_hosts,
            delay=args.delay,
            max_depth=args.max_depth,
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            total_timeout=args.total_timeout,
            max_body_bytes=args.max_body_bytes,
        )
    except OSError as exc:
        print(f"flamboyance crawl: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    summary = {
        "warc": str(result.warc_path),
        "log": str(result.log_path),
        "pages_fetched": result.pages_fetched,
        "pages_stored": result.pages_stored,
        "stopped": result.stopped,
        "outcomes": dict(sorted(result.outcomes.items())),
    }
    print(json.dumps(summary, indent=2))
    if result.error:
        print(f"flamboyance crawl: stopped early, {result.error}; the {result.pages_stored} pages stored "
              f"before are in {result.warc_path}", file=sys.stderr)
        return 1
    return 0 if result.stopped != "interrupted" else 130


def _add_sample_web_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="serve the sample web on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--port", type=int, default=8000, help="port (0 = any free port; default %(default)s)")
    warc = actions.add_parser("warc", help="write the sample web's crawlable pages as a WARC")
    warc.add_argument("output", metavar="OUT.warc.gz")
    warc.add_argument("--base-url", default="http://127.0.0.1:8000/",
                      help="URL the pages are recorded under (default %(default)s)")
    for sub in (serve, warc):
        sub.add_argument("--pages", type=int, default=300, help="number of articles (default %(default)s)")
        sub.add_argument("--naming-pages", type=int, default=0,
                         help="number of naming stories (made-up names bound to the page's objects; default %(default)s)")
        sub.add_argument("--seed", type=int, default=0, help="generator seed (default %(default)s)")


def _run_sample_web(args: argparse.Namespace) -> int:
    from flamboyance.crawl.sample_web import SampleWeb, serve_sample_web

    web = SampleWeb(seed=args.seed, num_pages=args.pages, num_naming_pages=args.naming_pages)
    if args.action == "warc":
        count = web.write_warc(args.output, base_url=args.base_url)
        print(f"wrote {count} pages to {args.output}")
        return 0
    try:
        with serve_sample_web(web, port=args.port) as base_url:
            print(f"sample web ({args.pages} articles) at {base_url} -- Ctrl-C to stop", flush=True)
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                print("stopped", file=sys.stderr)
    except OSError as exc:  # the port is taken or not ours to bind
        print(f"flamboyance sample-web: cannot serve on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


COMMANDS = {
    "crawl": ("Crawl HTML pages breadth-first from seed URLs into a WARC (robots.txt, politeness, SSRF guards).",
              _add_crawl_arguments, _run_crawl),
    "sample-web": ("Serve the deterministic synthetic sample website, or write it as a WARC.",
                   _add_sample_web_arguments, _run_sample_web),
}
