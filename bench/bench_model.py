"""Benchmark: Flamingo forward + backward over the frozen LM alone, and the trainable share.

A GPT-2-small-sized random LM (12 layers, 768 wide, vocab 50257) with a gated XATTN-Dense block
before every 4th layer, a random CLIP ViT-B/32 tower and the paper's resampler (depth 6, 64
latents). Both runs see the same tokens; the LM-alone run is the plain HF model with all its
weights trainable (what fine-tuning the LM would cost), the Flamingo run trains only its own set
and includes the vision tower and resampler. Runs alternate; the best of ``--repeats`` counts.

    .venv/bin/python bench/bench_model.py [--batch 2 --tokens 256 --images 2 --repeats 3 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from flamboyance.model import Flamingo, FlamingoConfig, causal_lm_loss
from flamboyance.model.tiny import build_tokenizer
from transformers import CLIPVisionConfig, GPT2Config


def build(cross_attn_every: int, image_size: int) -> Flamingo:
    tokenizer = build_tokenizer(["a photo of a red circle", "the quick brown fox"], vocab_size=300)
    lm = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=32,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
    )
    config = FlamingoConfig(
        language_model=lm, vision_encoder=vision, tokenizer=tokenizer, cross_attn_every=cross_attn_every
    )
    return Flamingo.from_config(config)


def make_batch(model: Flamingo, *, batch: int, tokens: int, images: int, image_size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(300, 50000, (batch, tokens), generator=generator)
    # images evenly spaced, <EOC> before every image but the first (M3W layout)
    for k in range(images):
        position = k * (tokens // images)
        ids[:, position] = model.image_token_id
        if k:
            ids[:, position - 1] = model.eoc_token_id
    attention = torch.ones_like(ids)
    media = torch.randn(batch, images, 1, 3, image_size, image_size, generator=generator)
    labels = ids.masked_fill(ids == model.image_token_id, -100)
    return ids, attention, media, labels


def alternate(steps: dict, repeats: int) -> dict[str, list[float]]:
    """Time each step ``repeats`` times, alternating between them (after one warm-up each) so that
    load on a shared machine hits all of them alike."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cross-attn-every", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args.cross_attn_every, args.image_size).to(device)
    model.train()
    ids, attention, media, labels = (
        t.to(device)
        for t in make_batch(
            model, batch=args.batch, tokens=args.tokens, images=args.images, image_size=args.image_size
        )
    )
    plain_ids = torch.where(ids >= 50257, 0, ids)  # the frozen LM alone has no <image>/<EOC> rows
    plain_labels = torch.where(labels >= 50257, 0, labels)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def flamingo_step() -> None:
        model.zero_grad(set_to_none=True)
        model(ids, attention, media, labels).loss.backward()
        sync()

    lm_alone = model.lm
    frozen_flags = {n: p.requires_grad for n, p in lm_alone.named_parameters()}

    def lm_step() -> None:
        lm_alone.requires_grad_(True)
        lm_alone.zero_grad(set_to_none=True)
        causal_lm_loss(
            lm_alone(input_ids=plain_ids, attention_mask=attention).logits, plain_labels
        ).backward()
        sync()
        for name, param in lm_alone.named_parameters():
            param.requires_grad_(frozen_flags[name])

    times = alternate({"flamingo": flamingo_step, "lm_alone": lm_step}, args.repeats)
    flamingo_times, lm_times = times["flamingo"], times["lm_alone"]

    trainable = sum(p.numel() for p in model.trainable_parameters().values())
    total = sum(p.numel() for p in model.parameters())
    result = {
        "benchmark": "flamingo_fwd_bwd_vs_lm",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "tokens": args.tokens,
        "images_per_row": args.images,
        "image_size": args.image_size,
        "cross_attn_every": args.cross_attn_every,
        "xattn_layers": len(model.xattn),
        # best of the alternating rounds: the least disturbed measurement on a shared machine
        "flamingo_fwd_bwd_s": min(flamingo_times),
        "lm_alone_fwd_bwd_s": min(lm_times),
        "flamingo_over_lm": min(flamingo_times) / min(lm_times),
        "flamingo_over_lm_median": statistics.median(flamingo_times) / statistics.median(lm_times),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "flamingo_times_s": flamingo_times,
        "lm_alone_times_s": lm_times,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "trainable_breakdown": {
            "resampler": sum(p.numel() for p in model.resampler.parameters()),
            "xattn": sum(p.numel() for p in model.xattn.parameters()),
            "new_token_rows": model.new_token_embeddings.numel(),
        },
    }
    print(
        f"Flamingo (xattn every {args.cross_attn_every}th of 12 layers) fwd+bwd "
        f"{result['flamingo_fwd_bwd_s']:.3f} s vs frozen LM alone {result['lm_alone_fwd_bwd_s']:.3f} s "
        f"-> x{result['flamingo_over_lm']:.2f} (median x{result['flamingo_over_lm_median']:.2f}) "
        f"on {result['device']} "
        f"(batch {args.batch} x {args.tokens} tokens, {args.images} images/row)"
    )
    print(f"trainable {trainable:,} of {total:,} parameters = {100 * result['trainable_share']:.1f}%")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
