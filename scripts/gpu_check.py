"""`make gpu-check`: a short bf16 FSDP run of the gpu.yaml model family (a Llama LM with a CLIP
ViT tower) at a small size on every GPU of this machine; prints step time, peak memory and MFU.

Without CUDA it says so and exits 0. ``--cpu`` runs the same code on 2 CPU processes (gloo, a
tiny size) to check the script itself. The towers are random (nothing is downloaded); the
model is built by the trainer's own path: init folder -> meta build -> FSDP shard -> load shards.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
"""Dense bf16 peak per GPU (datasheets), matched against the device name; override with
FLAMBOYANCE_PEAK_TFLOPS."""

SIZES = {
    # gpu.yaml's family (TinyLlama: Llama 2 layout, 32k vocab; CLIP ViT-L/14 at 224 px), scaled down
    "small": {"layers": 8, "hidden": 1024, "heads": 16, "mlp": 2816, "vocab": 32000, "vision_hidden": 512,
              "vision_layers": 6, "image": 224, "patch": 14, "batch": 8, "tokens": 256, "images": 5},
    "tiny": {"layers": 4, "hidden": 64, "heads": 4, "mlp": 128, "vocab": 512, "vision_hidden": 64,
             "vision_layers": 2, "image": 28, "patch": 14, "batch": 2, "tokens": 32, "images": 2},
}


def build_init(directory: Path, size: dict, *, frozen_dtype: str) -> None:
    """Write the init folder of a random model of ``size`` (what ``prepare_run`` does for a run)."""
    from flamboyance.model import Flamingo, FlamingoConfig
    from flamboyance.model.tiny import DEFAULT_CORPUS, build_tokenizer
    from transformers import CLIPVisionConfig, LlamaConfig

    tokenizer = build_tokenizer(DEFAULT_CORPUS, vocab_size=300)
    lm = LlamaConfig(vocab_size=size["vocab"], hidden_size=size["hidden"], intermediate_size=size["mlp"],
                     num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                     num_key_value_heads=size["heads"], max_position_embeddings=2048,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = CLIPVisionConfig(hidden_size=size["vision_hidden"], intermediate_size=4 * size["vision_hidden"],
                              num_hidden_layers=size["vision_layers"], num_attention_heads=8,
                              image_size=size["image"], patch_size=size["patch"])
    config = FlamingoConfig(language_model=lm, vision_encoder=vision, tokenizer=tokenizer, cross_attn_every=4,
                            resampler_depth=2, frozen_dtype=frozen_dtype)
    Flamingo.from_config(config).save_pretrained(directory)


def synthetic_batch(model, size: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """Random tokens with ``images`` <image> tokens per row, labels on every other token."""
    generator = torch.Generator().manual_seed(0)
    batch, tokens, images = size["batch"], size["tokens"], size["images"]
    ids = torch.randint(300, size["vocab"], (batch, tokens), generator=generator)
    ids[:, :: tokens // images][:, :images] = model.image_token_id
    labels = ids.masked_fill(ids == model.image_token_id, -100)
    pixels = torch.randn(batch, images, 1, 3, size["image"], size["image"], generator=generator)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "media": pixels}
    return {k: v.to(device) for k, v in out.items()}


def step_flops(flamingo, size: dict) -> float:
    """Model FLOPs of one optimizer step per worker (matmuls only, attention scores left out): the
    frozen LM runs forward and passes gradients back (4 x params per token), trainable blocks add
    their weight gradients (6 x params per token), the frozen vision tower runs forward only."""
    def count(prefix: str) -> int:
        return sum(p.numel() for n, p in flamingo.named_parameters() if n.startswith(prefix) and p.dim() == 2
                   and "embed" not in n)

    tokens = size["batch"] * size["tokens"]
    media = size["batch"] * size["images"]
    patches = (size["image"] // size["patch"]) ** 2 + 1
    lm, xattn, resampler, vision = count("lm."), count("xattn."), count("resampler."), count("vision.")
    head = size["vocab"] * size["hidden"]
    return (tokens * (4 * (lm - head) + 6 * head + 6 * xattn)
            + media * (2 * vision * patches + 6 * resampler * flamingo.config.num_latents))


def worker(rank: int, world: int, port: int, init: str, size_name: str, steps: int, use_gpu: bool) -> None:
    import torch.distributed as dist
    from flamboyance.trainer.config import OptimConfig, ParallelConfig
    from flamboyance.trainer.parallel import autocast, load_model
    from flamboyance.trainer.step import build_optimizer, train_step

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_gpu else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=300))
    size = SIZES[size_name]
    parallel = ParallelConfig(num_workers=world, use_gpu=use_gpu, strategy="fsdp", precision="bf16",
                              activation_checkpointing=True)
    model, flamingo = load_model(init, parallel, device=device, world_size=world)
    trainable = {n for n, p in flamingo.named_parameters() if p.requires_grad}
    optimizer, scheduler = build_optimizer(model, trainable, OptimConfig(lr=1e-3, warmup_steps=0))
    batch = synthetic_batch(flamingo, size, device)
    times, losses = [], []
    for step in range(steps + 2):  # 2 warm-up steps (allocator, kernels) are not timed
        if use_gpu:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        result = train_step(model, optimizer, scheduler, {"m3w": batch}, {"m3w": 1.0},
                            autocast=lambda: autocast(parallel, device))
        if use_gpu:
            torch.cuda.synchronize(device)
        if step >= 2:
            times.append(time.perf_counter() - started)
        losses.append(float(result.losses["m3w"]))
    peak = torch.cuda.max_memory_allocated(device) if use_gpu else 0
    report = {"rank": rank, "step_time_s": sorted(times)[len(times) // 2], "peak_memory_gib": peak / 2**30,
              "flops_per_step": step_flops(flamingo, size), "losses": losses,
              "device": torch.cuda.get_device_name(device) if use_gpu else "cpu"}
    Path(init).parent.joinpath(f"report{rank}.json").write_text(json.dumps(report))


def peak_tflops(device_name: str) -> float | None:
    if os.environ.get("FLAMBOYANCE_PEAK_TFLOPS"):
        return float(os.environ["FLAMBOYANCE_PEAK_TFLOPS"])
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="model size (GPU: small, CPU: tiny)")
    parser.add_argument("--cpu", action="store_true", help="run on 2 CPU processes (checks the script)")
    args = parser.parse_args(argv)
    use_gpu = not args.cpu
    if use_gpu and not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine; nothing to check (use --cpu to test the script)")
        return 0
    world = torch.cuda.device_count() if use_gpu else 2
    size_name = args.size or ("small" if use_gpu else "tiny")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="flamboyance-gpu-check-") as tmp:
        init = Path(tmp) / "init"
        build_init(init, SIZES[size_name], frozen_dtype="bf16")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(worker, args=(world, port, str(init), size_name, args.steps, use_gpu), nprocs=world, join=True)
        reports = [json.loads((Path(tmp) / f"report{r}.json").read_text()) for r in range(world)]
    step_time = max(r["step_time_s"] for r in reports)
    flops = sum(r["flops_per_step"] for r in reports)
    peak = peak_tflops(reports[0]["device"])
    mfu = flops / step_time / (peak * 1e12 * world) if peak and use_gpu else None
    print(f"gpu-check: {world} x {reports[0]['device']}, size {size_name}, bf16, FSDP")
    print(f"  step time      {step_time * 1000:.1f} ms (median of {args.steps})")
    print(f"  peak memory    {max(r['peak_memory_gib'] for r in reports):.2f} GiB per GPU")
    print(f"  achieved       {flops / step_time / 1e12:.2f} TFLOP/s (model FLOPs)")
    print(f"  MFU            {f'{100 * mfu:.1f} %' if mfu is not None else 'n/a (unknown peak; set FLAMBOYANCE_PEAK_TFLOPS)'}")
    print(f"  loss           {reports[0]['losses'][0]:.3f} -> {reports[0]['losses'][-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
