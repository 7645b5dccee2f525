"""Few-shot in-context evaluation of a Flamingo model, the way the paper does it.

For every shot count and seed, each query gets its support examples (random, or RICES),
a prompt is built (`prompts.py`), and the model either generates (beam search, captioning and
VQA) or ranks the options by log-likelihood (classification). The metric is computed over
all queries; the result per shot count is the mean and spread over seeds.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from flamboyance.evaluation import metrics, prompts
from flamboyance.evaluation.datasets import EvalDataset, EvalExample
from flamboyance.evaluation.ranking import score_options
from flamboyance.evaluation.rices import feature_cache_path, rices_select, vision_features
from flamboyance.model.generation import left_pad
from flamboyance.preprocess.tokens import EOC_TOKEN

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "METRIC_NAMES", "evaluate", "format_table"]

DEFAULT_MAX_NEW_TOKENS = {"captioning": 20, "vqa": 5}
"""Generation budget per open-ended task (FL/OF)."""

METRIC_NAMES = {"captioning": "CIDEr", "vqa": "VQA accuracy", "classification": "accuracy"}
"""The metric reported per task (all on a 0..100 scale; CIDEr as papers print it, x100)."""


@dataclass(frozen=True, kw_only=True)
class _Query:
    """One row of a batch: its prompt text and the images it holds, in prompt order."""

    example: EvalExample
    prompt: str
    images: tuple[EvalExample, ...]


class _PixelCache:
    """image key -> the model's transformed pixels (C, H, W); least recently used dropped first."""

    def __init__(self, transform: Callable, *, max_items: int) -> None:
        self.transform = transform
        self.max_items = max_items
        self.items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, example: EvalExample) -> torch.Tensor:
        key = example.image_key
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        pixels = self.transform(example.load_image())
        self.items[key] = pixels
        if len(self.items) > self.max_items:
            self.items.popitem(last=False)
        return pixels


def shots_and_seeds(shots: Sequence[int | str], seeds: Sequence[int | str]) -> tuple[list[int], list[int]]:
    """Shot counts and seeds as ints; raises ValueError for a negative or missing shot count, or no seed."""
    shots = [int(s) for s in shots]
    seeds = [int(s) for s in seeds]
    if not shots or any(s < 0 for s in shots):
        raise ValueError(f"shots must be non-negative integers, got {shots}")
    if not seeds:
        raise ValueError("need at least one seed")
    return shots, seeds


def seed_summary(per_seed: dict[str, float]) -> dict[str, Any]:
    """One shot count's result: mean, population std, min and max over seeds, and each seed's score."""
    values = list(per_seed.values())
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "per_seed": per_seed}


