"""M3W sequence text: an interleaved document flattened to text with special tokens (FL A.3).

Format: `<image>` stands where an image was; `<EOC>` goes before every `<image>` except the
first one, and once at the end of the document::

    T0<image>T1<EOC><image>T2<EOC>

Conventions (stable, relied on by shards/trainer):
- No spaces are added around the tokens: text touches them directly (as in the prompts
  `<image>Output: {caption}<EOC>`).
- Consecutive text blocks between two media are joined with a single "\\n"; empty blocks are skipped.
- Only images are media here; video nodes are skipped (they go to the video-text job).
- Literal special-token strings inside page text are deleted, so the number of `<image>` tokens
  always equals the number of images (a stray "<image>" in text would pair a token with no image).
"""

from __future__ import annotations

import re

from .document import Document, ImageNode, TextNode
from .tokens import EOC_TOKEN, IMAGE_TOKEN, SPECIAL_TOKENS

TEXT_JOINER = "\n"
"""Joins consecutive text blocks of one chunk."""

_TOKEN_RE = re.compile("|".join(re.escape(tok) for tok in SPECIAL_TOKENS))


def strip_special_tokens(text: str) -> str:
    """Remove every occurrence of a special token string from `text` (repeatedly, so that
    removal cannot assemble a new token such as "<im<image>age>")."""
    while _TOKEN_RE.search(text):
        text = _TOKEN_RE.sub("", text)
    return text


def to_sequence(doc: Document) -> str:
    """Flatten `doc` to `T0<image>T1<EOC><image>T2<EOC>` (see the module docstring)."""
    parts: list[str] = []
    pending: list[str] = []
    seen_image = False

    def flush() -> None:
        if pending:
            parts.append(TEXT_JOINER.join(pending))
            pending.clear()

    for node in doc.nodes:
        if isinstance(node, TextNode):
            text = strip_special_tokens(node.text).strip()
            if text:
                pending.append(text)
        elif isinstance(node, ImageNode):
            flush()
            if seen_image:
                parts.append(EOC_TOKEN)
            parts.append(IMAGE_TOKEN)
            seen_image = True
    flush()
    parts.append(EOC_TOKEN)
    return "".join(parts)


def image_text_sequence(caption: str) -> str:
    """The image-text (and video-text) pair format: `<image>caption<EOC>`."""
    return f"{IMAGE_TOKEN}{strip_special_tokens(caption).strip()}{EOC_TOKEN}"


def split_sequence(text: str) -> list[str | None]:
    """Inverse of `to_sequence` for readers: text chunks as `str`, each `<image>` as `None`.

    `<EOC>` markers are dropped (they are implied by the format); empty text between tokens is
    skipped. `split_sequence("A<image>B<EOC><image><EOC>") == ["A", None, "B", None]`.
    """
    out: list[str | None] = []
    for piece in re.split(f"({_TOKEN_RE.pattern})", text):
        if piece == IMAGE_TOKEN:
            out.append(None)
        elif piece and piece != EOC_TOKEN:
            out.append(piece)
    return out
