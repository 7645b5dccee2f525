"""Tiny random Flamingo models for tests and the CPU demo: a BPE tokenizer trained locally and
small random configs of each supported LM family plus a small random CLIP / SigLIP vision tower.
Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable

from flamboyance.model.config import FlamingoConfig
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN, PAD_FALLBACK_TOKEN
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    GPT2Config,
    LlamaConfig,
    OPTConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

EOS_TOKEN = "<|endoftext|>"
"""End of text of tiny tokenizers (GPT-2's spelling)."""

LM_FAMILIES = ("gpt2", "llama", "qwen2", "opt")
"""Families ``tiny_config`` can build."""

VISION_FAMILIES = ("clip", "siglip")
"""Vision towers ``tiny_config`` can build."""

DEFAULT_CORPUS = (
    "a red circle",
    "a green square",
    "a blue triangle",
    "a yellow star",
    "a photo of a cat sitting on a mat",
    "Question: what colour is the shape? Short answer: red",
    "Output: a small dog plays in the park",
    "The quick brown fox jumps over the lazy dog.",
)
"""Corpus used when ``tiny_config`` is called without a tokenizer."""


def build_tokenizer(
    corpus: Iterable[str], *, vocab_size: int = 512, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (any text encodes; no unknown tokens).

    It already holds ``<|endoftext|>`` (bos/eos), ``<pad>`` (pad), ``<image>`` and ``<EOC>`` as
    special tokens, so a tiny LM built on it covers every id. ``vocab_size`` includes the 256 bytes.
    """
    texts = [t for t in corpus]
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"build_tokenizer: corpus items must be str (items {bad[:5]} are not)")
    specials = [EOS_TOKEN, PAD_FALLBACK_TOKEN, IMAGE_TOKEN, EOC_TOKEN]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"build_tokenizer: vocab_size must be >= {256 + len(specials)}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_FALLBACK_TOKEN,
        additional_special_tokens=[IMAGE_TOKEN, EOC_TOKEN],
    )


def tiny_lm_config(
    family: str,
    *,
    vocab_size: int,
    pad_token_id: int,
    eos_token_id: int,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    max_positions: int = 512,
    init_std: float = 0.1,
) -> PretrainedConfig:
    """A small random causal-LM config of ``family`` (one of LM_FAMILIES), dropout off.
    Llama is untied (and uses grouped-query attention), the others tie input/output embeddings.
    ``init_std`` is larger than the usual 0.02 so that a frozen random head can still give
    confident next-token predictions (tiny embeddings cap the logit range)."""
    common = dict(pad_token_id=pad_token_id, bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    if family == "opt":
        common["init_std"] = init_std
    else:
        common["initializer_range"] = init_std
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_positions,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            **common,
        )
    if family == "qwen2":
        return Qwen2Config(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            **common,
        )
    if family == "opt":
        return OPTConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            word_embed_proj_dim=hidden_size,
            ffn_dim=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            max_position_embeddings=max_positions,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            layerdrop=0.0,
            **common,
        )
    raise ValueError(f"unknown LM family {family!r}; choose one of {LM_FAMILIES}")


def tiny_vision_config(
    family: str = "clip",
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
) -> PretrainedConfig:
    """A small random vision-tower config (CLIP or SigLIP)."""
    common = dict(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
    )
    if family == "clip":
        return CLIPVisionConfig(**common)
    if family == "siglip":
        return SiglipVisionConfig(**common)
    raise ValueError(f"unknown vision family {family!r}; choose one of {VISION_FAMILIES}")


def tiny_config(
    *,
    family: str = "gpt2",
    tokenizer: PreTrainedTokenizerFast | None = None,
    vision_family: str = "clip",
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    max_positions: int = 512,
    init_std: float = 0.1,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden_size: int = 64,
    vision_layers: int = 2,
    cross_attn_every: int = 1,
    num_latents: int = 8,
    resampler_depth: int = 1,
    heads: int = 4,
    head_dim: int = 16,
    max_frames: int = 4,
    ff_mult: int = 2,
    only_attend_immediate_media: bool = True,
    relative_media: bool = False,
    relative_gate_init: float = 0.0,
    init_seed: int = 0,
) -> FlamingoConfig:
    """A FlamingoConfig for a tiny random model (CPU tests and demo): a ``family`` LM of
    ``num_layers`` x ``hidden_size`` over ``tokenizer`` (default: trained on DEFAULT_CORPUS) and a
    random CLIP/SigLIP tower at ``image_size`` px. ``heads`` / ``head_dim`` apply to the resampler
    and the cross-attention blocks."""
    if tokenizer is None:
        tokenizer = build_tokenizer(DEFAULT_CORPUS)
    lm_config = tiny_lm_config(
        family,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_heads=num_heads,
        max_positions=max_positions,
        init_std=init_std,
    )
    vision_config = tiny_vision_config(
        vision_family,
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_hidden_size,
        num_layers=vision_layers,
        num_heads=num_heads,
    )
    return FlamingoConfig(
        language_model=lm_config,
        vision_encoder=vision_config,
        tokenizer=tokenizer,
        cross_attn_every=cross_attn_every,
        resampler_depth=resampler_depth,
        resampler_heads=heads,
        resampler_head_dim=head_dim,
        num_latents=num_latents,
        max_frames=max_frames,
        xattn_heads=heads,
        xattn_head_dim=head_dim,
        xattn_ff_mult=ff_mult,
        only_attend_immediate_media=only_attend_immediate_media,
        relative_media=relative_media,
        relative_gate_init=relative_gate_init,
        init_seed=init_seed,
        extra={"tiny": {"family": family, "vision_family": vision_family}},
    )
