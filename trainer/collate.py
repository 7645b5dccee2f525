"""Records -> token ids, labels and media: one collator per source kind, one batch padder.

Every sample becomes ``input_ids`` (T,), ``labels`` (T,) (-100 = ignored) and ``media``
(M, F, C, H, W). A sequence starts with BOS when the LM's tokenizer adds one
(``flamboyance.model.text``, the same rule as evaluation prompts). Labels ignore padding, BOS and
``<image>``; M3W also ignores text before the first
``<image>`` of its window; ``<EOC>`` stays a target (generation stops on it). A sample with no
label left is rejected here (``Rejected``) and counted by the loader, never skipped in the step.

Randomness (M3W window and image placement) comes from the ``random.Random`` passed in, which
the loader seeds per record, so a resumed stream makes the same choices.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from flamboyance.model.text import bos_ids, encode_sequence
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN

IGNORE_INDEX = -100
"""Label value the loss ignores."""

ImageTransform = Callable[[Any], torch.Tensor]  # PIL image -> (C, H, W)


class Rejected(ValueError):
    """A record that cannot become a training sample; ``reason`` is the counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Sample:
    """One tokenised training sample."""

    input_ids: torch.Tensor  # (tokens,) int64
    labels: torch.Tensor  # (tokens,) int64, IGNORE_INDEX where not a target
    media: torch.Tensor  # (media, frames, channels, height, width) float32


class _Tokens:
    """Token ids the collators need, looked up once from the tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.image = _token_id(tokenizer, IMAGE_TOKEN)
        self.eoc = _token_id(tokenizer, EOC_TOKEN)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token (the model adds <pad>; use model.tokenizer)")
        self.pad = tokenizer.pad_token_id
        self.bos = bos_ids(tokenizer)  # [] or [bos id]: what starts every sequence

    def encode(self, text: str) -> list[int]:
        """Text without BOS (M3W: a window is cut out first, then BOS goes in front)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_sequence(self, text: str) -> list[int]:
        """A whole sequence: BOS (when the tokenizer adds one) + text."""
        return encode_sequence(self.tokenizer, text, bos=self.bos)


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer lacks the special token {token!r} (use model.tokenizer)")
    return int(token_id)


def _labels(ids: list[int], tokens: _Tokens, *, ignore_before_first_image: bool) -> list[int]:
    labels = []
    seen_image = not ignore_before_first_image
    for position, token in enumerate(ids):
        if position == 0 and tokens.bos:  # BOS (may equal EOS, as in OPT: only position 0 is BOS)
            labels.append(IGNORE_INDEX)
        elif token == tokens.image:
            seen_image = True
            labels.append(IGNORE_INDEX)
        elif token == tokens.pad or not seen_image:
            labels.append(IGNORE_INDEX)
        else:
            labels.append(token)
    return labels


