"""The few-shot prompts of the Flamingo/OpenFlamingo evaluations, defined once.

A prompt is the support examples, each a complete chunk `<image>...<EOC>`, followed by the
query chunk cut where the model has to continue. Zero-shot uses two *text-only* support
examples (the same format with `<image>` removed) so the model still sees the answer format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN

Task = Literal["captioning", "vqa", "classification"]
TASKS: tuple[str, ...] = ("captioning", "vqa", "classification")

ZERO_SHOT_TEXT_EXAMPLES = 2
"""How many text-only examples precede the query in zero-shot evaluation (FL, OF)."""


def caption_chunk(caption: str | None = None, *, with_image: bool = True) -> str:
    """`<image>Output: {caption}<EOC>`; without a caption, the query `<image>Output:`."""
    image = IMAGE_TOKEN if with_image else ""
    if caption is None:
        return f"{image}Output:"
    return f"{image}Output: {caption.strip()}{EOC_TOKEN}"


def vqa_chunk(question: str, answer: str | None = None, *, with_image: bool = True) -> str:
    """`<image>Question: {q} Short answer: {a}<EOC>`; without an answer, the query ending in
    `Short answer:`."""
    image = IMAGE_TOKEN if with_image else ""
    head = f"{image}Question: {question.strip()} Short answer:"
    if answer is None:
        return head
    return f"{head} {answer.strip()}{EOC_TOKEN}"


def classification_chunk(class_name: str | None = None, *, with_image: bool = True) -> str:
    """`<image>Output: {class name}<EOC>` (the caption format; options are ranked by likelihood)."""
    return caption_chunk(class_name, with_image=with_image)


def support_chunk(task: str, *, target: str, question: str | None = None, with_image: bool = True) -> str:
    """One complete support example of `task`."""
    if task == "vqa":
        if question is None:
            raise ValueError("vqa support example needs a question")
        return vqa_chunk(question, target, with_image=with_image)
    if task in ("captioning", "classification"):
        return caption_chunk(target, with_image=with_image)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def query_chunk(task: str, *, question: str | None = None) -> str:
    """The open query chunk of `task`, ending where the answer starts."""
    if task == "vqa":
        if question is None:
            raise ValueError("vqa query needs a question")
        return vqa_chunk(question)
    if task in ("captioning", "classification"):
        return caption_chunk()
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def continuation_text(answer: str) -> str:
    """What follows a query chunk for a given answer: ` {answer}<EOC>` (used to score options)."""
    return f" {answer.strip()}{EOC_TOKEN}"


def build_prompt(
    task: str,
    *,
    support: Sequence[tuple[str, str | None]],
    query_question: str | None = None,
    text_only_support: bool = False,
) -> str:
    """The full prompt: `support` as (target, question) pairs in order, then the query.

    With `text_only_support` the support chunks carry no `<image>` (zero-shot); the prompt
    then contains exactly one `<image>`, the query's."""
    chunks = [support_chunk(task, target=t, question=q, with_image=not text_only_support) for t, q in support]
    chunks.append(query_chunk(task, question=query_question))
    return "".join(chunks)


_VQA_CUT = re.compile(r"Question|Answer|Short|Output|" + re.escape(EOC_TOKEN) + "|" + re.escape(IMAGE_TOKEN))


def clean_generation(task: str, text: str) -> str:
    """Cut a decoded generation to the answer: stop at a new chunk or prompt keyword, first line
    only; for VQA also stop at the first ", " (OpenFlamingo's VQA post-processing)."""
    text = _VQA_CUT.split(text, maxsplit=1)[0]
    text = text.split("\n", 1)[0]
    if task == "vqa":
        text = text.split(", ", 1)[0]
    return text.strip()
