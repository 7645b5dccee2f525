"""`flamboyance pretrain-lm`: train the small causal LM that a CPU Flamingo then keeps frozen.

Flamingo reads its few-shot context through a *pretrained* frozen LM; a random one cannot copy a
name it saw in the context. This stage makes one here, on text only:

- the shards' text (M3W documents with the special tokens removed, image-text captions), and
- generated "binding" text in which made-up names are bound to key words differently in every
  passage and repeated (``This is red tobax. This is blue melup. This is red tobax.``),
- and random token runs shown twice (the classic setting in which induction heads form fast),
so that induction (copying what followed an earlier match) forms.

The tokenizer is a byte-level BPE trained on the same text (``model.tiny.build_tokenizer``, with
``<image>``/``<EOC>``/``<pad>`` already in it). The result is a plain HuggingFace folder
(``save_pretrained``: config, weights, tokenizer) that ``AutoModelForCausalLM.from_pretrained``
loads; ``train`` uses it with ``model.language_model: <folder>``. ``pretrain_lm.json`` beside it
holds the loss curve and the held-out induction check (names never seen in training, two bound in
the context: chance is 0.5).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HELP = "train the small causal LM (text only, with name-binding text for induction) that Flamingo keeps frozen"

KEY_WORDS = (
    "red green blue yellow orange purple pink brown black white gray round square tall short big small "
    "old new striped spotted shiny soft wooden paper glass silver golden heavy light little quiet happy "
    "circle star triangle diamond cross box ball cup hat bird fish tree boat"
).split()
"""Words a generated passage binds names to (one token or a few each)."""

BINDING_TEMPLATE = "<image>This is {key} {name}.<EOC>"
"""One line of a generated binding passage: a chunk as Flamingo sees them. The key word stands
where a naming story has "the" (``This is the tobax``): the token right before the name, the one
an induction head keys on. In Flamingo that "the" carries its image (the gated cross-attention
writes into it), so it plays the key; with "This is the {key} {name}" the LM learns that "the" is
followed by a key word, never by a name."""

REPORT_NAME = "pretrain_lm.json"


@dataclass(kw_only=True)
class PretrainLMConfig:
    """What `pretrain-lm` trains, on what, for how long."""

    output: str
    m3w: list[str] = field(default_factory=list)
    """M3W shard roots whose documents' text is used."""
    image_text: list[str] = field(default_factory=list)
    """Image-text shard roots whose captions are used."""
    records: int = 2000
    """Records read per source (in shard order)."""
    family: str = "llama"
    """Llama (rotary positions): its induction heads formed at ~900 steps here; a GPT-2 of the same
    size (learned absolute positions) had not begun to copy at 1000."""
    num_layers: int = 2
    hidden_size: int = 128
    num_heads: int = 4
    max_positions: int = 512
    vocab_size: int = 512
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 2500
    """With soft keys the phase change (the second copy of a random run suddenly predictable) came at
    ~1400-1600 steps; the soft-key binding forms right after it."""
    lr: float = 2e-3
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    """The lr is constant after warmup and decays (cosine, to 10 %) over this last share of steps
    only: an early decay delays the induction phase change."""
    weight_decay: float = 0.01
    binding_fraction: float = 0.45
    """Share of training sequences that are generated binding passages."""
    repeat_fraction: float = 0.45
    """Share of training sequences that are random token runs repeated (the rest: shard text)."""
    soft_key_fraction: float = 0.25
    """Share of each batch that is naming stories in Flamingo's format (``<image>This is the
    {name}.<EOC>``) with "soft keys": every token of an image's chunk gets its object's random
    vector added to its input embedding, the same vector wherever the object comes back in the
    sequence. The LM learns to bind names to whatever vector a chunk carries, which is what
    Flamingo's cross-attention writes for an image (0: text only)."""
    soft_key_scale: float = 1.0
    """Soft key vectors are drawn with this many times the embeddings' standard deviation."""
    keys_on_text: bool = False
    """Soft keys on all text that follows an image, as Flamingo's cross-attention writes into every
    token after an image, prose included: the shard text in the rest of the batch gets a random
    vector per image (`image_owners`), and a soft-key story's closing words carry its last chunk's
    key. An LM that saw keys on naming chunks only is thrown by them on a page's prose (README, "In-
    context learning at CPU scale"); off by default until the Flamingo trained on it does better."""
    seed: int = 0
    threads: int = 0
    """torch threads (0: torch's default, one per core)."""
    eval_queries: int = 200

    def __post_init__(self) -> None:
        for name in ("binding_fraction", "repeat_fraction", "decay_fraction", "soft_key_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.binding_fraction + self.repeat_fraction > 1.0:
            raise ValueError(f"binding_fraction + repeat_fraction must be <= 1, got "
                             f"{self.binding_fraction + self.repeat_fraction}")
        if self.text_fraction > 0 and not (self.m3w or self.image_text):
            raise ValueError("no shard text given (m3w / image_text); make binding_fraction + repeat_fraction 1 "
                             "to train on generated text only")
        for name in ("steps", "batch_size", "seq_len", "records", "eval_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.seq_len > self.max_positions:
            raise ValueError(f"seq_len {self.seq_len} exceeds max_positions {self.max_positions}")

    @property
    def text_fraction(self) -> float:
        """Share of training sequences that are shard text."""
        return max(0.0, 1.0 - self.binding_fraction - self.repeat_fraction)


def binding_passage(rng: random.Random, *, held_out: bool = False, num_lines: int | None = None) -> str:
    """A generated passage: 2..3 made-up names bound to distinct key words, each line naming one of
    them, every binding used at least twice (the later uses can be copied from the earlier)."""
    from flamboyance.crawl.sample_text import distinct_names

    count = rng.randint(2, 3)
    keys = rng.sample(KEY_WORDS, count)
    names = distinct_names(rng, count, held_out=held_out)
    order = [k % count for k in range(num_lines or rng.randint(2 * count, 10))]
    rng.shuffle(order)
    return "".join(BINDING_TEMPLATE.format(key=keys[i], name=names[i]) for i in order)


def _words(rng: random.Random, prose: Sequence[str], low: int, high: int) -> str:
    """A run of `low`..`high` consecutive words from a random text of `prose` (texts with words)."""
    words = rng.choice(prose).split()
    count = rng.randint(low, high)
    start = rng.randrange(max(1, len(words) - count + 1))
    return " ".join(words[start : start + count])


def _story_tokens(tokenizer: Any, names: Sequence[str], order: Sequence[int], *, rng: random.Random | None = None,
                  prose: Sequence[str] = (), keys_on_text: bool = False) -> tuple[list[int], list[int]]:
    """The token ids of the chunks ``<image>This is the {names[i]}.<EOC>`` for i in `order`, and
    for every token the object i of its chunk (-1: no object). With `prose` (shard texts) the story
    reads like a web page's: in half of the stories a few sentences' worth of words before the
    first image and after the last, and a short clause after the name in half of the chunks
    (``This is the tobax, kept by the window.``). With `keys_on_text` the words after the last
    chunk belong to its object, as in Flamingo every token sees the latest image before it."""
    from flamboyance.crawl.sample_web import NAMING_SENTENCE
    from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if prose and rng is None:
        raise ValueError("prose needs an rng to place it")
    page = bool(prose) and rng.random() < 0.5
    ids: list[int] = []
    objects: list[int] = []
    if page:
        intro = encode(_words(rng, prose, 5, 40))
        ids, objects = intro, [-1] * len(intro)
    for index in order:
        sentence = NAMING_SENTENCE.format(name=names[index])
        if prose and rng.random() < 0.5:
            sentence += ", " + _words(rng, prose, 1, 6).rstrip(".,;:!?")
        chunk = encode(f"{IMAGE_TOKEN}{sentence}.{EOC_TOKEN}")
        ids += chunk
        objects += [index] * len(chunk)
    if page:  # after the last chunk's <EOC>, before any next image: Flamingo shows it the last image
        closing = encode(" " + _words(rng, prose, 5, 30))
        ids, objects = ids + closing, objects + [order[-1] if keys_on_text else -1] * len(closing)
    return ids, objects


def soft_key_story(tokenizer: Any, rng: random.Random, *, held_out: bool = False,
                   num_lines: int | None = None, prose: Sequence[str] = (),
                   keys_on_text: bool = False) -> tuple[list[int], list[int]]:
    """A naming story as Flamingo reads it (2..3 objects, each shown at least twice, each image's
    chunk ``<image>This is the {name}.<EOC>``, with `prose` around it and in it as on a web page
    (`_story_tokens`)): its token ids, and for every token the object its chunk shows (0, 1, ...;
    -1 on the prose around the images, or before the first image only with `keys_on_text`)."""
    from flamboyance.crawl.sample_text import distinct_names

    count = rng.randint(2, 3)
    names = distinct_names(rng, count, held_out=held_out)
    order = [k % count for k in range(num_lines or rng.randint(2 * count, 8))]
    rng.shuffle(order)
    return _story_tokens(tokenizer, names, order, rng=rng, prose=prose, keys_on_text=keys_on_text)


def soft_key_rows(tokenizer: Any, rng: random.Random, *, rows: int, seq_len: int,
                  prose: Sequence[str] = (), keys_on_text: bool = False) -> tuple[Any, Any]:
    """`rows` training rows of `seq_len` + 1 tokens packed with soft-key stories (an EOS before
    each): ids (rows, seq_len + 1) and objects (same shape; -1 on EOS and on the prose without an
    object (`soft_key_story`), objects numbered apart across the stories of a row)."""
    import torch

    all_ids, all_objects = [], []
    for _ in range(rows):
        ids, objects = [], []
        while len(ids) < seq_len + 1:
            story, owners = soft_key_story(tokenizer, rng, prose=prose, keys_on_text=keys_on_text)
            base = max(objects, default=-1) + 1
            ids += [tokenizer.eos_token_id] + story
            objects += [-1] + [base + owner if owner >= 0 else -1 for owner in owners]
        all_ids.append(ids[: seq_len + 1])
        all_objects.append(objects[: seq_len + 1])
    return torch.tensor(all_ids), torch.tensor(all_objects)


def image_owners(ids: Sequence[int], *, image_id: int, eos_id: int) -> list[int]:
    """For every token of a training row, the image its text follows as Flamingo's per-image masking
    has it: the index (within the row) of the latest ``<image>`` at or before it in its own text
    (texts end at EOS), or -1 (before a text's first image)."""
    owners: list[int] = []
    latest, count = -1, 0
    for token in ids:
        if token == eos_id:
            latest = -1
        elif token == image_id:
            latest, count = count, count + 1
        owners.append(latest)
    return owners


def soft_key_embeddings(embedding: Any, ids: Any, objects: Any, *, scale: float, generator: Any = None) -> Any:
    """`embedding(ids)` plus, on every token with an object (`objects` >= 0), that object's random
    vector (one per row and object; standard deviation `scale` x the embeddings')."""
    import torch

    embedded = embedding(ids)
    if not bool((objects >= 0).any()):
        return embedded
    dim = embedded.shape[-1]
    std = float(embedding.weight.detach().std()) * scale
    vectors = torch.randn(ids.shape[0], int(objects.max()) + 1, dim, generator=generator) * std
    picked = vectors.gather(1, objects.clamp(min=0)[..., None].expand(-1, -1, dim))
    return embedded + picked * (objects >= 0)[..., None]


def soft_key_accuracy(lm: Any, tokenizer: Any, *, queries: int = 200, shots: int = 4, seed: int = 4321,
                      scale: float = 1.0) -> float:
    """Share of held-out soft-key stories (two held-out names, `shots` chunks, then a query chunk
    carrying one object's vector) whose name, ranked by log-likelihood between the two, is right
    (chance 0.5): whether the LM binds a name to the vector its chunk carries."""
    import torch
    from flamboyance.crawl.sample_text import distinct_names
    from flamboyance.crawl.sample_web import NAMING_SENTENCE
    from flamboyance.preprocess.tokens import IMAGE_TOKEN

    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    embedding = lm.get_input_embeddings()
    was_training = lm.training
    lm.eval()
    correct = 0
    with torch.inference_mode():
        for _ in range(queries):
            names = distinct_names(rng, 2, held_out=True)
            order = [0, 1] * (shots // 2)
            rng.shuffle(order)
            target = rng.randrange(2)
            ids, objects = _story_tokens(tokenizer, names, order)
            prompt = tokenizer(f"{IMAGE_TOKEN}{NAMING_SENTENCE.format(name='').rstrip()}",
                               add_special_tokens=False)["input_ids"]
            vectors = torch.randn(2, embedding.weight.shape[1], generator=generator)
            vectors *= float(embedding.weight.std()) * scale
            scores = []
            for name in names:
                answer = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
                row = torch.tensor([ids + prompt + answer])
                owners = torch.tensor(objects + [target] * (len(prompt) + len(answer)))
                logp = lm(inputs_embeds=embedding(row) + vectors[owners][None]).logits[0, :-1].log_softmax(-1)
                scores.append(float(logp.gather(1, row[0, 1:, None])[-len(answer):].sum()))
            correct += max(range(2), key=lambda i: scores[i]) == target
    lm.train(was_training)
    return correct / queries


def shard_texts(m3w: Sequence[str], image_text: Sequence[str], *, records: int) -> list[str]:
    """Text of the first `records` records of each source as Flamingo reads it: M3W sequences with
    their ``<image>``/``<EOC>`` markers, captions as ``<image>caption<EOC>``; whitespace runs
    collapsed."""
    from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
    from flamboyance.shards import open_dataset

    texts: list[str] = []
    for kind, roots in (("m3w", m3w), ("image_text", image_text)):
        for root in roots:
            dataset = open_dataset(root, kind=kind, shuffle=0, resampled=False, split_by_node=False,
                                   split_by_worker=False, decode=False)
            for record in itertools.islice(iter(dataset), records):
                text = (record.document.get("text") or "") if kind == "m3w" else record.caption
                text = " ".join(text.split())
                if text and kind == "image_text":
                    text = f"{IMAGE_TOKEN}{text}{EOC_TOKEN}"
                if text:
                    texts.append(text)
    return texts


class _Stream:
    """Training sequences of exactly `seq_len` + 1 tokens: binding passages (with probability
    `binding_fraction`), a random token run shown twice (`repeat_fraction`), or a window of the
    concatenated shard text."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], cfg: PretrainLMConfig, rng: random.Random) -> None:
        self.tokenizer, self.cfg, self.rng = tokenizer, cfg, rng
        self.eos = tokenizer.eos_token_id
        ids: list[int] = []
        for text in texts:
            ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
            ids.append(self.eos)
        self.corpus = ids

    def _binding(self) -> list[int]:
        ids: list[int] = []
        while len(ids) < self.cfg.seq_len + 1:
            ids.append(self.eos)
            ids.extend(self.tokenizer(binding_passage(self.rng), add_special_tokens=False)["input_ids"])
        return ids[: self.cfg.seq_len + 1]

    def _text(self) -> list[int]:
        n = self.cfg.seq_len + 1
        if len(self.corpus) <= n:
            return (self.corpus * (n // max(1, len(self.corpus)) + 1))[:n]
        start = self.rng.randrange(0, len(self.corpus) - n)
        return self.corpus[start : start + n]

    def _repeat(self) -> list[int]:
        n = self.cfg.seq_len + 1
        length = self.rng.randint(4, max(4, n // 3))  # shown at least 3 times
        vocab = len(self.tokenizer)
        run = [self.rng.randrange(vocab) for _ in range(length)]
        ids: list[int] = []
        while len(ids) < n:
            ids += [self.eos] + run
        return ids[:n]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            draw = self.rng.random()
            if draw < self.cfg.binding_fraction:
                yield self._binding()
            elif draw < self.cfg.binding_fraction + self.cfg.repeat_fraction or not self.corpus:
                yield self._repeat()
            else:
                yield self._text()


def induction_accuracy(lm: Any, tokenizer: Any, *, queries: int = 200, seed: int = 1234,
                       context_lines: int = 4) -> float:
    """Share of held-out binding passages (names never trained on, two bound in the context over
    `context_lines` lines) whose last line's name, ranked by log-likelihood between the two, is
    the one bound to its key. Chance is 0.5."""
    import torch
    from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN

    rng = random.Random(seed)
    correct = 0
    lm.eval()
    with torch.inference_mode():
        for _ in range(queries):
            names = None
            while names is None:
                passage = binding_passage(rng, held_out=True, num_lines=context_lines)
                lines = [line.removeprefix(IMAGE_TOKEN).removesuffix("." + EOC_TOKEN)
                         for line in passage.split(EOC_TOKEN)[:-1]]
                bound = dict(line.rsplit(" ", 1) for line in lines)
                if len(bound) == 2:  # exactly two names in the context
                    names = list(bound.items())
            key_line, target = rng.choice(names)
            prompt = passage + IMAGE_TOKEN + key_line
            scores = []
            for _, name in names:
                prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                cont_ids = tokenizer(" " + name + "." + EOC_TOKEN, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([prompt_ids + cont_ids])
                logits = lm(input_ids=ids).logits[0, :-1].log_softmax(-1)
                targets = ids[0, 1:]
                picked = logits.gather(1, targets[:, None])[:, 0]
                scores.append(float(picked[len(prompt_ids) - 1 :].sum()))
            best = names[max(range(len(names)), key=lambda i: scores[i])][1]
            correct += best == target
    return correct / queries


def repeat_copy_loss(lm: Any, vocab_size: int, *, length: int = 30, rows: int = 32, seed: int = 7) -> tuple[float, float]:
    """Mean next-token loss (nats) on the first and on the second copy of `rows` random token runs
    of `length` shown twice. Without induction both are about ln(vocab_size); once induction heads
    form (the phase change) the second copy's loss drops towards 0."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    run = torch.randint(0, vocab_size, (rows, length), generator=generator)
    ids = torch.cat([run, run], dim=1)
    was_training = lm.training
    lm.eval()
    with torch.inference_mode():
        logp = lm(input_ids=ids).logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
    lm.train(was_training)
    # position i predicts token i + 1: the first copy's targets are 1..length-1, the second's length..
    return float(-logp[:, : length - 1].mean()), float(-logp[:, length - 1 :].mean())


def pretrain_lm(cfg: PretrainLMConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the LM of `cfg` and write it (model + tokenizer, `save_pretrained`) to `cfg.output`
    atomically; returns (and writes as ``pretrain_lm.json``) the report."""
    import torch
    from flamboyance.crawl.sample_text import distinct_names
    from flamboyance.crawl.sample_web import NAMING_SENTENCE
    from flamboyance.model.tiny import build_tokenizer, tiny_lm_config
    from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
    from transformers import AutoModelForCausalLM

    log = log or (lambda message: None)
    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    texts = shard_texts(cfg.m3w, cfg.image_text, records=cfg.records) if cfg.text_fraction > 0 else []
    if cfg.text_fraction > 0 and not texts:
        raise ValueError(f"no text in the first {cfg.records} records of {cfg.m3w + cfg.image_text}")
    generated = [binding_passage(random.Random(f"tok{i}")) for i in range(max(200, len(texts) // 2))]
    # the naming stories' and novel-names' sentence, so that " the" (the token before the name,
    # where Flamingo's image stands) is one token even when no shard text is given
    generated += [NAMING_SENTENCE.format(name=name) + "." for name in distinct_names(random.Random(0), 10)] * 20
    tokenizer = build_tokenizer(texts + generated, vocab_size=cfg.vocab_size)
    lm_config = tiny_lm_config(cfg.family, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, num_layers=cfg.num_layers,
                               hidden_size=cfg.hidden_size, num_heads=cfg.num_heads,
                               max_positions=cfg.max_positions, init_std=0.02)
    lm = AutoModelForCausalLM.from_config(lm_config)
    log(f"pretrain-lm: {cfg.family} {cfg.num_layers}x{cfg.hidden_size}, vocab {len(tokenizer)}, "
        f"{sum(p.numel() for p in lm.parameters()) / 1e6:.2f}M parameters; {len(texts)} shard texts")
    before = induction_accuracy(lm, tokenizer, queries=cfg.eval_queries)
    copy_losses: list[tuple[int, float, float]] = []  # (step, first copy, second copy): the phase change
    optimizer = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    decay_start = max(cfg.warmup_steps, round(cfg.steps * (1.0 - cfg.decay_fraction)))

    def lr_at(step: int) -> float:  # linear warmup, constant, cosine to 10 % over the last steps
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if step < decay_start:
            return cfg.lr
        progress = (step - decay_start) / max(1, cfg.steps - decay_start)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    stream = iter(_Stream(tokenizer, texts, cfg, rng))
    losses: list[tuple[int, float]] = []
    lm.train()
    running = None
    soft_rows = round(cfg.soft_key_fraction * cfg.batch_size)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    prose = [" ".join(t.replace(IMAGE_TOKEN, " ").replace(EOC_TOKEN, " ").split()) for t in texts]
    prose = [t for t in prose if t]
    soft_before = soft_key_accuracy(lm, tokenizer, queries=cfg.eval_queries, scale=cfg.soft_key_scale) \
        if soft_rows else None
    for step in range(cfg.steps):
        batch = torch.tensor([next(stream) for _ in range(cfg.batch_size - soft_rows)])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        if soft_rows:
            soft_ids, objects = soft_key_rows(tokenizer, rng, rows=soft_rows, seq_len=cfg.seq_len, prose=prose,
                                              keys_on_text=cfg.keys_on_text)
            if cfg.keys_on_text:  # the other rows' shard text: a key per image on what follows it
                text_objects = torch.tensor([image_owners(row, image_id=image_id, eos_id=tokenizer.eos_token_id)
                                             for row in batch.tolist()])
            else:
                text_objects = torch.full((cfg.batch_size - soft_rows, cfg.seq_len + 1), -1)
            batch = torch.cat([soft_ids, batch])
            objects = torch.cat([objects, text_objects])
            embedded = soft_key_embeddings(lm.get_input_embeddings(), batch, objects, scale=cfg.soft_key_scale)
            loss = lm(inputs_embeds=embedded, labels=batch).loss
        else:
            loss = lm(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        running = value if running is None else 0.9 * running + 0.1 * value
        if step % 100 == 0 or step == cfg.steps - 1:
            losses.append((step, round(running, 4)))
            first, second = repeat_copy_loss(lm, len(tokenizer))
            copy_losses.append((step, round(first, 4), round(second, 4)))
            log(f"pretrain-lm step {step}/{cfg.steps} loss {running:.3f}, random run shown twice: loss "
                f"{first:.2f} on the first copy, {second:.2f} on the second ({time.monotonic() - started:.0f}s)")
    after = induction_accuracy(lm, tokenizer, queries=cfg.eval_queries)
    log(f"pretrain-lm: held-out induction accuracy (2 names, chance 0.5) {before:.3f} -> {after:.3f}")
    soft = None
    if soft_rows:
        soft = {"before": soft_before,
                "after": soft_key_accuracy(lm, tokenizer, queries=cfg.eval_queries, scale=cfg.soft_key_scale)}
        log(f"pretrain-lm: held-out soft-key binding accuracy (4 chunks, chance 0.5) {soft['before']:.3f} -> "
            f"{soft['after']:.3f}")
    report = {"config": asdict(cfg), "parameters": sum(p.numel() for p in lm.parameters()),
              "vocab_size": len(tokenizer), "shard_texts": len(texts), "loss": losses,
              "repeat_copy_loss": copy_losses,
              "induction_accuracy": {"before": before, "after": after},
              "soft_key_accuracy": soft,
              "seconds": round(time.monotonic() - started, 1)}
    out = Path(cfg.output)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return report


_OPTIONS = ("records", "family", "num_layers", "hidden_size", "num_heads", "max_positions", "vocab_size", "seq_len",
            "batch_size", "steps", "lr", "warmup_steps", "decay_fraction", "binding_fraction", "repeat_fraction",
            "soft_key_fraction", "soft_key_scale", "seed", "threads", "eval_queries")
"""The config fields `flamboyance pretrain-lm` takes as options."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flamboyance pretrain-lm`."""
    defaults = PretrainLMConfig(output="", binding_fraction=0.5, repeat_fraction=0.5)
    parser.add_argument("--output", required=True, help="folder for the model (save_pretrained)")
    parser.add_argument("--m3w", action="append", default=[], help="M3W shard root (repeatable)")
    parser.add_argument("--image-text", action="append", default=[], help="image-text shard root (repeatable)")
    parser.add_argument("--keys-on-text", action="store_true",
                        help="soft keys on all text after an image too (shard text, story closings)")
    for name in _OPTIONS:
        value = getattr(defaults, name)
        default = getattr(PretrainLMConfig, name, value) if name.endswith("_fraction") else value
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=default,
                            help=f"default {default}")


def run(args: argparse.Namespace) -> int:
    """Train and save; prints the report's headline."""
    try:
        cfg = PretrainLMConfig(output=args.output, m3w=args.m3w, image_text=args.image_text,
                               keys_on_text=args.keys_on_text, **{n: getattr(args, n) for n in _OPTIONS})
    except ValueError as err:
        raise SystemExit(f"pretrain-lm: {err}") from err
    report = pretrain_lm(cfg, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(f"wrote {cfg.output}: loss {report['loss'][0][1]} -> {report['loss'][-1][1]}, held-out induction "
          f"accuracy {report['induction_accuracy']['before']:.3f} -> {report['induction_accuracy']['after']:.3f}")
    return 0


COMMANDS = {"pretrain-lm": (HELP, add_arguments, run)}

__all__ = ["BINDING_TEMPLATE", "KEY_WORDS", "PretrainLMConfig", "binding_passage", "induction_accuracy",
           "pretrain_lm", "repeat_copy_loss", "shard_texts", "soft_key_accuracy", "soft_key_embeddings",
           "soft_key_rows", "soft_key_story"]
