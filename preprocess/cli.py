"""`flamboyance extract PAGE.html --url URL`: print one page's document (OBELICS layout) as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from flamboyance.preprocess.extract import DEFAULT_CONFIG, ExtractionError, extract_document


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("page", help="the HTML file to read ('-' reads standard input)")
    parser.add_argument("--url", default=None,
                        help="the page's URL, to make image/video URLs absolute (default: the file's file:// URL)")
    parser.add_argument("--content-type", default=None,
                        help='the HTTP Content-Type header the page came with, e.g. "text/html; charset=latin-1"')
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_CONFIG.max_bytes,
                        help="refuse pages larger than this (default: %(default)s)")
    parser.add_argument("--captions-as-text", action="store_true",
                        help="also emit figure captions as text nodes")
    parser.add_argument("--indent", type=int, default=None, help="indent the JSON by this many spaces")


def run(args: argparse.Namespace) -> int:
    if args.page == "-":
        data = sys.stdin.buffer.read()
        url = args.url or "about:stdin"
    else:
        path = Path(args.page)
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"flamboyance extract: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        url = args.url or path.resolve().as_uri()
    headers = {"content-type": args.content_type} if args.content_type else None
    config = dataclasses.replace(DEFAULT_CONFIG, max_bytes=args.max_bytes, captions_as_text=args.captions_as_text)
    try:
        document = extract_document(data, url, headers=headers, config=config)
    except ExtractionError as exc:
        print(f"flamboyance extract: {args.page}: no document ({exc})", file=sys.stderr)
        return 1
    try:
        json.dump(document.to_dict(), sys.stdout, ensure_ascii=False, indent=args.indent)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader left, which is not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps interpreter shutdown quiet
    return 0


COMMANDS = {
    "extract": ("extract one HTML page's main content as an interleaved document (JSON)", add_arguments, run),
}
