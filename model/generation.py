"""Decoding with a Flamingo model: greedy and beam search over the KV cache, and log-likelihood
scoring of candidate continuations (closed-ended tasks).

The media are encoded once from the prompt; every generated step reuses those visual tokens
(repeated per beam) with the media mask of the prompt's last token, i.e. it attends to the last
image of the prompt. Steps never produce <image> or pad.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from flamboyance.model.text import encode_sequence
from flamboyance.model.xattn import MediaContext
from transformers import DynamicCache

if TYPE_CHECKING:
    from flamboyance.model.flamingo import Flamingo


def left_align(
    input_ids: torch.Tensor,  # (batch, tokens)
    attention_mask: torch.Tensor,  # (batch, tokens)
    pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's padding to the left (generation appends on the right)."""
    mask = attention_mask.bool()
    if bool(mask[:, -1].all()):
        return input_ids, attention_mask
    # stable sort puts padding (key 0) first and keeps token order
    order = torch.sort(mask.long(), dim=1, stable=True).indices
    ids = torch.gather(input_ids, 1, order)
    new_mask = torch.gather(attention_mask, 1, order)
    return ids.masked_fill(new_mask == 0, pad_token_id), new_mask


def encode_prompts(
    model: Flamingo, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:  # (batch, tokens) int64 left-padded, (batch, tokens)
    """Prompts as ``generate`` takes them: each encoded like a training sequence (BOS when the
    tokenizer adds one, ``model.text.encode_sequence``), left-padded."""
    rows = [encode_sequence(model.tokenizer, text, bos=model.bos_ids) for text in texts]
    return left_pad(rows, model.pad_token_id)


def left_pad(
    rows: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:  # (batch, tokens) int64, (batch, tokens) 1 = real token
    """Token rows as one left-padded batch (each row right-aligned) and its attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[b, width - len(row) :] = 1
    return ids, mask


def check_prompt_start(
    model: Flamingo,
    input_ids: torch.Tensor,  # (batch, tokens) left-aligned
    attention_mask: torch.Tensor,  # (batch, tokens)
) -> None:
    """Raise when the LM's tokenizer adds a BOS but a prompt does not start with it (the model
    was trained on sequences that do; see ``encode_prompts``)."""
    if not model.bos_ids:
        return
    first = attention_mask.long().argmax(dim=1)  # first real token of each (left-padded) row
    starts = input_ids.gather(1, first[:, None])[:, 0]
    bad = (starts != model.bos_ids[0]).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"prompt rows {bad[:5]} do not start with the tokenizer's BOS token (id {model.bos_ids[0]}); "
            f"encode prompts with flamboyance.model.generation.encode_prompts (or model.text.encode_sequence)"
        )


def _step_context(context: MediaContext, repeats: int = 1) -> MediaContext:
    """The context of generated tokens: the prompt's last-token media mask, repeated per beam."""
    visual, mask = context.visual_tokens, context.media_mask[:, -1:, :]
    if repeats > 1:
        visual = visual.repeat_interleave(repeats, dim=0)
        mask = mask.repeat_interleave(repeats, dim=0)
    return MediaContext(visual_tokens=visual, media_mask=mask)


def _logprobs(model: Flamingo, logits: torch.Tensor) -> torch.Tensor:
    """Next-token log-probs (float32), with <image> and padding made impossible (not renormalised,
    so scores equal the model's log-likelihood of the generated tokens)."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    logprobs[..., model.image_token_id] = float("-inf")
    logprobs[..., model.pad_token_id] = float("-inf")
    return logprobs


def generate(
    model: Flamingo,
    input_ids: torch.Tensor,  # (batch, tokens)
    attention_mask: torch.Tensor | None,  # (batch, tokens)
    media: torch.Tensor | None,  # (batch, media, frames, C, H, W)
    *,
    max_new_tokens: int = 20,
    num_beams: int = 3,
    length_penalty: float = 0.0,
    return_scores: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # (batch, new) int64 [, (batch,) float32]
    """See ``Flamingo.generate``. ``return_scores`` also returns each output's summed log-prob."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    input_ids, attention_mask = left_align(input_ids, attention_mask, model.pad_token_id)
    check_prompt_start(model, input_ids, attention_mask)
    was_training = model.training
    model.eval()
    try:
        context = model.media_context(input_ids, attention_mask, media)
        cache = DynamicCache()
        out = model(input_ids, attention_mask, media_context=context, past_key_values=cache, use_cache=True)
        if num_beams == 1:
            tokens, scores = _greedy(model, out.logits[:, -1], cache, context, attention_mask, max_new_tokens)
        else:
            tokens, scores = _beam(
                model,
                out.logits[:, -1],
                cache,
                context,
                attention_mask,
                max_new_tokens,
                num_beams,
                length_penalty,
            )
        return (tokens, scores) if return_scores else tokens
    finally:
        model.train(was_training)


def _next_inputs(attention_mask: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mask and position of the next generated token."""
    ones = attention_mask.new_ones(attention_mask.shape[0], 1)
    return torch.cat([attention_mask, ones], dim=1), positions + 1


def _greedy(
    model: Flamingo,
    logits: torch.Tensor,  # (batch, vocab) of the prompt's last token
    cache: DynamicCache,
    context: MediaContext,
    attention_mask: torch.Tensor,  # (batch, tokens)
    max_new_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = logits.shape[0]
    step_context = _step_context(context)
    positions = (attention_mask.long().sum(dim=1, keepdim=True) - 1).clamp(min=0)  # last prompt position
    finished = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    scores = torch.zeros(batch, device=logits.device)
    generated: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        logprobs = _logprobs(model, logits)
        token = logprobs.argmax(dim=-1)
        scores = scores + torch.where(finished, 0.0, logprobs.gather(1, token[:, None]).squeeze(1))
        token = torch.where(finished, model.pad_token_id, token)
        generated.append(token)
        finished = finished | (token == model.eoc_token_id)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        attention_mask, positions = _next_inputs(attention_mask, positions)
        out = model(
            token[:, None],
            attention_mask,
            media_context=step_context,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1]
    return torch.stack(generated, dim=1), scores


def _beam(
    model: Flamingo,
    logits: torch.Tensor,  # (batch, vocab) of the prompt's last token
    cache: DynamicCache,
    context: MediaContext,
    attention_mask: torch.Tensor,  # (batch, tokens)
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search; hypotheses are scored by sum log-prob / length ** length_penalty and a batch item
    stops once it has ``num_beams`` finished hypotheses no live beam can beat."""
    batch, device = logits.shape[0], logits.device
    beams = num_beams
    cache.batch_repeat_interleave(beams)
    logits = logits.repeat_interleave(beams, dim=0)
    attention_mask = attention_mask.repeat_interleave(beams, dim=0)
    step_context = _step_context(context, beams)
    positions = (attention_mask.long().sum(dim=1, keepdim=True) - 1).clamp(min=0)
    # only the first beam is live at the start, so the first step picks distinct tokens
    beam_scores = torch.full((batch, beams), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    sequences = torch.empty(batch * beams, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, float, torch.Tensor]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def score(total: float, length: int) -> float:
        return total / (length**length_penalty)

    for step in range(max_new_tokens):
        logprobs = _logprobs(model, logits)  # (batch*beams, vocab)
        vocab = logprobs.shape[-1]
        candidates = (beam_scores.view(-1, 1) + logprobs).view(batch, beams * vocab)
        top_scores, top_index = candidates.topk(2 * beams, dim=1)
        next_scores = torch.full((batch, beams), float("-inf"), device=device)
        next_tokens = torch.full((batch, beams), model.pad_token_id, dtype=torch.long, device=device)
        next_source = torch.arange(beams, device=device).repeat(batch, 1)  # (batch, beams)
        length = step + 1
        for b in range(batch):
            if done[b]:
                continue
            kept = 0
            for rank in range(2 * beams):
                total = float(top_scores[b, rank])
                if total == float("-inf"):
                    break
                source, token = divmod(int(top_index[b, rank]), vocab)
                if token == model.eoc_token_id:
                    if rank < beams:
                        seq = torch.cat([sequences[b * beams + source], top_index.new_tensor([token])])
                        finished[b].append((score(total, length), total, seq))
                    continue
                next_scores[b, kept] = total
                next_tokens[b, kept] = token
                next_source[b, kept] = source
                kept += 1
                if kept == beams:
                    break
            finished[b].sort(key=lambda item: item[0], reverse=True)
            del finished[b][beams:]
            best_live = float(next_scores[b].max()) if kept else float("-inf")
            if len(finished[b]) == beams and (
                kept == 0 or (length_penalty <= 0 and score(best_live, length) <= finished[b][-1][0])
            ):
                done[b] = True
            elif kept == 0:
                done[b] = True
        beam_index = (torch.arange(batch, device=device)[:, None] * beams + next_source).view(-1)
        sequences = torch.cat([sequences[beam_index], next_tokens.view(-1, 1)], dim=1)
        beam_scores = next_scores
        if all(done) or step == max_new_tokens - 1:
            break
        cache.reorder_cache(beam_index)
        attention_mask, positions = _next_inputs(attention_mask[beam_index], positions[beam_index])
        out = model(
            next_tokens.view(-1, 1),
            attention_mask,
            media_context=step_context,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1]

    results: list[torch.Tensor] = []
    totals = torch.zeros(batch, device=device)
    for b in range(batch):
        if not done[b]:  # ran out of steps: live beams compete with finished hypotheses
            for k in range(beams):
                total = float(beam_scores[b, k])
                if total > float("-inf"):
                    finished[b].append((score(total, sequences.shape[1]), total, sequences[b * beams + k]))
            finished[b].sort(key=lambda item: item[0], reverse=True)
        if finished[b]:
            totals[b] = finished[b][0][1]
            results.append(finished[b][0][2])
        else:
            totals[b] = beam_scores[b, 0]
            results.append(sequences[b * beams])
    width = max(len(r) for r in results)
    output = torch.full((batch, width), model.pad_token_id, dtype=torch.long, device=device)
    for b, seq in enumerate(results):
        output[b, : len(seq)] = seq
    return output, totals


def score_continuations(
    model: Flamingo,
    input_ids: torch.Tensor,  # (batch, tokens)
    attention_mask: torch.Tensor | None,  # (batch, tokens)
    media: torch.Tensor | None,  # (batch, media, frames, C, H, W)
    continuation_mask: torch.Tensor,  # (batch, tokens) bool
) -> torch.Tensor:  # (batch,) float32
    """See ``Flamingo.score_continuations``."""
    if continuation_mask.shape != input_ids.shape:
        raise ValueError(
            f"continuation_mask shape {tuple(continuation_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    continuation_mask = continuation_mask.bool()
    if bool(continuation_mask[:, 0].any()):
        raise ValueError("continuation_mask marks the first token, which has no context to score it from")
    if attention_mask is not None and bool((continuation_mask & (attention_mask == 0)).any()):
        raise ValueError("continuation_mask marks padding tokens")
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids, attention_mask, media).logits[:, :-1].float()
    finally:
        model.train(was_training)
    logprobs = torch.gather(F.log_softmax(logits, dim=-1), 2, input_ids[:, 1:, None]).squeeze(-1)
    return (logprobs * continuation_mask[:, 1:]).sum(dim=1)
