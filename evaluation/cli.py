"""`flamboyance eval`: few-shot evaluation of a saved checkpoint on local data."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HELP = "few-shot evaluation (captioning / VQA / classification) of a checkpoint; prints a table, writes JSON"

DATA_HELP = """\
--data by task:
  captioning      COCO-captions JSON (with --images DIR), or an image_text shard folder / URL
                  (e.g. data/shards/image_text/heldout)
  vqa             VQAv2 questions JSON (with --annotations FILE and --images DIR)
  classification  a folder of class folders (ImageNet style: ROOT/<class name>/<image>)
  novel-names     none: episodes are generated (two held-out made-up names bound to shape images in
                  the context; --limit queries per seed, default 200)
--support-data takes the same forms (with --support-images / --support-annotations); without it
support examples come from --data itself, never the query's own image."""


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flamboyance eval`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = DATA_HELP
    parser.add_argument("--checkpoint", required=True, help="model directory written by save_pretrained")
    parser.add_argument("--task", required=True, choices=["captioning", "vqa", "classification", "novel-names"])
    parser.add_argument("--data", help="query data (see below; not for novel-names)")
    parser.add_argument("--images", help="image folder for COCO / VQAv2 --data")
    parser.add_argument("--annotations", help="VQAv2 annotations JSON for --data")
    parser.add_argument("--support-data", help="support (train) data, same forms as --data")
    parser.add_argument("--support-images", help="image folder for COCO / VQAv2 --support-data")
    parser.add_argument("--support-annotations", help="VQAv2 annotations JSON for --support-data")
    parser.add_argument("--shots", type=_int_list, default=[0, 4, 8, 16, 32], help="e.g. 0,4,8,16,32")
    parser.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="e.g. 0,1,2 (mean and spread over them)")
    parser.add_argument("--rices", action="store_true",
                        help="choose shots by vision-feature similarity (most similar last) instead of at random")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--support-limit", type=int, default=None, help="read at most N support examples")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 20 captioning, 5 VQA")
    parser.add_argument("--output", help="results JSON (default: <checkpoint>/eval_<task>.json)")
    parser.add_argument("--cache-dir", default=None,
                        help="RICES feature cache (default: $XDG_CACHE_HOME/flamboyance/rices)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def load_data(task: str, data: str, *, images: str | None, annotations: str | None, limit: int | None = None):
    """The EvalDataset named by the CLI options of one side (query or support)."""
    from flamboyance.evaluation import datasets

    if task == "classification":
        return datasets.load_image_folder(data).head(limit)
    if task == "vqa":
        if not annotations or not images:
            raise SystemExit(f"eval: --task vqa needs the annotations JSON and the image folder for {data}")
        return datasets.load_vqav2(data, annotations, images).head(limit)
    if data.endswith(".json"):
        if not images:
            raise SystemExit(f"eval: COCO captions {data} needs its image folder (--images / --support-images)")
        return datasets.load_coco_captions(data, images).head(limit)
    if "://" not in data and not os.path.exists(data):
        raise SystemExit(f"eval: --data {data} does not exist")
    return datasets.load_image_text_shards(data, limit=limit)


def checkpoint_id(path: str) -> str:
    """Identity of a checkpoint for caches: its resolved path and its files' sizes and mtimes."""
    root = Path(path).resolve()
    parts = [str(root)]
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        parts.append(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}")
    return "\n".join(parts)


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint and data, evaluate, print the table and write the JSON."""
    import torch
    from flamboyance.evaluation.evaluate import evaluate
    from flamboyance.model import Flamingo

    if not Path(args.checkpoint).is_dir():
        raise SystemExit(f"eval: checkpoint directory {args.checkpoint} not found")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.task == "novel-names":
        from flamboyance.evaluation.novel_names import evaluate_novel_names

        model = Flamingo.from_pretrained(args.checkpoint).to(torch.device(args.device))
        result = evaluate_novel_names(model, shots=args.shots, seeds=args.seeds, num_queries=args.limit or 200,
                                      batch_size=args.batch_size, log=log)
        result["checkpoint"] = str(Path(args.checkpoint).resolve())
        return _write(result, args)
    if not args.data:
        raise SystemExit(f"eval: --task {args.task} needs --data")

    # Without --support-data the support pool is the whole query set, so read it all and let
    # evaluate() take the first --limit queries.
    query_limit = args.limit if args.support_data else None
    queries = load_data(args.task, args.data, images=args.images, annotations=args.annotations, limit=query_limit)
    support = None
    if args.support_data:
        support = load_data(args.task, args.support_data, images=args.support_images or args.images,
                            annotations=args.support_annotations, limit=args.support_limit)
    log(f"eval: {min(len(queries), args.limit or len(queries))} queries from {args.data}; support "
        f"{f'{len(support)} from {args.support_data}' if support is not None else 'from the query set'}")
    model = Flamingo.from_pretrained(args.checkpoint).to(torch.device(args.device))
    cache_dir = args.cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "flamboyance", "rices")
    result = evaluate(model, args.task, queries, shots=args.shots, seeds=args.seeds, rices=args.rices,
                      support=support, limit=args.limit, batch_size=args.batch_size, num_beams=args.num_beams,
                      max_new_tokens=args.max_new_tokens, cache_dir=cache_dir,
                      model_id=checkpoint_id(args.checkpoint), log=log)
    result["checkpoint"] = str(Path(args.checkpoint).resolve())
    result["data"] = args.data
    result["support_data"] = args.support_data
    return _write(result, args)


def _write(result: dict, args: argparse.Namespace) -> int:
    """Write the result JSON atomically and print its table."""
    from flamboyance.evaluation.evaluate import format_table

    output = Path(args.output or Path(args.checkpoint) / f"eval_{args.task}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, output)
    print(format_table(result))
    print(f"results written to {output}")
    return 0


DECONTAMINATE_HELP = ("training shards without the eval sets: drop samples showing an eval image (URL / bytes) "
                      "or sharing a caption n-gram with an eval text")

EVAL_SET_HELP = """\
--eval TASK DATA [IMAGES [ANNOTATIONS]], once per eval set, in the forms of `flamboyance eval --data`:
  --eval captioning data/shards/image_text/heldout
  --eval captioning captions_val2014.json val2014/
  --eval vqa questions.json val2014/ annotations.json
  --eval classification imagenet_val/          (images only: class names are not used as text)"""


def add_decontaminate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flamboyance decontaminate`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EVAL_SET_HELP
    parser.add_argument("--train", required=True, help="training shards (dataset folder / URL, or tar pattern)")
    parser.add_argument("--output", required=True, help="where the decontaminated shards are written")
    parser.add_argument("--eval", nargs="+", action="append", required=True, metavar="ARG",
                        help="an eval set: TASK DATA [IMAGES [ANNOTATIONS]] (repeat for several)")
    parser.add_argument("--ngram", type=int, default=8, help="word n-gram length for text overlap (default 8)")


