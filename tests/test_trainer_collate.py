"""Collation: image placement, M3W windows, labels, frame selection, padding."""

from __future__ import annotations

import collections
import random
from types import SimpleNamespace

import pytest
import torch
from flamboyance.model.tiny import build_tokenizer
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from flamboyance.trainer.collate import (
    IGNORE_INDEX,
    ImageTextCollator,
    M3WCollator,
    PackedPairs,
    Rejected,
    VideoTextCollator,
    pad_batch,
    place_images,
    select_frames,
    split_m3w_text,
)
from PIL import Image

SEQUENCE = f"T0{IMAGE_TOKEN}T1{EOC_TOKEN}{IMAGE_TOKEN}T2{EOC_TOKEN}{IMAGE_TOKEN}T3{EOC_TOKEN}"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(["a red circle on a white background", "words before the picture"] * 5, vocab_size=300)


def _marker_transform(image: Image.Image) -> torch.Tensor:  # (3, 2, 2): the image's red value
    return torch.full((3, 2, 2), float(image.getpixel((0, 0))[0]))


def test_split_and_placement_extremes() -> None:
    spans = split_m3w_text(SEQUENCE)
    assert spans == ["T0", "T1", "T2", "T3"]
    # p=0: every span follows its previous image: the original sequence
    assert place_images(spans, next_image_p=0.0, rng=random.Random(0)) == SEQUENCE
    # p=1: every span precedes-and-attends its next image; the last span stays with the last image
    assert place_images(spans, next_image_p=1.0, rng=random.Random(0)) == (
        f"{IMAGE_TOKEN}T0{EOC_TOKEN}{IMAGE_TOKEN}T1{EOC_TOKEN}{IMAGE_TOKEN}T2T3{EOC_TOKEN}"
    )
    assert place_images(["only text"], next_image_p=0.5, rng=random.Random(0)) == "only text"


def test_placement_keeps_text_order_and_image_count() -> None:
    spans = split_m3w_text(SEQUENCE)
    seen = set()
    for seed in range(40):
        out = place_images(spans, next_image_p=0.5, rng=random.Random(seed))
        assert out.count(IMAGE_TOKEN) == 3
        assert out.replace(IMAGE_TOKEN, "").replace(EOC_TOKEN, "") == "T0T1T2T3"
        assert not out.startswith(EOC_TOKEN) and out.endswith(EOC_TOKEN)
        # every <image> but the first is preceded by <EOC>
        assert out.count(EOC_TOKEN + IMAGE_TOKEN) == 2
        seen.add(out)
    assert len(seen) > 4  # the augmentation really varies


def _m3w_record(text: str, n_images: int) -> SimpleNamespace:
    images = [Image.new("RGB", (4, 4), (10 * (i + 1), 0, 0)) for i in range(n_images)]
    return SimpleNamespace(key="doc", document={"text": text}, images=images)


def test_m3w_labels_window_and_image_limit(tokenizer) -> None:
    n = 8
    text = "words before the picture"
    for i in range(n):
        text += (EOC_TOKEN if i else "") + IMAGE_TOKEN + f"a red circle {i}"
    text += EOC_TOKEN
    collator = M3WCollator(
        tokenizer=tokenizer, image_transform=_marker_transform, max_tokens=40, max_images=3, next_image_p=0.0
    )
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    eoc_id = tokenizer.convert_tokens_to_ids(EOC_TOKEN)
    for seed in range(20):
        sample = collator(_m3w_record(text, n), random.Random(seed))
        ids, labels = sample.input_ids.tolist(), sample.labels.tolist()
        assert len(ids) <= 40
        positions = [i for i, t in enumerate(ids) if t == image_id]
        assert 1 <= len(positions) <= 3 and sample.media.shape[0] == len(positions)
        # labels: ignored before the first image and on <image>; everything else is its token
        for i, (token, label) in enumerate(zip(ids, labels)):
            expected = IGNORE_INDEX if i < positions[0] or token == image_id else token
            assert label == expected
        assert eoc_id in labels  # <EOC> stays a target
        # the media are the window's images, in order (marker = red value of image k)
        first = round(float(sample.media[0, 0, 0, 0, 0])) // 10 - 1
        assert [round(float(m[0, 0, 0, 0])) for m in sample.media] == [
            10 * (first + k + 1) for k in range(len(positions))
        ]