def _stack_media(rows: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Per-row lists of (C, H, W) -> media (B, M, 1, C, H, W), zero-padded to the longest row
    (slots beyond a row's <image> count are never encoded by the model)."""
    num_media = max(1, max(len(r) for r in rows))
    sample = next(p for r in rows for p in r)
    media = torch.zeros((len(rows), num_media, 1, *sample.shape), dtype=sample.dtype)
    for b, row in enumerate(rows):
        for m, pixels in enumerate(row):
            media[b, m, 0] = pixels
    return media


class _Runner:
    """Holds the model, its tokenizer and the pixel cache for one evaluate() call."""

    def __init__(self, model: Any, *, batch_size: int, cache_images: int) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.batch_size = batch_size
        self.pixels = _PixelCache(model.image_transform, max_items=cache_images)
        self.eoc_id = self.tokenizer.convert_tokens_to_ids(EOC_TOKEN)
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else self.eoc_id
        try:
            self.device = next(model.parameters()).device
        except (AttributeError, StopIteration):
            self.device = torch.device("cpu")
        self.max_length = _context_length(model)

    def check_length(self, rows: Sequence[Sequence[int]], extra: int = 0) -> None:
        """Fail clearly (not with an index error deep in the LM) when a prompt does not fit."""
        longest = max(len(r) for r in rows) + extra
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"a prompt of {longest - extra} tokens (+{extra} to generate) exceeds the language "
                             f"model's context of {self.max_length} tokens; use fewer shots")

    def encode_prompt(self, text: str) -> list[int]:
        # BOS when the LM's tokenizer adds one: the trainer starts its sequences the same way
        from flamboyance.model.text import encode_sequence

        return encode_sequence(self.tokenizer, text)

    def encode_continuation(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _batch(self, id_rows, image_rows, extra: int = 0):
        self.check_length(id_rows, extra)
        ids, mask = left_pad([list(r) for r in id_rows], self.pad_id)
        media = _stack_media([[self.pixels(e) for e in images] for images in image_rows])
        return ids.to(self.device), mask.to(self.device), media.to(self.device)

    def decode_generation(self, row: torch.Tensor) -> str:
        tokens = row.tolist()
        if self.eoc_id in tokens:
            tokens = tokens[: tokens.index(self.eoc_id)]
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def generate(self, queries: Sequence[_Query], *, task: str, max_new_tokens: int, num_beams: int,
                 length_penalty: float) -> list[str]:
        """Beam-search answers of the queries, cleaned to the answer text."""
        out: list[str] = []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start : start + self.batch_size]
            ids, mask, media = self._batch([self.encode_prompt(q.prompt) for q in chunk], [q.images for q in chunk],
                                           max_new_tokens)
            generated = self.model.generate(ids, mask, media, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                            length_penalty=length_penalty)
            out.extend(prompts.clean_generation(task, self.decode_generation(row)) for row in generated)
        return out

    def rank(self, queries: Sequence[_Query], options: Sequence[str]) -> list[str]:
        """For each query, the option whose continuation ` {option}<EOC>` has the highest total
        log-likelihood after the prompt (ties go to the earlier option)."""
        scores = self.option_scores(queries, options)
        return [options[int(torch.argmax(scores[qi]))] for qi in range(len(queries))]

    def option_scores(self, queries: Sequence[_Query], options: Sequence[str], *,
                      reuse_prompt_cache: bool = True) -> torch.Tensor:  # (queries, options) float64
        """Total log-likelihood of each option's continuation after each query's prompt.

        With `reuse_prompt_cache` (the default) each prompt runs once and the options run on copies
        of its KV cache (`ranking.score_options`); without, every (query, option) pair is one full
        forward of prompt + continuation (the reference the cached scores are checked against)."""
        continuations = [self.encode_continuation(prompts.continuation_text(o)) for o in options]
        prompt_ids = [self.encode_prompt(q.prompt) for q in queries]
        if not queries:
            return torch.zeros((0, len(options)), dtype=torch.float64)
        if reuse_prompt_cache:
            longest = max(len(c) for c in continuations)
            parts = []
            for start in range(0, len(queries), self.batch_size):
                chunk = queries[start : start + self.batch_size]
                ids, mask, media = self._batch(prompt_ids[start : start + self.batch_size], [q.images for q in chunk],
                                               longest)
                parts.append(score_options(self.model, ids, mask, media, continuations,
                                           rows_per_forward=self.batch_size))
            return torch.cat(parts)
        rows = [(qi, oi) for qi in range(len(queries)) for oi in range(len(options))]
        scores = torch.full((len(queries), len(options)), -torch.inf, dtype=torch.float64)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            id_rows = [prompt_ids[qi] + continuations[oi] for qi, oi in chunk]
            ids, mask, media = self._batch(id_rows, [queries[qi].images for qi, _ in chunk])
            continuation_mask = torch.zeros_like(ids, dtype=torch.bool)
            for b, (_, oi) in enumerate(chunk):
                continuation_mask[b, ids.shape[1] - len(continuations[oi]) :] = True
            row_scores = self.model.score_continuations(ids, mask, media, continuation_mask)
            for (qi, oi), score in zip(chunk, row_scores.tolist()):
                scores[qi, oi] = score
        return scores

    def embed(self, examples: Sequence[EvalExample], indices: Sequence[int]) -> torch.Tensor:
        pixels = torch.stack([self.pixels(examples[i]) for i in indices]).to(self.device)
        return self.model.image_embeddings(pixels)


def _context_length(model: Any) -> int | None:
    """The LM's maximum positions, when its config tells."""
    config = getattr(getattr(model, "lm", None), "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _score(task: str, queries: Sequence[EvalExample], predictions: Sequence[str]) -> float:
    preds = {q.key: p for q, p in zip(queries, predictions)}
    if task == "captioning":
        return 100.0 * metrics.cider({q.key: list(q.references) for q in queries}, preds)
    if task == "vqa":
        return metrics.vqa_accuracy({q.key: list(q.references) for q in queries}, preds)
    return metrics.accuracy({q.key: q.target for q in queries}, preds)


class _Identities:
    """Image identity keys (`EvalExample.image_identity`) computed once per example, on demand:
    only for queries and the support examples picked as their shots."""

    def __init__(self) -> None:
        self.keys: dict[int, frozenset[str]] = {}

    def __call__(self, example: EvalExample) -> frozenset[str]:
        found = self.keys.get(id(example))
        if found is None:
            found = self.keys[id(example)] = example.image_identity()
        return found


def _without_own_image(pick: Callable[[set[int]], list[int]], excluded: set[int],
                       is_own: Callable[[int], bool]) -> list[int]:
    """`pick(excluded)` redone with every pick that shows the query's own image excluded, until
    none does (`pick` raises when too few examples are left)."""
    excluded = set(excluded)
    while True:
        picked = pick(excluded)
        own = [i for i in picked if is_own(i)]
        if not own:
            return picked
        excluded.update(own)


def _random_support(rng: random.Random, pool_size: int, k: int, excluded: set[int]) -> list[int]:
    """k distinct random pool indices outside `excluded`, in random order."""
    if pool_size - len(excluded) < k:
        raise ValueError(f"support set too small: need {k} examples, have {pool_size - len(excluded)}")
    picked = [i for i in rng.sample(range(pool_size), min(pool_size, k + len(excluded))) if i not in excluded]
    return picked[:k]


def evaluate(
    model: Any,
    task: str,
    dataset: EvalDataset,
    *,
    shots: Sequence[int] = (0, 4, 8, 16, 32),
    seeds: Sequence[int] = (0,),
    rices: bool = False,
    support: EvalDataset | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    num_beams: int = 3,
    length_penalty: float = 0.0,
    max_new_tokens: int | None = None,
    cache_dir: str | None = None,
    model_id: str | None = None,
    num_examples: int = 5,
    cache_images: int = 2048,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Few-shot evaluation of `model` on `dataset` for each shot count and seed.

    Queries are the first `limit` examples of `dataset`. Support examples come from `support`
    (a train split) or, when None, from `dataset` itself; either way never one showing the
    query's image (same image key in the same pool, same URL, bytes or pixels in any pool). With
    `rices`, the shots are the most similar support images by the model's frozen vision
    features (cached under `cache_dir`, keyed by `model_id` and the dataset, when both are
    given), most similar last; otherwise a seeded random draw. Zero-shot prompts hold two
    text-only support examples. Captioning and VQA generate with beam search (`num_beams`,
    `length_penalty`, `max_new_tokens`: 20 captions / 5 VQA by default); classification ranks
    `dataset.class_names` by log-likelihood (each prompt run once, the options on its KV cache).

    Returns a JSON-able dict: {"task", "metric", "shots", "seeds", "rices", "num_queries",
    "support_size", "results": {shots: {"mean", "std", "min", "max", "per_seed"}}, "examples":
    {shots: first `num_examples` predictions of the first seed}, "seconds"}."""
    if task not in prompts.TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {prompts.TASKS}")
    if dataset.task != task:
        raise ValueError(f"dataset {dataset.source} is a {dataset.task} dataset, not {task}")
    if support is not None and support.task != task:
        raise ValueError(f"support dataset {support.source} is a {support.task} dataset, not {task}")
    shots, seeds = shots_and_seeds(shots, seeds)
    if task != "classification":
        max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
    log = log or (lambda message: None)
    started = time.monotonic()

    queries = list(dataset.head(limit).examples)
    pool_dataset = support if support is not None else dataset
    pool = list(pool_dataset.examples)
    same_pool = support is None or support is dataset
    pool_index = {e.image_key: [] for e in pool}
    for i, e in enumerate(pool):
        pool_index[e.image_key].append(i)
    # a query never sees its own image among its shots: same image key when the pool is the query
    # set, and whatever the pool, no shot whose image has the query's URL, bytes or pixels
    excluded = [set(pool_index.get(q.image_key, ())) if same_pool else set() for q in queries]
    identities = _Identities()

    def own_image(qi: int) -> Callable[[int], bool]:
        return lambda i: bool(identities(queries[qi]) & identities(pool[i]))
    options = list(dataset.class_names or ()) if task == "classification" else []

    runner = _Runner(model, batch_size=batch_size, cache_images=cache_images)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            neighbours: list[list[int]] | None = None
            max_shots = max(shots)
            if rices and max_shots > 0:
                neighbours = _rices_neighbours(runner, queries, pool, pool_dataset, excluded, max_shots,
                                               query_dataset=dataset.head(limit), cache_dir=cache_dir,
                                               model_id=model_id, log=log, own_image=own_image)
            results: dict[str, Any] = {}
            examples: dict[str, list[dict[str, str]]] = {}
            for num_shots in shots:
                per_seed: dict[str, float] = {}
                for seed in seeds:
                    deterministic = rices and num_shots > 0
                    if deterministic and per_seed:  # RICES shots do not depend on the seed
                        per_seed[str(seed)] = next(iter(per_seed.values()))
                        continue
                    rng = random.Random(f"{seed}/{num_shots}")
                    batch = []
                    for qi, query in enumerate(queries):
                        if neighbours is not None and num_shots > 0:
                            chosen = neighbours[qi][-num_shots:]
                        else:
                            k = num_shots or prompts.ZERO_SHOT_TEXT_EXAMPLES
                            chosen = _without_own_image(
                                lambda ex, k=k, rng=rng: _random_support(rng, len(pool), k, ex), excluded[qi],
                                own_image(qi))
                        shot_examples = [pool[i] for i in chosen]
                        prompt = prompts.build_prompt(task, support=[(e.target, e.question) for e in shot_examples],
                                                      query_question=query.question,
                                                      text_only_support=num_shots == 0)
                        images = (query,) if num_shots == 0 else (*shot_examples, query)
                        batch.append(_Query(example=query, prompt=prompt, images=images))
                    if task == "classification":
                        predictions = runner.rank(batch, options)
                    else:
                        predictions = runner.generate(batch, task=task, max_new_tokens=max_new_tokens,
                                                      num_beams=num_beams, length_penalty=length_penalty)
                    score = _score(task, queries, predictions)
                    per_seed[str(seed)] = score
                    log(f"{task} shots={num_shots} seed={seed}: {METRIC_NAMES[task]} {score:.2f} "
                        f"({len(queries)} queries, {time.monotonic() - started:.0f}s)")
                    if str(num_shots) not in examples:
                        examples[str(num_shots)] = [
                            {"key": q.key, "prediction": p, "reference": q.references[0], "prompt": b.prompt}
                            for q, p, b in zip(queries[:num_examples], predictions, batch)
                        ]
                results[str(num_shots)] = seed_summary(per_seed)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return {
        "task": task,
        "metric": METRIC_NAMES[task],
        "shots": shots,
        "seeds": seeds,
        "rices": bool(rices),
        "num_queries": len(queries),
        "support_size": len(pool),
        "support_source": pool_dataset.source,
        "query_source": dataset.source,
        "num_beams": num_beams if task != "classification" else None,
        "max_new_tokens": max_new_tokens if task != "classification" else None,
        "results": results,
        "examples": examples,
        "seconds": round(time.monotonic() - started, 3),
    }


def _rices_neighbours(runner, queries, pool, pool_dataset, excluded, k, *, query_dataset, cache_dir, model_id,
                      log, own_image) -> list[list[int]]:
    def features(examples, ds):
        path = None
        if cache_dir is not None and model_id is not None:
            path = feature_cache_path(cache_dir, model_id=model_id, dataset_fingerprint=ds.fingerprint)
        return vision_features([e.image_key for e in examples], lambda idx: runner.embed(examples, idx),
                               batch_size=runner.batch_size * 4, cache_path=path)

    t0 = time.monotonic()
    pool_features = features(pool, pool_dataset)
    query_features = features(queries, query_dataset)
    log(f"RICES features: {len(queries)} queries, {len(pool)} support images ({time.monotonic() - t0:.1f}s)")
    # the query's own image (other key, same URL / bytes / pixels) is its nearest neighbour: select,
    # drop it, select again for the queries that had one
    neighbours: list[list[int]] = [[] for _ in queries]
    exclude = [set(e) for e in excluded]
    todo = list(range(len(queries)))
    while todo:
        picked = rices_select(query_features[todo], pool_features, k, exclude=[sorted(exclude[q]) for q in todo])
        again = []
        for q, chosen in zip(todo, picked):
            own = [i for i in chosen if own_image(q)(i)]
            if own:
                exclude[q].update(own)
                again.append(q)
            else:
                neighbours[q] = chosen
        todo = again
    return neighbours


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: one row per shot count with the mean, spread and per-seed scores."""
    metric = result["metric"]
    header = f"{'shots':>5}  {metric + ' mean':>16}  {'std':>6}  {'min':>7}  {'max':>7}  seeds"
    lines = [f"{result['task']} on {result['num_queries']} queries"
             f"{' (RICES)' if result['rices'] else ''}", header, "-" * len(header)]
    for shots, row in result["results"].items():
        lines.append(f"{shots:>5}  {row['mean']:>16.2f}  {row['std']:>6.2f}  {row['min']:>7.2f}  {row['max']:>7.2f}"
                     f"  {len(row['per_seed'])}")
    return "\n".join(lines)
