"""Flamingo: frozen vision tower -> Perceiver Resampler -> gated XATTN-Dense blocks interleaved with
the frozen decoder layers of a HuggingFace causal LM.

Forward path: our trainable-row-aware embedding -> ``lm.base_model`` (the HF decoder stack, with a
gated block run before every n-th layer, media passed explicitly as a forward keyword) -> our
trainable-row-aware LM head -> loss.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from flamboyance.model.config import TIMM_PREFIX, FlamingoConfig
from flamboyance.model.language import (
    MEDIA_KWARG,
    attach_cross_attention,
    cache_keyword,
    decoder_layers,
    returned_cache,
)
from flamboyance.model.loading import WeightFiles, empty_parameters, safetensors_files
from flamboyance.model.resampler import PerceiverResampler
from flamboyance.model.text import bos_ids
from flamboyance.model.vision import ImageTransform, VisionEncoder, state_dict_any
from flamboyance.model.xattn import GatedCrossAttentionBlock, MediaContext, media_attention_mask
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN, PAD_FALLBACK_TOKEN, SPECIAL_TOKENS
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

CONFIG_FILE = "flamingo_config.json"
TRAINABLE_FILE = "trainable.safetensors"
FROZEN_LM_DIR = "frozen_lm"
FROZEN_VISION_DIR = "frozen_vision"
TOKENIZER_DIR = "tokenizer"
IGNORE_INDEX = -100


def relative_features(
    features: torch.Tensor,  # (media, frames, patches, dim)
    documents: torch.Tensor,  # (media,) int: the document each medium belongs to
) -> torch.Tensor:  # (media, frames, patches, dim)
    """Each medium's features minus their mean over its document's media (frame by frame, patch by
    patch): zero for a document's only medium (``FlamingoConfig.relative_media``)."""
    _, group = torch.unique(documents, return_inverse=True)
    sums = features.new_zeros((int(group.max()) + 1, *features.shape[1:])).index_add_(0, group, features)
    counts = torch.bincount(group).to(features.dtype)
    return features - sums[group] / counts[group].view(-1, 1, 1, 1)


@dataclass
class FlamingoOutput:
    """Result of ``Flamingo.forward``."""

    logits: torch.Tensor  # (batch, tokens, vocab)
    loss: torch.Tensor | None = None  # scalar mean cross-entropy over labelled tokens
    past_key_values: Any = None  # HF Cache when use_cache=True


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add <image> and <EOC> when missing, and <pad> as pad token when there is none or pad == eos
    (pad must never be eos: masking padding would mask eos/<EOC> targets). Works in place."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        # transformers 5 renamed "additional" special tokens to "extra" ones
        params = inspect.signature(tokenizer.add_special_tokens).parameters
        kind = "extra" if "replace_extra_special_tokens" in params else "additional"
        tokenizer.add_special_tokens(
            {f"{kind}_special_tokens": missing}, **{f"replace_{kind}_special_tokens": False}
        )
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.add_special_tokens({"pad_token": PAD_FALLBACK_TOKEN})
    return tokenizer