def test_m3w_rejections(tokenizer) -> None:
    collator = M3WCollator(tokenizer=tokenizer, image_transform=_marker_transform, max_tokens=16)
    with pytest.raises(Rejected) as excinfo:
        collator(_m3w_record(f"a{IMAGE_TOKEN}b{EOC_TOKEN}", 2), random.Random(0))
    assert excinfo.value.reason == "image_count_mismatch"
    # a long text before the only image: windows ending at the image have no target left
    long_text = " ".join(["words before the picture"] * 20) + f"{IMAGE_TOKEN}red{EOC_TOKEN}"
    reasons = set()
    for seed in range(30):
        try:
            sample = collator(_m3w_record(long_text, 1), random.Random(seed))
            assert (sample.labels[1:] != IGNORE_INDEX).any()
        except Rejected as rejected:
            reasons.add(rejected.reason)
    assert reasons == {"no_labels"}


def test_caption_collators(tokenizer) -> None:
    image = Image.new("RGB", (4, 4), (50, 0, 0))
    collator = ImageTextCollator(tokenizer=tokenizer, image_transform=_marker_transform, max_tokens=32)
    sample = collator(SimpleNamespace(key="k", image=image, caption=" a red circle "), random.Random(0))
    text = tokenizer.decode(sample.input_ids)
    assert text == f"{IMAGE_TOKEN}a red circle{EOC_TOKEN}"
    assert sample.labels[0] == IGNORE_INDEX and sample.labels[1:].tolist() == sample.input_ids[1:].tolist()
    assert sample.media.shape == (1, 1, 3, 2, 2)
    short = ImageTextCollator(tokenizer=tokenizer, image_transform=_marker_transform, max_tokens=4)
    cut = short(SimpleNamespace(key="k", image=image, caption="a red circle on a white background"), random.Random(0))
    assert len(cut.input_ids) == 4 and int(cut.input_ids[-1]) == tokenizer.convert_tokens_to_ids(EOC_TOKEN)
    with pytest.raises(Rejected) as excinfo:
        collator(SimpleNamespace(key="k", image=image, caption="  "), random.Random(0))
    assert excinfo.value.reason == "empty_caption"
    video = VideoTextCollator(tokenizer=tokenizer, image_transform=_marker_transform, num_frames=8)
    frames = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(3)]
    clip = video(SimpleNamespace(key="v", frames=frames, caption="a red circle"), random.Random(0))
    assert clip.media.shape == (1, 8, 3, 2, 2)
    assert [int(clip.media[0, f, 0, 0, 0]) for f in range(8)] == [0, 1, 2, 2, 2, 2, 2, 2]


def test_caption_template_and_packed_pairs(tokenizer) -> None:
    inner = ImageTextCollator(tokenizer=tokenizer, image_transform=_marker_transform, max_tokens=32,
                              caption_template="before the {caption}")
    packed = PackedPairs(inner, pairs=2)
    red, blue = Image.new("RGB", (4, 4), (10, 0, 0)), Image.new("RGB", (4, 4), (20, 0, 0))
    assert packed(SimpleNamespace(key="a", image=red, caption="red circle"), random.Random(0)) is None
    with pytest.raises(Rejected):  # a rejected record leaves the pack as it was
        packed(SimpleNamespace(key="b", image=red, caption=" "), random.Random(0))
    sample = packed(SimpleNamespace(key="c", image=blue, caption="white background"), random.Random(0))
    assert tokenizer.decode(sample.input_ids) == (f"{IMAGE_TOKEN}before the red circle{EOC_TOKEN}"
                                                  f"{IMAGE_TOKEN}before the white background{EOC_TOKEN}")
    assert [int(sample.media[m, 0, 0, 0, 0]) for m in range(2)] == [10, 20]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert [int(t) for t, label in zip(sample.input_ids, sample.labels) if label == IGNORE_INDEX] == [image_id, image_id]
    # the next pack starts empty
    assert packed(SimpleNamespace(key="d", image=red, caption="red circle"), random.Random(0)) is None


