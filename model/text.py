"""How text becomes the token ids of one model sequence, defined once for training, evaluation
prompts and generation: a BOS token first when the LM's tokenizer adds one by default (Llama,
OPT were pretrained with it on every sequence; GPT-2 was not), then the text without any other
special token. Continuations appended to a prompt (answer options, generated tokens) get none.
"""

from __future__ import annotations

from typing import Any


def bos_ids(tokenizer: Any) -> list[int]:
    """``[bos_token_id]`` when ``tokenizer`` puts a BOS in front of a text by default (what
    ``tokenizer("a")`` adds), else ``[]``."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    with_special = list(tokenizer("a")["input_ids"])
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    adds_bos = with_special[:1] == [bos] and plain[:1] != [bos]
    return [int(bos)] if adds_bos else []


def encode_sequence(tokenizer: Any, text: str, *, bos: list[int] | None = None) -> list[int]:
    """Token ids of a sequence that starts a model input: BOS when the tokenizer adds one, then
    ``text`` (no other special tokens). Pass ``bos`` (from ``bos_ids``) to skip its detection."""
    prefix = bos_ids(tokenizer) if bos is None else bos
    return prefix + list(tokenizer(text, add_special_tokens=False)["input_ids"])


__all__ = ["bos_ids", "encode_sequence"]