def _new_token_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Tokens whose embedding rows are trainable: <image>, <EOC>, and <pad> when it is our fallback."""
    tokens = list(SPECIAL_TOKENS)
    if tokenizer.pad_token == PAD_FALLBACK_TOKEN:
        tokens.append(PAD_FALLBACK_TOKEN)
    return tokens


class Flamingo(nn.Module):
    """A Flamingo model; build with ``Flamingo.from_config`` or ``Flamingo.from_pretrained``."""

    def __init__(
        self,
        *,
        config: FlamingoConfig,
        lm: PreTrainedModel,
        vision: VisionEncoder,
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.lm = lm
        self.lm.requires_grad_(not config.freeze_lm)
        if config.freeze_lm:
            self.lm.eval()
        self.vision = vision

        self.image_token_id = self._token_id(IMAGE_TOKEN)
        self.eoc_token_id = self._token_id(EOC_TOKEN)
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.bos_ids = bos_ids(self.tokenizer)  # [] or [bos]: what starts every sequence

        dim_visual = vision.dim
        dim_text = lm.config.get_text_config().hidden_size
        self.resampler = PerceiverResampler(
            dim=dim_visual,
            depth=config.resampler_depth,
            heads=config.resampler_heads,
            head_dim=config.resampler_head_dim,
            num_latents=config.num_latents,
            max_frames=config.max_frames,
            ff_mult=config.xattn_ff_mult,
        )
        num_layers = len(decoder_layers(lm))
        self.xattn = nn.ModuleDict(
            {
                str(i): GatedCrossAttentionBlock(
                    dim=dim_text,
                    dim_visual=dim_visual,
                    heads=config.xattn_heads,
                    head_dim=config.xattn_head_dim,
                    ff_mult=config.xattn_ff_mult,
                )
                for i in range(num_layers)
                if (i + 1) % config.cross_attn_every == 0
            }
        )
        if not self.xattn:
            raise ValueError(
                f"cross_attn_every={config.cross_attn_every} leaves no cross-attention layer in a "
                f"{num_layers}-layer LM; use a value <= {num_layers}"
            )
        self.relative_resampler: PerceiverResampler | None = None
        if config.relative_media:  # made last: every other weight is what it is without the option
            self.relative_resampler = copy.deepcopy(self.resampler)
            for module in self.relative_resampler.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            with torch.no_grad():
                self.relative_resampler.latents.normal_(std=0.02)
                self.relative_resampler.frame_embeddings.normal_(std=0.02)
            for block in self.xattn.values():
                block.add_relative_stream(gate=config.relative_gate_init)
        self._hooks = attach_cross_attention(lm, {int(k): block for k, block in self.xattn.items()})
        self._init_new_token_rows()

        mean, std = vision.default_mean_std()
        self.image_transform = ImageTransform(
            size=config.image_size or vision.image_size,
            mean=config.image_mean or mean,
            std=config.image_std or std,
        )

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: FlamingoConfig) -> Flamingo:
        """Build from a config: towers named by name/path load with ``from_pretrained``; towers given
        as transformers configs are randomly initialised (seeded by ``config.init_seed``)."""
        tokenizer = _load_tokenizer(config)
        lm_dtype = config.torch_dtype(frozen=config.freeze_lm)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            if isinstance(config.language_model, PretrainedConfig):
                lm = AutoModelForCausalLM.from_config(config.language_model, dtype=lm_dtype)
            else:
                lm = AutoModelForCausalLM.from_pretrained(config.language_model, dtype=lm_dtype)
            vision = VisionEncoder.build(
                config.vision_encoder,
                pretrained=config.vision_pretrained,
                frozen=config.freeze_vision,
                dtype=config.torch_dtype(frozen=config.freeze_vision),
            )
            return cls(config=config, lm=lm, vision=vision, tokenizer=tokenizer)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no id for {token!r}")
        return int(token_id)

    def _init_new_token_rows(self) -> None:
        """Trainable rows for the new tokens, initialised from the frozen rows when the frozen vocab
        already has them (so a fresh model equals the frozen LM), else from the mean frozen row."""
        in_emb = self.lm.get_input_embeddings().weight
        out_layer = self.lm.get_output_embeddings()
        ids = [self._token_id(t) for t in _new_token_strings(self.tokenizer)]
        self.register_buffer("new_token_ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.vocab_size = max(len(self.tokenizer), in_emb.shape[0], max(ids) + 1)

        def rows(weight: torch.Tensor) -> torch.Tensor:  # fp32: they train, whatever the LM's dtype
            weight = weight.detach()
            mean = weight.float().mean(dim=0)
            return torch.stack([weight[i].float() if i < weight.shape[0] else mean for i in ids]).clone()

        self.new_token_embeddings = nn.Parameter(rows(in_emb))
        self.tied_output = out_layer is None or out_layer.weight is in_emb
        if self.tied_output:
            self.new_token_output_embeddings = None
        else:
            self.new_token_output_embeddings = nn.Parameter(rows(out_layer.weight))

    def train(self, mode: bool = True) -> Flamingo:
        """Train mode for our modules; frozen towers stay in eval mode (no dropout)."""
        super().train(mode)
        if self.config.freeze_lm:
            self.lm.eval()
        self.vision.train(mode)
        return self

    # --- parameters ----------------------------------------------------------------------------

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Name -> parameter of everything that trains: resampler, xattn blocks, the new tokens'
        embedding rows (and output rows when untied); plus the LM / vision tower if unfrozen."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    # --- pieces of the forward ------------------------------------------------------------------

    def embed_tokens(
        self,
        input_ids: torch.Tensor,  # (batch, tokens) int64
    ) -> torch.Tensor:  # (batch, tokens, dim_embed)
        """Frozen embedding matrix, with the new tokens' rows taken from the trainable parameter."""
        embedding = self.lm.get_input_embeddings()
        frozen_vocab = embedding.weight.shape[0]
        match = input_ids[..., None] == self.new_token_ids  # (b, t, n_new)
        is_new = match.any(dim=-1)
        frozen = embedding(torch.where(input_ids < frozen_vocab, input_ids, 0))
        new = self.new_token_embeddings[match.long().argmax(dim=-1)].to(frozen.dtype)
        return torch.where(is_new[..., None], new, frozen)

    def lm_logits(
        self,
        hidden: torch.Tensor,  # (batch, tokens, dim_embed)
    ) -> torch.Tensor:  # (batch, tokens, vocab)
        """Frozen LM head, with the new tokens' columns from the trainable rows."""
        frozen = self.lm.get_output_embeddings()(hidden)
        if frozen.shape[-1] < self.vocab_size:
            fill = frozen.new_full((*frozen.shape[:-1], self.vocab_size - frozen.shape[-1]), -1e4)
            frozen = torch.cat([frozen, fill], dim=-1)
        rows = self.new_token_embeddings if self.tied_output else self.new_token_output_embeddings
        new = hidden @ rows.to(hidden.dtype).t()  # (b, t, n_new)
        return frozen.index_copy(-1, self.new_token_ids, new.to(frozen.dtype))

    def encode_media(
        self,
        input_ids: torch.Tensor,  # (batch, tokens)
        media: torch.Tensor | None,  # (batch, media, frames, C, H, W) or None
        *,
        segment_ids: torch.Tensor | None = None,  # (batch, tokens): documents of packed rows
    ) -> torch.Tensor:  # (batch, media, latents, dim_visual)
        """Visual tokens per media slot. Slot k of row b is real iff row b has more than k <image>
        tokens; only real slots go through the vision tower, the rest stay zero. With
        ``config.relative_media`` each medium's tokens are followed by as many relative tokens: its
        features minus their mean over its document's media (``relative_features``), through the
        relative resampler."""
        batch = input_ids.shape[0]
        latents, dim = self.resampler.latents.shape
        if self.relative_resampler is not None:
            latents *= 2  # the paper's tokens, then the relative ones
        if media is None:
            return self.resampler.latents.new_zeros(batch, 0, latents, dim)
        if media.dim() == 5:  # (b, m, C, H, W): still images without a frame axis
            media = media[:, :, None]
        if media.dim() != 6 or media.shape[0] != batch:
            raise ValueError(
                f"media must be (batch={batch}, media, frames, channels, height, width), "
                f"got shape {tuple(media.shape)}"
            )
        num_media, frames = media.shape[1], media.shape[2]
        count = (input_ids == self.image_token_id).sum(dim=1).clamp(max=num_media)  # (b,)
        real = torch.arange(num_media, device=media.device) < count[:, None]  # (b, m)
        out = self.resampler.latents.new_zeros(batch, num_media, latents, dim)
        if not bool(real.any()):
            return out
        pixels = rearrange(media[real], "n f c h w -> (n f) c h w")
        features = rearrange(self.vision(pixels), "(n f) p d -> n f p d", f=frames).to(out.dtype)
        rows, slots = real.nonzero(as_tuple=True)
        tokens = self.resampler(features)  # (n, latents, dim)
        if self.relative_resampler is not None:
            documents = rows
            if segment_ids is not None:  # a packed row holds several documents: a medium's is its <image>'s
                is_image = input_ids == self.image_token_id
                real_image = is_image & (is_image.cumsum(dim=1) <= num_media)
                documents = rows * (int(segment_ids.max()) + 1) + segment_ids[real_image]
            relative = self.relative_resampler(relative_features(features, documents))
            tokens = torch.cat([tokens, relative], dim=1)
        return out.index_put((rows, slots), tokens.to(out.dtype))

    def media_context(
        self,
        input_ids: torch.Tensor,  # (batch, tokens)
        attention_mask: torch.Tensor,  # (batch, tokens)
        media: torch.Tensor | None,  # (batch, media, frames, C, H, W)
        *,
        segment_ids: torch.Tensor | None = None,  # (batch, tokens)
    ) -> MediaContext:
        """Visual tokens plus the per-token media mask for one call."""
        visual = self.encode_media(input_ids, media, segment_ids=segment_ids)
        mask = media_attention_mask(
            input_ids,
            image_token_id=self.image_token_id,
            num_media=visual.shape[1],
            attention_mask=attention_mask,
            segment_ids=segment_ids,
            only_attend_immediate_media=self.config.only_attend_immediate_media,
        )
        return MediaContext(visual_tokens=visual, media_mask=mask)

    def _document_attention_mask(
        self,
        attention_mask: torch.Tensor,  # (batch, tokens)
        segment_ids: torch.Tensor,  # (batch, tokens)
        dtype: torch.dtype,
    ) -> torch.Tensor:  # (batch, 1, tokens, tokens)
        """Causal, within-document, non-padding self-attention mask for packed rows, in the format
        the LM's attention implementation takes (bool for sdpa, additive float for eager)."""
        tokens = attention_mask.shape[1]
        causal = torch.ones(tokens, tokens, dtype=torch.bool, device=attention_mask.device).tril()
        same_doc = segment_ids[:, :, None] == segment_ids[:, None, :]
        allowed = causal & same_doc & attention_mask.bool()[:, None, :]
        allowed = allowed | torch.eye(tokens, dtype=torch.bool, device=allowed.device)  # no empty rows
        allowed = allowed[:, None]
        if getattr(self.lm.config, "_attn_implementation", "sdpa") == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    # --- forward ---------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,  # (batch, tokens) int64
        attention_mask: torch.Tensor | None = None,  # (batch, tokens) 1 = real token
        media: torch.Tensor | None = None,  # (batch, media, frames, C, H, W)
        labels: torch.Tensor | None = None,  # (batch, tokens) int64, -100 = ignored
        *,
        segment_ids: torch.Tensor | None = None,  # (batch, tokens) document index in a packed row
        position_ids: torch.Tensor | None = None,  # (batch, tokens)
        past_key_values: Any = None,
        use_cache: bool = False,
        media_context: MediaContext | None = None,
    ) -> FlamingoOutput:
        """Logits (and the mean next-token loss when ``labels`` is given).

        Packed rows: pass ``segment_ids`` (same id = same document); tokens then attend (text and
        images) only within their document, positions restart per document, and the first token of
        a document is never a target of the previous one. Media slots still number the row's
        <image> tokens left to right across its documents. ``media_context`` (advanced, used by
        generation) replaces the media encoding of this call.
        """
        if input_ids.dtype != torch.long:
            raise TypeError(f"input_ids must be int64 token ids, got {input_ids.dtype}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape and past_key_values is None:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        if int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(
                f"input_ids outside the vocabulary [0, {self.vocab_size}): min {int(input_ids.min())}, "
                f"max {int(input_ids.max())}"
            )
        if media_context is None:
            media_context = self.media_context(input_ids, attention_mask, media, segment_ids=segment_ids)
        if position_ids is None:
            # with a cache the mask covers past + new tokens: the new tokens are its last columns
            position_ids = _positions(attention_mask, segment_ids)[:, -input_ids.shape[1] :]
        embeds = self.embed_tokens(input_ids)
        lm_mask = attention_mask
        if segment_ids is not None:
            lm_mask = self._document_attention_mask(attention_mask, segment_ids, embeds.dtype)
        out = self.lm.base_model(
            inputs_embeds=embeds,
            attention_mask=lm_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **{cache_keyword(self.lm.base_model): past_key_values, MEDIA_KWARG: media_context},
        )
        logits = self.lm_logits(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, segment_ids=segment_ids)
        return FlamingoOutput(
            logits=logits, loss=loss, past_key_values=returned_cache(out) if use_cache else None
        )

    # --- inference ---------------------------------------------------------------------------------

    @torch.no_grad()
    def image_embeddings(
        self,
        pixels: torch.Tensor,  # (N, C, H, W)
    ) -> torch.Tensor:  # (N, dim_visual)
        """Pooled frozen vision features, L2-normalised (dot product = cosine similarity), for RICES."""
        return F.normalize(self.vision.pooled(pixels).float(), dim=-1)

    @torch.no_grad()
    def score_continuations(
        self,
        input_ids: torch.Tensor,  # (batch, tokens)
        attention_mask: torch.Tensor | None,  # (batch, tokens)
        media: torch.Tensor | None,  # (batch, media, frames, C, H, W)
        continuation_mask: torch.Tensor,  # (batch, tokens) bool, True = score this token
    ) -> torch.Tensor:  # (batch,) float32
        """Sum of log p(token | everything before it) over the tokens where continuation_mask is True
        (closed-ended tasks rank the options by it)."""
        from flamboyance.model.generation import score_continuations

        return score_continuations(self, input_ids, attention_mask, media, continuation_mask)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,  # (batch, tokens), left-padded (right padding is realigned)
        attention_mask: torch.Tensor | None = None,  # (batch, tokens)
        media: torch.Tensor | None = None,  # (batch, media, frames, C, H, W)
        *,
        max_new_tokens: int = 20,
        num_beams: int = 3,
        length_penalty: float = 0.0,
        return_scores: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # (batch, new) int64 [, (batch,) float32]
        """Greedy (num_beams=1) or beam search with the KV cache, stopping at <EOC>.

        Returns the new tokens only: each row ends with its <EOC> when one was generated, then
        ``tokenizer.pad_token_id``. The media are encoded once and repeated per beam; generated steps
        never produce <image> (or pad) and attend to the last image of the prompt. With
        ``return_scores`` also returns each output's summed log-prob (float32, (batch,))."""
        from flamboyance.model.generation import generate

        return generate(
            self,
            input_ids,
            attention_mask,
            media,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
            return_scores=return_scores,
        )

    # --- save / load ---------------------------------------------------------------------------

    @staticmethod
    def weight_files(directory: str | Path) -> WeightFiles:
        """Where every weight of the model saved in ``directory`` lives (see ``model.loading``):
        trainable weights in ``trainable.safetensors``, towers in their saved copies or in the named
        models' files (timm towers excepted: ``from_pretrained(empty=True)`` builds them whole)."""
        return _weight_files(directory)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the config, the trainable weights (safetensors), the tokenizer, and the frozen towers'
        full weights when they were built from configs (a reload then gives the same model)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_lm = isinstance(self.config.language_model, PretrainedConfig) or not self.config.freeze_lm
        save_vision = (
            isinstance(self.config.vision_encoder, PretrainedConfig)
            or not self.config.freeze_vision
            or (
                isinstance(self.config.vision_encoder, str)
                and self.config.vision_encoder.startswith(TIMM_PREFIX)
                and not self.config.vision_pretrained
            )
        )
        trainable = {
            name: p.detach().cpu().contiguous().clone()
            for name, p in self.trainable_parameters().items()
            if not name.startswith(("lm.", "vision."))
        }
        save_file(trainable, str(directory / TRAINABLE_FILE))
        if save_lm:
            self.lm.save_pretrained(directory / FROZEN_LM_DIR, safe_serialization=True)
        if save_vision:
            target = directory / FROZEN_VISION_DIR
            target.mkdir(exist_ok=True)
            if self.vision.kind == "hf":
                self.vision.tower.save_pretrained(target, safe_serialization=True)
            else:
                save_file(state_dict_any(self.vision.tower), str(target / "model.safetensors"))
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        meta = {
            "format_version": 1,
            "flamingo_config": self.config.to_dict(),
            "saved_language_model": save_lm,
            "saved_vision_encoder": save_vision,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, empty: bool = False) -> Flamingo:
        """Load a model written by ``save_pretrained``. ``empty``: build the architecture only,
        every parameter on the meta device (buffers real); ``weight_files`` says where each weight
        is, for a caller that loads only part of them (e.g. one FSDP shard)."""
        directory = Path(directory)
        config, meta = _read_saved_config(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR)
        config = config.replace(tokenizer=tokenizer)
        lm_source = _lm_source(config, meta, directory)
        lm_dtype = config.torch_dtype(frozen=config.freeze_lm)
        vision_dtype = config.torch_dtype(frozen=config.freeze_vision)
        timm = isinstance(config.vision_encoder, str) and config.vision_encoder.startswith(TIMM_PREFIX)

        def maybe_empty(applies: bool = True) -> contextlib.AbstractContextManager:
            return empty_parameters() if empty and applies else contextlib.nullcontext()

        with maybe_empty():
            if empty:
                lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(lm_source), dtype=lm_dtype)
            else:
                lm = AutoModelForCausalLM.from_pretrained(lm_source, dtype=lm_dtype)
        with maybe_empty(not timm):  # timm towers are small and always built whole
            if meta["saved_vision_encoder"] and (timm or not empty):
                vision = _load_saved_vision(config, directory / FROZEN_VISION_DIR, dtype=vision_dtype)
            else:
                spec = directory / FROZEN_VISION_DIR if meta["saved_vision_encoder"] else config.vision_encoder
                vision = VisionEncoder.build(
                    str(spec) if isinstance(spec, Path) else spec,
                    pretrained=config.vision_pretrained,
                    frozen=config.freeze_vision,
                    dtype=vision_dtype,
                    weights=not empty,
                )
        with maybe_empty():
            model = cls(config=config, lm=lm, vision=vision, tokenizer=tokenizer)
        if empty:
            return model
        state = load_file(str(directory / TRAINABLE_FILE))
        expected = {n for n in model.trainable_parameters() if not n.startswith(("lm.", "vision."))}
        if set(state) != expected:
            raise ValueError(
                f"{directory / TRAINABLE_FILE}: weights do not match the model "
                f"(missing {sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]})"
            )
        model.load_state_dict(state, strict=False)
        return model


