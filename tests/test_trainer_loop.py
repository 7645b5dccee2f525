"""The per-worker loop in one process (no Ray): exact gradient accumulation, exact resume,
round-robin mode, and the run folder it leaves."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from flamboyance.model import Flamingo
from flamboyance.model.tiny import build_tokenizer, tiny_config
from flamboyance.trainer.build import INIT_DIR, prepare_run
from flamboyance.trainer.checkpoint import latest_local_checkpoint
from flamboyance.trainer.collate import build_collator, pad_batch
from flamboyance.trainer.config import OptimConfig, SourceConfig, load_config
from flamboyance.trainer.launch import train
from flamboyance.trainer.loop import CHECKPOINTS_DIR
from flamboyance.trainer.metrics import EVENTS_NAME, METRICS_NAME, read_metrics
from flamboyance.trainer.step import build_optimizer, forward_loss, train_step
from flamboyance.trainer.tiny_data import caption, shape_png, write_tiny_shards
from PIL import Image
from safetensors.torch import load_file

# --- exactness of the accumulated step ---------------------------------------------------------


def _batches(model: Flamingo) -> dict[str, dict[str, torch.Tensor]]:
    import io

    rng = random.Random(0)
    sources = {
        "image_text": SourceConfig(urls=["-"], max_tokens=32),
        "m3w": SourceConfig(urls=["-"], max_tokens=48, next_image_p=0.5),
    }
    records = {
        "image_text": [
            SimpleNamespace(key=f"k{i}", image=Image.open(io.BytesIO(shape_png(c, s))), caption=caption(c, s))
            for i, (c, s) in enumerate([("red", "circle"), ("blue", "square"), ("green", "triangle")])
        ],
        "m3w": [
            SimpleNamespace(
                key=f"d{i}",
                document={"text": f"Gallery {i}.<image>{caption('red', 'square')}<EOC><image>{caption('blue', 'circle')}<EOC>"},
                images=[Image.open(io.BytesIO(shape_png("red", "square"))), Image.open(io.BytesIO(shape_png("blue", "circle")))],
            )
            for i in range(2)
        ],
    }
    out = {}
    for name, source in sources.items():
        collator = build_collator(name, tokenizer=model.tokenizer, image_transform=model.image_transform, source=source)
        out[name] = pad_batch([collator(r, rng) for r in records[name]], pad_id=model.tokenizer.pad_token_id)
    return out


def _model() -> Flamingo:
    tokenizer = build_tokenizer([caption("red", "circle"), "Gallery of shapes"] * 3, vocab_size=300)
    model = Flamingo.from_config(tiny_config(tokenizer=tokenizer, init_seed=3))
    with torch.no_grad():  # open the gates so every trainable parameter gets a gradient
        for name, param in model.named_parameters():
            if name.endswith("_gate"):
                param.fill_(0.5)
    model.train()
    return model


def test_one_step_applies_the_weighted_sum_of_separate_gradients() -> None:
    weights = {"image_text": 0.2, "m3w": 1.0}
    optim = OptimConfig(lr=1e-2, warmup_steps=0, grad_clip=0.05, weight_decay=0.1)

    model = _model()
    batches = _batches(model)
    trainable = set(model.trainable_parameters())
    optimizer, scheduler = build_optimizer(model, trainable, optim)
    before = {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
    result = train_step(model, optimizer, scheduler, batches, weights, grad_clip=optim.grad_clip)

    # single-process reference: each source's gradient on its own, weighted sum, clip, one AdamW step
    reference = _model()
    params = reference.trainable_parameters()
    names = list(params)
    summed = {n: torch.zeros_like(p) for n, p in params.items()}
    unweighted = {n: torch.zeros_like(p) for n, p in params.items()}
    for source, batch in batches.items():
        loss = forward_loss(reference, batch)
        assert torch.allclose(loss, result.losses[source], atol=1e-6)
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            assert g is not None, f"{n} gets no gradient from {source}"
            summed[n] += weights[source] * g
            unweighted[n] += g
    norm = torch.sqrt(sum((g**2).sum() for g in summed.values()))
    assert result.grad_norm == pytest.approx(float(norm), rel=1e-5)
    assert float(norm) > optim.grad_clip  # clipping is active in this test
    # the step applied the clipped weighted sum (train_step leaves the applied gradient in .grad)
    applied = {n: p.grad.detach().clone() for n, p in model.trainable_parameters().items()}
    for n in names:
        expected = summed[n] * (optim.grad_clip / (float(norm) + 1e-6))
        assert torch.allclose(applied[n], expected, atol=1e-8, rtol=1e-5), n
    # ... through one AdamW step (Adam divides each element by its own magnitude, so this part is
    # checked with the applied gradient itself: float-rounding of near-zero elements would dominate)
    ref_optimizer, _ = build_optimizer(reference, trainable, optim)
    for n, p in params.items():
        p.grad = applied[n]
    ref_optimizer.step()
    for n, p in model.trainable_parameters().items():
        assert torch.equal(p, params[n]), n
    # exactly one optimizer and scheduler step
    assert all(int(s["step"]) == 1 for s in optimizer.state.values())
    assert scheduler.last_epoch == 1
    # and the comparison is sharp: the unweighted sum gives another direction
    unweighted_norm = torch.sqrt(sum((g**2).sum() for g in unweighted.values()))
    direction = {n: g / unweighted_norm for n, g in unweighted.items()}
    weighted_direction = {n: g / norm for n, g in summed.items()}
    assert max(float((direction[n] - weighted_direction[n]).abs().max()) for n in names) > 1e-3
    assert any(not torch.equal(before[n], p) for n, p in model.trainable_parameters().items())


def _rows(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    return {k: v[rank::world] for k, v in batch.items()}


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os
    from datetime import timedelta

    import torch.distributed as dist
    from flamboyance.trainer.step import accumulate_gradients
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    model = _model()
    batches = {name: _rows(b, rank, world) for name, b in _batches(model).items()}
    ddp = DistributedDataParallel(model)
    accumulate_gradients(ddp, batches, {"image_text": 0.2, "m3w": 1.0})
    grads = {n: p.grad.detach().clone() for n, p in model.trainable_parameters().items()}
    torch.save(grads, f"{out_dir}/rank{rank}.pt")
    # no destroy_process_group: rank 0 hosts the store, and a rank tearing down after rank 0 has
    # exited can wait on it; the processes end here anyway


@pytest.mark.timeout(60)
def test_two_ddp_workers_apply_the_mean_of_their_weighted_sums(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # single-process reference: per rank, per source gradients weighted and summed; mean over ranks
    reference = _model()
    params = reference.trainable_parameters()
    names = list(params)
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = _batches(reference)
    for rank in range(2):
        for source, weight in (("image_text", 0.2), ("m3w", 1.0)):
            loss = forward_loss(reference, _rows(batches[source], rank, 2))
            for n, g in zip(names, torch.autograd.grad(loss, [params[n] for n in names])):
                expected[n] += weight * g / 2
    for n in names:
        assert torch.equal(got[0][n], got[1][n]), n  # synchronised
        assert torch.allclose(got[0][n], expected[n], atol=1e-7, rtol=1e-5), n


# --- whole runs in one process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("loop")
    shards = write_tiny_shards(root / "shards", samples=24, per_shard=8)
    overrides = [
        f"data.m3w.urls=[{shards['m3w']}]",
        f"data.image_text.urls=[{shards['image_text']}]",
        "data.m3w.batch_size=2",
        "data.m3w.max_tokens=48",
        "data.image_text.batch_size=3",
        "data.image_text.weight=0.2",
        "model.tokenizer_vocab_size=320",
        "model.tokenizer_corpus_records=40",
        "ray.enabled=false",
        "optim.lr=1e-2",
        "optim.warmup_steps=2",
        "checkpoint.every=3",
        "checkpoint.keep=5",
        "logging.progress=false",
        "data.num_workers=0",
    ]
    init_run = root / "init_run"
    prepare_run(load_config(None, [*overrides, f"run_dir={init_run}"]).resolved())
    return {"root": root, "overrides": overrides, "init": init_run / INIT_DIR}


def _run(workspace: dict, name: str, *extra: str) -> Path:
    run_dir = workspace["root"] / name
    if not (run_dir / INIT_DIR).exists():  # the same untrained model for every run (saves building it)
        shutil.copytree(workspace["init"], run_dir / INIT_DIR)
    train(load_config(None, [*workspace["overrides"], f"run_dir={run_dir}", *extra]))
    return run_dir


def test_resume_continues_with_the_same_batches_and_losses(workspace: dict) -> None:
    whole = _run(workspace, "whole", "max_steps=6")
    _run(workspace, "split", "max_steps=3")
    split = _run(workspace, "split", "max_steps=6")
    a, b = read_metrics(whole / METRICS_NAME), read_metrics(split / METRICS_NAME)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    # the logged lr is the one each step applied (lr 1e-2, 2 warmup steps)
    assert [r["lr"] for r in a] == pytest.approx([5e-3, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2])
    for ra, rb in zip(a, b):
        for key in ("loss/m3w", "loss/image_text", "lr", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), (ra["step"], key)
    events = [json.loads(line) for line in (split / EVENTS_NAME).read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events] == [("start", 0), ("end", 3), ("start", 3), ("end", 6)]
    # same data consumed and the same trained weights
    state_a = torch.load(latest_local_checkpoint(whole / CHECKPOINTS_DIR) / "rank_00000.pt", weights_only=False)
    state_b = torch.load(latest_local_checkpoint(split / CHECKPOINTS_DIR) / "rank_00000.pt", weights_only=False)
    assert state_a["data"] == state_b["data"]
    assert state_a["data"]["m3w"]["batches"] == 6
    wa, wb = load_file(str(whole / "final/trainable.safetensors")), load_file(str(split / "final/trainable.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    init = load_file(str(whole / "init/trainable.safetensors"))
    assert any(not torch.equal(init[k], wa[k]) for k in wa)
    # the run folder: init and final models, TensorBoard events, gate plot, checkpoints
    assert Flamingo.from_pretrained(whole / "final").tokenizer.pad_token_id is not None
    assert list((whole / "tensorboard").glob("events.out.tfevents.*"))
    assert (whole / "gates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (whole / CHECKPOINTS_DIR).iterdir()) == ["step_00000003", "step_00000006"]
    record = a[-1]
    for key in ("lr", "tokens_per_s", "samples_per_s", "data_wait_fraction", "gate/0/attn", "gate/1/ff"):
        assert key in record
    assert 0.0 <= record["data_wait_fraction"] <= 1.0


def test_round_robin_uses_one_source_per_step(workspace: dict) -> None:
    run = _run(workspace, "round_robin", "max_steps=4", "mode=round_robin", "logging.tensorboard=false")
    records = read_metrics(run / METRICS_NAME)
    losses = [sorted(k for k in r if k.startswith("loss/") and k != "loss/weighted") for r in records]
    assert losses == [["loss/m3w"], ["loss/image_text"], ["loss/m3w"], ["loss/image_text"]]
    state = torch.load(latest_local_checkpoint(run / CHECKPOINTS_DIR) / "rank_00000.pt", weights_only=False)
    assert state["data"]["m3w"]["batches"] == 2 and state["data"]["image_text"]["batches"] == 2