def test_packed_pairs_random_size(tokenizer) -> None:
    # the size of each pack is randint(1, pairs) on the rng of its first record: seed 5 -> 3,
    # seed 1 -> 1, seed 0 -> 2 (later records' rngs do not change it)
    inner = ImageTextCollator(tokenizer=tokenizer, image_transform=_marker_transform, max_tokens=32)
    packed = PackedPairs(inner, pairs=3, random_size=True)
    images = [Image.new("RGB", (4, 4), (10 * i, 0, 0)) for i in range(1, 7)]
    seeds = [5, 1, 1, 1, 0, 5]
    out = [packed(SimpleNamespace(key=str(i), image=im, caption="red circle"), random.Random(seed))
           for i, (im, seed) in enumerate(zip(images, seeds))]
    assert [o is not None for o in out] == [False, False, True, True, False, True]
    assert [[int(m) for m in o.media[:, 0, 0, 0, 0]] for o in out if o is not None] == [[10, 20, 30], [40], [50, 60]]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert [int((o.input_ids == image_id).sum()) for o in out if o is not None] == [3, 1, 2]
    fixed = PackedPairs(inner, pairs=3)  # without random_size every pack holds exactly 3
    assert [fixed(SimpleNamespace(key=str(i), image=images[0], caption="red"), random.Random(1)) is None
            for i in range(3)] == [True, True, False]
    with pytest.raises(ValueError, match="pairs must be >= 1"):
        PackedPairs(inner, pairs=0)


def test_select_frames() -> None:
    assert select_frames(16, 8) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert select_frames(8, 8) == list(range(8))
    assert select_frames(2, 4) == [0, 1, 1, 1]
    assert select_frames(5, 1) == [0]


def test_pad_batch(tokenizer) -> None:
    collator = ImageTextCollator(tokenizer=tokenizer, image_transform=_marker_transform)
    image = Image.new("RGB", (4, 4), (50, 0, 0))
    samples = [collator(SimpleNamespace(key="k", image=image, caption=c), random.Random(0)) for c in ("a", "a red circle")]
    pad = tokenizer.pad_token_id
    batch = pad_batch(samples, pad_id=pad)
    length = len(samples[1].input_ids)
    assert batch["input_ids"].shape == (2, length) and batch["input_ids"].dtype == torch.long
    n0 = len(samples[0].input_ids)
    assert batch["input_ids"][0, n0:].tolist() == [pad] * (length - n0)
    assert batch["labels"][0, n0:].tolist() == [IGNORE_INDEX] * (length - n0)
    assert batch["attention_mask"].sum(dim=1).tolist() == [n0, length]
    assert batch["media"].shape == (2, 1, 1, 3, 2, 2)


def test_m3w_window_always_holds_an_image_even_between_far_apart_images():
    from flamboyance.trainer.collate import _window_start
    positions, length, size = [5, 500, 990], 1000, 20
    starts = collections.Counter(_window_start(positions, length, size, random.Random(i)) for i in range(3000))
    assert all(any(s <= p < s + size for p in positions) for s in starts)
    # every allowed start is drawn, and only those: [0, 5], [481, 500], [971, 980]
    assert set(starts) == set(range(0, 6)) | set(range(481, 501)) | set(range(971, 981))
    assert _window_start([1], 2, 8, random.Random(0)) == 0  # a document shorter than the window
