"""The `flamboyance` console command.

Each subpackage owns its subcommands in `<subpackage>/cli.py`, which exposes
`COMMANDS = {name: (help, add_arguments, run)}`; `add_arguments(parser)` declares the options
and `run(args) -> int` does the work. Subpackages are imported lazily so that `flamboyance
extract` does not pay for importing torch or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that owns it (imported only when that subcommand runs)
_OWNERS: dict[str, str] = {
    "extract": "flamboyance.preprocess.cli",
    "crawl": "flamboyance.crawl.cli",
    "sample-web": "flamboyance.crawl.cli",
    "etl": "flamboyance.pipelines.cli",
    "stats": "flamboyance.shards.cli",
    "pretrain-lm": "flamboyance.trainer.pretrain_lm",
    "train": "flamboyance.trainer.cli",
    "eval": "flamboyance.evaluation.cli",
    "decontaminate": "flamboyance.evaluation.cli",
}

# one-line summaries for `flamboyance --help` (the owners give the full help of each command)
_SUMMARIES: dict[str, str] = {
    "extract": "one HTML page -> its interleaved document (OBELICS JSON)",
    "crawl": "crawl the web politely into WARC (robots.txt, SSRF and size guards)",
    "sample-web": "serve the bundled synthetic website, or write it as a WARC",
    "etl": "Beam ETL jobs: m3w, image-text, video-text shards",
    "stats": "shard statistics, --verify, and an HTML --report",
    "pretrain-lm": "train the small causal LM (text only) a CPU Flamingo keeps frozen",
    "train": "train a Flamingo model on Ray from a YAML config",
    "eval": "few-shot evaluation of a checkpoint (captioning, VQA, classification)",
    "decontaminate": "training shards without the eval sets' images and caption n-grams",
}

# subcommands whose unknown options are passed through (standard Beam pipeline options)
_PASS_THROUGH = {"etl"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flamboyance", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, owner in _OWNERS.items():
        if name != command:
            # Listed for --help without importing the owner.
            sub.add_parser(name, help=_SUMMARIES[name], add_help=False)
            continue
        help_text, add_arguments, _ = importlib.import_module(owner).COMMANDS[name]
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in _OWNERS:
        command = None
    parser = build_parser(command)
    if command in _PASS_THROUGH:
        args, extra = parser.parse_known_args(argv)
        args.pipeline_args = extra
    else:
        args = parser.parse_args(argv)
    _, _, run = importlib.import_module(_OWNERS[args.command]).COMMANDS[args.command]
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
