"""Learning check: a tiny Flamingo learns to name the colour of a shape it sees.

Images are coloured shapes on a grey background; captions are "a <colour> <shape>". The frozen
vision tower is a tiny random CLIP (random frozen features still carry colour). Only the resampler,
the gated cross-attention blocks and the new tokens' rows train.
- with images: >= 95% accuracy on the colour word, single and interleaved two-image sequences
  (in the latter each caption must name ITS image's colour: fails if tokens see the wrong image);
- the same model trained with the images withheld (blank pixels) stays at chance.
"""

from __future__ import annotations

import random

import torch
from flamboyance.model import Flamingo
from flamboyance.model.tiny import build_tokenizer, tiny_config
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 230), "yellow": (230, 220, 30)}
SHAPES = ("circle", "square", "triangle")
IMAGE_SIZE = 32
STEPS = 80
BATCH = 16


def draw_shape(colour: str, shape: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    size = rng.randint(12, 22)
    x, y = rng.randint(0, IMAGE_SIZE - size), rng.randint(0, IMAGE_SIZE - size)
    box = (x, y, x + size, y + size)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    else:
        draw.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=COLOURS[colour])
    return image


def caption(colour: str, shape: str) -> str:
    return f"{IMAGE_TOKEN}a {colour} {shape}{EOC_TOKEN}"


class ShapeTask:
    """Batches of one- or two-image sequences, with the positions of the colour words."""

    def __init__(self, model: Flamingo, seed: int) -> None:
        self.model = model
        self.rng = random.Random(seed)
        tok = model.tokenizer
        self.colour_ids = {c: tok.encode(f" {c}", add_special_tokens=False) for c in COLOURS}
        assert all(len(ids) == 1 for ids in self.colour_ids.values()), self.colour_ids
        self.colour_ids = {c: ids[0] for c, ids in self.colour_ids.items()}
        self.pool = {
            (c, s): [model.image_transform(draw_shape(c, s, self.rng)) for _ in range(6)]
            for c in COLOURS
            for s in SHAPES
        }

    def batch(self, size: int, num_images: int, *, blank: bool = False):
        tok = self.model.tokenizer
        texts, media, colours = [], [], []
        for _ in range(size):
            picks = [(self.rng.choice(list(COLOURS)), self.rng.choice(SHAPES)) for _ in range(num_images)]
            texts.append("".join(caption(c, s) for c, s in picks))
            media.append(torch.stack([self.rng.choice(self.pool[p]) for p in picks]))
            colours.append([c for c, _ in picks])
        enc = tok(texts, return_tensors="pt", padding=True)
        ids = enc.input_ids
        pixels = torch.stack(media)[:, :, None]  # (batch, media, frames=1, C, H, W)
        if blank:
            pixels = torch.zeros_like(pixels)
        labels = ids.masked_fill(enc.attention_mask == 0, -100).masked_fill(
            ids == self.model.image_token_id, -100
        )
        # the colour word is the token two after each <image>
        image_pos = [(row == self.model.image_token_id).nonzero().flatten().tolist() for row in ids]
        targets = [
            [(p + 2, self.colour_ids[c]) for p, c in zip(positions, row_colours)]
            for positions, row_colours in zip(image_pos, colours)
        ]
        return ids, enc.attention_mask, pixels, labels, targets


def train(model: Flamingo, task: ShapeTask, *, blank: bool) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(STEPS):
        ids, mask, pixels, labels, _ = task.batch(BATCH, 1 + step % 2, blank=blank)
        loss = model(ids, mask, pixels, labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def colour_accuracy(model: Flamingo, task: ShapeTask, num_images: int, *, blank: bool = False) -> list[float]:
    """Accuracy of the argmax (over the whole vocabulary) on the colour word after image k, per k."""
    model.eval()
    ids, mask, pixels, _, targets = task.batch(160, num_images, blank=blank)
    predictions = model(ids, mask, pixels).logits.argmax(dim=-1)
    accuracy = []
    for k in range(num_images):
        hits = [int(predictions[b, row[k][0] - 1]) == row[k][1] for b, row in enumerate(targets)]
        accuracy.append(sum(hits) / len(hits))
    return accuracy


def build(tokenizer):
    config = tiny_config(
        family="gpt2",
        tokenizer=tokenizer,
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_latents=8,
        resampler_depth=1,
        cross_attn_every=1,
        init_seed=0,
    )
    return Flamingo.from_config(config)


def test_tiny_flamingo_learns_colours_and_not_without_images():
    corpus = [f"a {c} {s}" for c in COLOURS for s in SHAPES] * 4
    tokenizer = build_tokenizer(corpus, vocab_size=300)

    model = build(tokenizer)
    task = ShapeTask(model, seed=1)
    train(model, task, blank=False)
    single = colour_accuracy(model, task, 1)
    double = colour_accuracy(model, task, 2)
    print("accuracy single", single, "double", double)
    assert single[0] >= 0.95, single
    assert min(double) >= 0.95, double

    # generation stops at <EOC> and names the colour it sees (greedy and beam)
    ids, mask, pixels, _, targets = task.batch(8, 1)
    prompt = ids[:, :2]  # "<image>a"
    for beams in (1, 3):
        out = model.generate(prompt, torch.ones_like(prompt), pixels, max_new_tokens=6, num_beams=beams)
        for b in range(8):
            row = out[b].tolist()
            assert row[0] == targets[b][0][1], (beams, row)
            assert model.eoc_token_id in row, (beams, row)
            after = row[row.index(model.eoc_token_id) + 1 :]
            assert all(t == model.pad_token_id for t in after), row

    control = build(tokenizer)
    control_task = ShapeTask(control, seed=1)
    train(control, control_task, blank=True)
    chance = colour_accuracy(control, control_task, 1, blank=True)
    print("accuracy without images", chance)
    assert chance[0] <= 0.45, chance  # 4 balanced colours: chance is 0.25
