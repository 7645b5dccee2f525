"""``flamboyance train --config FILE [key=value ...]``: one training run (see trainer/configs/)."""

from __future__ import annotations

import argparse
import json
import sys

from flamboyance.trainer.config import check_ready, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``flamboyance train``."""
    parser.add_argument("--config", required=True, help="YAML run config (e.g. trainer/configs/demo.yaml)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, type-checked: optim.lr=3e-4 parallel.num_workers=2 data.video_text=null",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    """Load the config, apply overrides, train; prints the last step's metrics as JSON."""
    try:
        cfg = load_config(args.config, args.overrides)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        print(f"flamboyance train: {_one_line(exc)}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.resolved().to_dict(), indent=2))
        return 0
    try:
        check_ready(cfg)  # before the tokenizer is trained or Ray starts
    except ValueError as exc:
        print(f"flamboyance train: {_one_line(exc)}", file=sys.stderr)
        return 2
    from flamboyance.trainer.launch import train

    metrics = train(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("gate/")}, sort_keys=True))
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


COMMANDS = {"train": ("train a Flamingo model (Ray Train; local or RAY_ADDRESS)", add_arguments, run)}
