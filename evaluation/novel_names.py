"""The `novel-names` task: can the model learn, from its context alone, a name it never saw?

Each query is an episode: two made-up names from the held-out share of the name space (never in
any training page or text; `crawl.sample_text.is_held_out_name`) are bound to two shape/colour
objects; K support images show the objects (each K/2 times, shuffled), each followed by the
sentence that names it, as the sample web's naming stories do (``<image>This is the tobax<EOC>``);
then a new image of one of the two objects and ``<image>This is the``. The answer is the name of
the context with the higher log-likelihood (the evaluation's public ranking, `_Runner.rank`).
Zero shots: both names appear text-only (``This is the tobax<EOC>This is the melup<EOC>``), so
nothing tells them apart and the score is chance (50). Queries are balanced: the answer is the
first object in half of them, and in the zero-shot prompt its name comes first in half of them,
so a model that always copies the last (or first) name scores exactly 50.

Episodes depend only on (seed, query index[, shots]): the same queries for every shot count of a
seed, the support drawn per shot count. Images are drawn with `crawl.sample_media.render_image`
from seeds no page uses.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flamboyance.crawl.sample_media import BACKGROUNDS, COLOURS, SHAPES, ShapeSpec, render_image
from flamboyance.crawl.sample_text import distinct_names
from flamboyance.crawl.sample_web import NAMING_IMAGE_SIDE, NAMING_SENTENCE
from flamboyance.evaluation.datasets import EvalExample
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN

__all__ = ["NAMES_IN_CONTEXT", "TASK", "Episode", "episode", "evaluate_novel_names", "prompt_of"]

TASK = "novel-names"
NAMES_IN_CONTEXT = 2
_QUERY_TEXT = NAMING_SENTENCE.split("{name}")[0].rstrip()  # "This is the"


@dataclass(frozen=True, kw_only=True)
class Episode:
    """One query: the names in context, the support (image, name) pairs in order, the query image."""

    key: str
    names: tuple[str, ...]
    objects: tuple[ShapeSpec, ...]  # objects[i] is named names[i]
    support: tuple[tuple[EvalExample, str], ...]
    query: EvalExample
    target: str


def _image(key: str, spec: ShapeSpec, seed: int) -> EvalExample:
    data = render_image(spec, seed=seed, width=NAMING_IMAGE_SIDE, height=NAMING_IMAGE_SIDE, fmt="PNG")
    return EvalExample(key=key, image=data, target="", references=("",))


def episode(seed: int, index: int, shots: int) -> Episode:
    """Query `index` of `seed` with `shots` support images (0: the names text-only)."""
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    rng = random.Random(f"novel-names/{seed}/{index}")
    names = tuple(distinct_names(rng, NAMES_IN_CONTEXT, held_out=True))
    colours = rng.sample([c for c in COLOURS if c != "white"], NAMES_IN_CONTEXT)
    shapes = rng.sample(SHAPES, NAMES_IN_CONTEXT)
    background = rng.choice([b for b in BACKGROUNDS if b not in colours])
    objects = tuple(ShapeSpec(c, s, background, "large") for c, s in zip(colours, shapes))
    answer = index % NAMES_IN_CONTEXT  # balanced answers
    key = f"s{seed}-q{index}"
    query = _image(f"{key}-query", objects[answer], rng.randrange(2**31) + 2**31)  # seeds beyond any page's
    support_rng = random.Random(f"novel-names/{seed}/{index}/{shots}")
    order = [k % NAMES_IN_CONTEXT for k in range(shots)]
    support_rng.shuffle(order)
    support = tuple(
        (_image(f"{key}-k{shots}-{k}", objects[obj], support_rng.randrange(2**31) + 2**31), names[obj])
        for k, obj in enumerate(order)
    )
    return Episode(key=key, names=names, objects=objects, support=support, query=query, target=names[answer])


def prompt_of(ep: Episode, index: int) -> str:
    """The prompt up to where the name follows; zero-shot prompts hold the names text-only, the
    answer's name first in every other query (by `index`)."""
    if ep.support:
        chunks = [f"{IMAGE_TOKEN}{NAMING_SENTENCE.format(name=name)}{EOC_TOKEN}" for _, name in ep.support]
    else:
        names = list(ep.names)
        if (index // NAMES_IN_CONTEXT) % 2 == 1:
            names.reverse()
        chunks = [f"{NAMING_SENTENCE.format(name=name)}{EOC_TOKEN}" for name in names]
    return "".join(chunks) + f"{IMAGE_TOKEN}{_QUERY_TEXT}"


def evaluate_novel_names(
    model: Any,
    *,
    shots: Sequence[int] = (0, 4, 8),
    seeds: Sequence[int] = (0, 1),
    num_queries: int = 200,
    batch_size: int = 8,
    num_examples: int = 5,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Accuracy (0..100) of ranking the two context names per shot count and seed; the result has
    the layout of `evaluation.evaluate.evaluate`'s."""
    import torch
    from flamboyance.evaluation.evaluate import _Query, _Runner, seed_summary, shots_and_seeds

    shots, seeds = shots_and_seeds(shots, seeds)
    if num_queries < 1:
        raise ValueError(f"num_queries must be >= 1, got {num_queries}")
    log = log or (lambda message: None)
    started = time.monotonic()
    runner = _Runner(model, batch_size=batch_size, cache_images=4 * batch_size)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    results: dict[str, Any] = {}
    examples: dict[str, list[dict[str, str]]] = {}
    try:
        with torch.inference_mode():
            for num_shots in shots:
                per_seed: dict[str, float] = {}
                for seed in seeds:
                    correct = 0
                    for index in range(num_queries):
                        ep = episode(seed, index, num_shots)
                        prompt = prompt_of(ep, index)
                        images = (*(image for image, _ in ep.support), ep.query)
                        query = _Query(example=ep.query, prompt=prompt, images=images)
                        prediction = runner.rank([query], list(ep.names))[0]
                        correct += prediction == ep.target
                        if seed == seeds[0] and index < num_examples:
                            examples.setdefault(str(num_shots), []).append(
                                {"key": ep.key, "prediction": prediction, "reference": ep.target, "prompt": prompt})
                    score = 100.0 * correct / num_queries
                    per_seed[str(seed)] = score
                    log(f"{TASK} shots={num_shots} seed={seed}: accuracy {score:.2f} "
                        f"({num_queries} queries, {time.monotonic() - started:.0f}s)")
                results[str(num_shots)] = seed_summary(per_seed)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return {
        "task": TASK,
        "metric": "accuracy",
        "shots": shots,
        "seeds": seeds,
        "rices": False,
        "num_queries": num_queries,
        "names_in_context": NAMES_IN_CONTEXT,
        "chance": 100.0 / NAMES_IN_CONTEXT,
        "results": results,
        "examples": examples,
        "seconds": round(time.monotonic() - started, 3),
    }