def _sample(ids: list[int], labels: list[int], media: torch.Tensor) -> Sample:
    # the loss predicts token t+1 from t: the first label is never a target
    if all(label == IGNORE_INDEX for label in labels[1:]):
        raise Rejected("no_labels", "every label is ignored")
    return Sample(
        input_ids=torch.tensor(ids, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        media=media,
    )


# --- M3W ---------------------------------------------------------------------------------------


def split_m3w_text(text: str) -> list[str]:
    """The text spans of an M3W sequence ``T0 <image> T1 <EOC> <image> T2 <EOC>``: n images give
    n + 1 spans (``<EOC>`` markers removed, whitespace kept)."""
    return [span.replace(EOC_TOKEN, "") for span in text.split(IMAGE_TOKEN)]


def place_images(spans: list[str], *, next_image_p: float, rng: random.Random) -> str:
    """Rebuild the sequence with FL's image-placement augmentation.

    ``spans[i]`` (i >= 1) follows image i; with probability ``next_image_p`` it is tied to the next
    image instead (image i+1's ``<image>`` moves before it); ``spans[0]`` may likewise be tied to
    image 1, the last span always stays with the last image. Text order never changes: only where
    each ``<image>`` (and the ``<EOC>`` that closes the chunk before it) sits. A token attends to
    the latest ``<image>`` before it, so "tied" means "attends to".
    """
    num_images = len(spans) - 1
    if num_images == 0:
        return spans[0]
    # image k (1-based) is placed before span k-1 when span k-1 is tied to the next image, else
    # before span k
    tied_next = [rng.random() < next_image_p for _ in range(num_images)]  # spans 0..n-1
    parts: list[str] = []
    for i, span in enumerate(spans):
        image_after_prev_span = i >= 1 and not tied_next[i - 1]  # image i sits right before span i
        image_before_span = i < num_images and tied_next[i]  # image i+1 sits before span i
        if image_after_prev_span:
            parts.append(_image_marker(first=i == 1))  # image 1 is first unless it moved before span 0
        if image_before_span:
            parts.append(_image_marker(first=i == 0))
        parts.append(span)
    parts.append(EOC_TOKEN)
    return "".join(parts)


def _image_marker(*, first: bool) -> str:
    return IMAGE_TOKEN if first else EOC_TOKEN + IMAGE_TOKEN


class M3WCollator:
    """Interleaved document -> a random window of ``max_tokens`` with at most ``max_images`` images."""

    def __init__(
        self,
        *,
        tokenizer: Any,
        image_transform: ImageTransform,
        max_tokens: int = 256,
        max_images: int = 5,
        next_image_p: float = 0.5,
    ) -> None:
        self.tokens = _Tokens(tokenizer)
        self.image_transform = image_transform
        self.max_tokens = max_tokens
        self.max_images = max_images
        self.next_image_p = next_image_p

    def __call__(self, record: Any, rng: random.Random) -> Sample:
        text = record.document.get("text")
        if not isinstance(text, str):
            raise Rejected("no_text", f"document {record.key!r} has no 'text' sequence")
        spans = split_m3w_text(text)
        if len(spans) - 1 != len(record.images):
            raise Rejected(
                "image_count_mismatch",
                f"document {record.key!r}: {len(spans) - 1} <image> tokens, {len(record.images)} images",
            )
        if not record.images:
            raise Rejected("no_images", f"document {record.key!r}")
        ids = self.tokens.encode(place_images(spans, next_image_p=self.next_image_p, rng=rng))
        image_positions = [i for i, t in enumerate(ids) if t == self.tokens.image]
        size = max(1, self.max_tokens - len(self.tokens.bos))  # BOS goes in front of the window
        start = _window_start(image_positions, len(ids), size, rng)
        window = ids[start : start + size]
        first_image = sum(1 for p in image_positions if p < start)
        in_window = [p - start for p in image_positions if start <= p < start + size]
        if len(in_window) > self.max_images:
            window = window[: in_window[self.max_images]]  # cut before the (N+1)-th image
            in_window = in_window[: self.max_images]
        images = record.images[first_image : first_image + len(in_window)]
        window = self.tokens.bos + window
        labels = _labels(window, self.tokens, ignore_before_first_image=True)
        media = _stack_media([[self.image_transform(im)] for im in images])
        return _sample(window, labels, media)


def _window_start(image_positions: list[int], length: int, size: int, rng: random.Random) -> int:
    """A start drawn uniformly among those whose window of `size` tokens holds an image: a start in
    [p - size + 1, p] for some image position p (and at most `length - size`). Drawing between the
    first and the last image instead gives windows between two far-apart images that hold none
    (a window whose image is its last token has no target and is rejected later)."""
    last = max(0, length - size)
    spans: list[list[int]] = []
    for p in image_positions:  # ascending, so the spans are too
        lo, hi = max(0, p - size + 1), min(p, last)
        if spans and lo <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    pick = rng.randrange(sum(hi - lo + 1 for lo, hi in spans))
    for lo, hi in spans:
        if pick <= hi - lo:
            return lo + pick
        pick -= hi - lo + 1
    raise AssertionError("unreachable: pick < the spans' total length")


def _stack_media(media: list[list[torch.Tensor]]) -> torch.Tensor:  # (M, F, C, H, W)
    if not media:
        raise Rejected("no_images")
    return torch.stack([torch.stack(frames) for frames in media])


# --- image-text and video-text -------------------------------------------------------------------


class _CaptionCollator:
    def __init__(self, *, tokenizer: Any, image_transform: ImageTransform, max_tokens: int = 32,
                 caption_template: str = "{caption}") -> None:
        self.tokens = _Tokens(tokenizer)
        self.image_transform = image_transform
        self.max_tokens = max_tokens
        self.caption_template = caption_template

    def _caption_ids(self, caption: str, key: str) -> tuple[list[int], list[int]]:
        if not isinstance(caption, str) or not caption.strip():
            raise Rejected("empty_caption", f"record {key!r}")
        text = self.caption_template.format(caption=caption.strip())
        ids = self.tokens.encode_sequence(IMAGE_TOKEN + text + EOC_TOKEN)
        if len(ids) > self.max_tokens:  # keep <EOC> last: it teaches when to stop
            ids = ids[: self.max_tokens - 1] + [self.tokens.eoc]
        return ids, _labels(ids, self.tokens, ignore_before_first_image=False)


class ImageTextCollator(_CaptionCollator):
    """Image-caption pair -> ``<image>caption<EOC>`` (at most ``max_tokens``), one 1-frame medium."""

    def __call__(self, record: Any, rng: random.Random) -> Sample:
        ids, labels = self._caption_ids(record.caption, record.key)
        return _sample(ids, labels, _stack_media([[self.image_transform(record.image)]]))


class VideoTextCollator(_CaptionCollator):
    """Video-caption pair -> ``<image>caption<EOC>`` with one medium of ``num_frames`` frames
    (evenly spaced over the clip; a shorter clip repeats its last frame)."""

    def __init__(self, *, num_frames: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_frames = num_frames

    def __call__(self, record: Any, rng: random.Random) -> Sample:
        if not record.frames:
            raise Rejected("no_frames", f"record {record.key!r}")
        ids, labels = self._caption_ids(record.caption, record.key)
        frames = select_frames(len(record.frames), self.num_frames)
        pixels = {i: self.image_transform(record.frames[i]) for i in sorted(set(frames))}  # repeats: once
        return _sample(ids, labels, _stack_media([[pixels[i] for i in frames]]))


class PackedPairs:
    """Packs ``pairs`` consecutive image/video-text samples into one sequence
    (``<image>c1<EOC><image>c2<EOC>...``; media concatenated in order).

    Returns None while a pack is being filled. The stream cuts batches only right after a sample is
    returned, so a pack never spans a batch boundary and stream positions stay exact for resume.
    Each caption still attends only to its own medium (the model's per-image masking). Like a
    few-shot prompt, a pack has one BOS (when the tokenizer uses one), at its start.

    With ``random_size`` a pack holds a uniform random 1..``pairs`` pairs, drawn with the ``rng`` of
    its first record (so a resumed stream packs the same way): queries then occur after every
    number of context pairs (and at every position) up to the largest pack, as in 0..pairs-1-shot
    prompts; a fixed size trains the last caption only after exactly ``pairs - 1`` others.
    """

    def __init__(self, collator: Any, *, pairs: int, random_size: bool = False) -> None:
        if pairs < 1:
            raise ValueError(f"pairs must be >= 1, got {pairs}")
        self.collator = collator
        self.pairs = pairs
        self.random_size = random_size
        self._skip = len(collator.tokens.bos)  # BOS of every pair but the first
        self._pending: list[Sample] = []
        self._size = pairs

    def __call__(self, record: Any, rng: random.Random) -> Sample | None:
        sample = self.collator(record, rng)
        if not self._pending and self.random_size:
            self._size = rng.randint(1, self.pairs)
        self._pending.append(sample)
        if len(self._pending) < self._size:
            return None
        pack, self._pending = self._pending, []
        cut = [0] + [self._skip] * (len(pack) - 1)
        return Sample(input_ids=torch.cat([s.input_ids[c:] for s, c in zip(pack, cut)]),
                      labels=torch.cat([s.labels[c:] for s, c in zip(pack, cut)]),
                      media=torch.cat([s.media for s in pack]))


def select_frames(available: int, wanted: int) -> list[int]:
    """Indices of ``wanted`` frames out of ``available``: evenly spaced, the last repeated when short."""
    if available >= wanted:
        return [round(i * (available - 1) / max(1, wanted - 1)) for i in range(wanted)] if wanted > 1 else [0]
    return list(range(available)) + [available - 1] * (wanted - available)


def build_collator(kind: str, *, tokenizer: Any, image_transform: ImageTransform, source: Any) -> Any:
    """The collator of a source kind, configured from a ``SourceConfig``."""
    common = {"tokenizer": tokenizer, "image_transform": image_transform, "max_tokens": source.max_tokens}
    if kind == "m3w":
        return M3WCollator(**common, max_images=source.max_images, next_image_p=source.next_image_p)
    if kind in ("image_text", "video_text"):
        common["caption_template"] = source.caption_template
        collator = (ImageTextCollator(**common) if kind == "image_text"
                    else VideoTextCollator(**common, num_frames=source.num_frames))
        if source.pairs_per_sequence == 1:
            return collator
        return PackedPairs(collator, pairs=source.pairs_per_sequence, random_size=source.random_pack_size)
    raise ValueError(f"unknown source kind {kind!r}; expected m3w, image_text or video_text")


# --- batches ----------------------------------------------------------------------------------


def pad_batch(samples: list[Sample], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of samples to one batch.

    Returns ``input_ids`` (B, T) int64, ``attention_mask`` (B, T) int64, ``labels`` (B, T) and
    ``media`` (B, M, F, C, H, W) (slots beyond a row's images are zeros; the model never encodes
    them because the row has fewer ``<image>`` tokens).
    """
    if not samples:
        raise ValueError("pad_batch needs at least one sample")
    length = max(len(s.input_ids) for s in samples)
    num_media = max(s.media.shape[0] for s in samples)
    frames, channels, height, width = samples[0].media.shape[1:]
    batch = len(samples)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    media = torch.zeros((batch, num_media, frames, channels, height, width), dtype=torch.float32)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, :n] = sample.input_ids
        labels[row, :n] = sample.labels
        attention_mask[row, :n] = 1
        if sample.media.shape[1:] != media.shape[2:]:
            raise ValueError(
                f"sample {row}: media shape {tuple(sample.media.shape)} does not match the batch's "
                f"{tuple(media.shape[2:])}"
            )
        media[row, : sample.media.shape[0]] = sample.media
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "media": media}


__all__ = [
    "IGNORE_INDEX",
    "ImageTextCollator",
    "M3WCollator",
    "Rejected",
    "Sample",
    "VideoTextCollator",
    "build_collator",
    "pad_batch",
    "place_images",
    "select_frames",
    "split_m3w_text",
]
