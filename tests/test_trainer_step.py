"""The optimizer step: which parameters decay, the learning rate it reports, and batches that
must never reach the optimizer (no targets, non-finite loss)."""

from __future__ import annotations

import pytest
import torch
from flamboyance.model import Flamingo
from flamboyance.model.tiny import tiny_config
from flamboyance.trainer.collate import IGNORE_INDEX
from flamboyance.trainer.config import OptimConfig
from flamboyance.trainer.step import build_optimizer, train_step
from torch import nn


@pytest.fixture(scope="module")
def model() -> Flamingo:
    model = Flamingo.from_config(tiny_config(family="llama", num_layers=2, cross_attn_every=1, init_seed=1))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("_gate"):
                param.fill_(0.5)
    return model.train()


def _batch(model: Flamingo) -> dict[str, torch.Tensor]:
    ids = model.tokenizer(["<image>a red circle<EOC>"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[ids == model.image_token_id] = IGNORE_INDEX
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "media": torch.randn(1, 1, 1, 3, 32, 32, generator=generator),
    }


def test_decay_only_on_xattn_and_resampler_weight_matrices(model: Flamingo) -> None:
    trainable = set(model.trainable_parameters())
    optimizer, _ = build_optimizer(model, trainable, OptimConfig(lr=1e-4, warmup_steps=0, weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    linear = {f"{m}.weight" for m, module in model.named_modules() if isinstance(module, nn.Linear)}
    expected = {n for n in trainable if n in linear and n.startswith(("xattn.", "resampler."))}
    assert decayed == expected and decayed | plain == trainable and not decayed & plain
    assert any(n.startswith("resampler.") for n in decayed) and any(n.startswith("xattn.") for n in decayed)
    for never in ("xattn.0.attn_gate", "xattn.0.ff_gate", "xattn.0.attn.norm.weight", "xattn.0.attn.norm.bias",
                  "resampler.latents", "resampler.frame_embeddings", "resampler.norm.weight",
                  "new_token_embeddings"):
        assert never in plain, never
    # with zero gradients, AdamW moves only the decayed weights: by exactly lr * weight_decay * w
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}
    for n, p in model.named_parameters():
        if n in trainable:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    for n, p in model.named_parameters():
        if n in trainable:
            factor = 1 - 1e-4 * 0.1 if n in decayed else 1.0
            assert torch.allclose(p.detach(), before[n] * factor, rtol=1e-7, atol=1e-10), n
            p.data.copy_(before[n])
            p.grad = None


def test_reported_lr_is_the_applied_one(model: Flamingo) -> None:
    trainable = set(model.trainable_parameters())
    optimizer, scheduler = build_optimizer(model, trainable, OptimConfig(lr=1e-3, warmup_steps=4, weight_decay=0.0))
    gate = model.xattn["0"].attn_gate
    applied = []
    for _ in range(5):
        before = gate.detach().clone()
        result = train_step(model, optimizer, scheduler, {"image_text": _batch(model)}, {"image_text": 1.0})
        # Adam's first steps move a parameter with a clear gradient by ~lr (|m/sqrt(v)| ~ 1)
        applied.append(float((gate.detach() - before).abs()))
        assert result.lr == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3][len(applied) - 1])
    # Adam's first step moves by ~lr: the reported 2.5e-4, not the next step's 5e-4
    assert applied[0] == pytest.approx(2.5e-4, rel=0.05)


def test_batches_without_targets_or_finite_loss_never_reach_the_optimizer(model: Flamingo) -> None:
    trainable = set(model.trainable_parameters())
    optimizer, scheduler = build_optimizer(model, trainable, OptimConfig(lr=1e-3, warmup_steps=0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    empty = _batch(model)
    empty["labels"] = torch.full_like(empty["labels"], IGNORE_INDEX)
    with pytest.raises(ValueError, match="every label of the batch is ignored"):
        train_step(model, optimizer, scheduler, {"image_text": _batch(model), "m3w": empty},
                   {"image_text": 1.0, "m3w": 1.0})
    broken = _batch(model)
    broken["media"] = torch.full_like(broken["media"], float("nan"))
    with pytest.raises(FloatingPointError, match="no weight was changed"):
        train_step(model, optimizer, scheduler, {"image_text": broken}, {"image_text": 1.0})
    assert not optimizer.state and scheduler.last_epoch == 0
    assert all(p.grad is None for p in model.parameters())
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


def test_relative_stream_gates_are_logged_and_never_decayed():
    from flamboyance.trainer.metrics import gate_values

    relative = Flamingo.from_config(
        tiny_config(family="gpt2", cross_attn_every=1, relative_media=True, relative_gate_init=0.3)
    )
    values = gate_values(relative)
    assert set(values) == {f"gate/{layer}/{kind}" for layer in ("0", "1") for kind in ("attn", "ff", "relative")}
    assert values["gate/0/relative"] == pytest.approx(float(torch.tanh(torch.tensor(0.3))))
    trainable = {n for n, p in relative.named_parameters() if p.requires_grad}
    optimizer, _ = build_optimizer(relative, trainable, OptimConfig(lr=1e-3, weight_decay=0.1))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    named = dict(relative.named_parameters())
    assert id(named["xattn.0.relative_gate"]) not in decayed
    assert id(named["xattn.0.relative_attn.to_q.weight"]) in decayed
    assert id(named["relative_resampler.layers.0.0.to_kv.weight"]) in decayed