def _weight_files(directory: str | Path) -> WeightFiles:
    """Where every weight of the model saved in ``directory`` lives: the trainable weights in
    ``trainable.safetensors``, the towers in their saved copies or in the named models' files
    (timm towers excepted: ``from_pretrained(empty=True)`` builds those whole)."""
    directory = Path(directory)
    config, meta = _read_saved_config(directory)
    sources = {"": [directory / TRAINABLE_FILE], "lm.": safetensors_files(_lm_source(config, meta, directory))}
    spec = config.vision_encoder
    if meta["saved_vision_encoder"]:
        sources["vision.tower."] = safetensors_files(directory / FROZEN_VISION_DIR)
    elif isinstance(spec, str) and not spec.startswith(TIMM_PREFIX):
        sources["vision.tower."] = safetensors_files(spec)
    return WeightFiles(sources)


def _load_tokenizer(config: FlamingoConfig) -> PreTrainedTokenizerBase:
    if isinstance(config.tokenizer, PreTrainedTokenizerBase):
        return copy.deepcopy(config.tokenizer)  # we add tokens: never mutate the caller's
    source = config.tokenizer or (config.language_model if isinstance(config.language_model, str) else None)
    if source is None:
        raise ValueError(
            "FlamingoConfig.tokenizer is required when language_model is a config object "
            "(pass a tokenizer object or a name/path)"
        )
    return AutoTokenizer.from_pretrained(source)