def run_decontaminate(args: argparse.Namespace) -> int:
    """Index the eval sets, rewrite the training shards without them, print the counts."""
    from flamboyance.evaluation.decontaminate import EvalIndex, decontaminate

    sets = []
    for spec in args.eval:
        if len(spec) < 2 or len(spec) > 4 or spec[0] not in ("captioning", "vqa", "classification"):
            raise SystemExit(f"decontaminate: --eval takes TASK DATA [IMAGES [ANNOTATIONS]] with TASK one of "
                             f"captioning, vqa, classification; got {' '.join(spec)}")
        task, data, images, annotations = (*spec, None, None)[:4]
        sets.append(load_data(task, data, images=images, annotations=annotations))
    if os.path.abspath(args.output) == os.path.abspath(args.train) and "://" not in args.output:
        raise SystemExit("decontaminate: --output must differ from --train (the input is read while writing)")
    index = EvalIndex.build(sets, ngram=args.ngram)
    print(f"decontaminate: {index.examples} eval examples, {len(index.image_keys)} image keys, "
          f"{len(index.ngrams)} {index.ngram}-grams", file=sys.stderr, flush=True)
    stats = decontaminate(args.train, args.output, index)
    print(f"{stats['input']} samples in, {stats['kept']} kept, {stats['removed_by_image']} removed by image, "
          f"{stats['removed_by_ngram']} removed by n-gram -> {args.output}")
    return 0


COMMANDS = {"eval": (HELP, add_arguments, run),
            "decontaminate": (DECONTAMINATE_HELP, add_decontaminate_arguments, run_decontaminate)}