def _load_saved_vision(config: FlamingoConfig, path: Path, *, dtype: torch.dtype) -> VisionEncoder:
    spec = config.vision_encoder
    if isinstance(spec, str) and spec.startswith(TIMM_PREFIX):
        encoder = VisionEncoder.build(spec, pretrained=False, frozen=config.freeze_vision)
        encoder.tower.load_state_dict(load_file(str(path / "model.safetensors")))
        return encoder.to(dtype)
    return VisionEncoder.build(str(path), frozen=config.freeze_vision, dtype=dtype)


def _read_saved_config(directory: Path) -> tuple[FlamingoConfig, dict[str, Any]]:
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: not a Flamingo.save_pretrained directory")
    meta = json.loads(config_path.read_text())
    return FlamingoConfig.from_dict(meta["flamingo_config"]), meta


def _lm_source(config: FlamingoConfig, meta: dict[str, Any], directory: Path) -> str | Path:
    if meta["saved_language_model"]:
        return directory / FROZEN_LM_DIR
    if isinstance(config.language_model, str):
        return config.language_model
    raise ValueError(
        f"{directory / CONFIG_FILE}: language model built from a config but its weights were not saved"
    )


def _positions(
    attention_mask: torch.Tensor,  # (batch, tokens)
    segment_ids: torch.Tensor | None,  # (batch, tokens)
) -> torch.Tensor:  # (batch, tokens) int64
    """Positions that skip left padding and restart at every document of a packed row."""
    mask = attention_mask.long()
    positions = mask.cumsum(dim=1) - 1
    if segment_ids is not None:
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        index = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        start_index = torch.where(starts, index, 0).cummax(dim=1).values
        # tokens of the row before this document = cumsum up to its first token - that token
        before = torch.gather(positions, 1, start_index) + 1 - torch.gather(mask, 1, start_index)
        positions = positions - before
    return positions.clamp(min=0)


def causal_lm_loss(
    logits: torch.Tensor,  # (batch, tokens, vocab)
    labels: torch.Tensor,  # (batch, tokens) -100 = ignored
    *,
    segment_ids: torch.Tensor | None = None,  # (batch, tokens)
) -> torch.Tensor:
    """Mean next-token cross-entropy (float32). Targets across a document boundary are ignored."""
    targets = labels[:, 1:]
    if segment_ids is not None:
        targets = torch.where(segment_ids[:, 1:] != segment_ids[:, :-1], IGNORE_INDEX, targets)
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
