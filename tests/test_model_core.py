"""Flamingo forward: masks, equivalence with the frozen LM, causality per image, padding and
packed rows, gradients, dtype, media encoding, transforms, save/load. Tiny random models only."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from flamboyance.model import Flamingo, FlamingoConfig, media_attention_mask, prepare_tokenizer
from flamboyance.model.flamingo import relative_features
from flamboyance.model.language import decoder_layers
from flamboyance.model.tiny import LM_FAMILIES, build_tokenizer, tiny_config
from flamboyance.model.vision import CLIP_MEAN, CLIP_STD, VisionEncoder
from flamboyance.model.xattn import MaskedCrossAttention
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN, PAD_FALLBACK_TOKEN
from PIL import Image

CORPUS = ["a red circle", "a blue square on the table", "hello world, this is text"] * 3
TOKENIZER = build_tokenizer(CORPUS, vocab_size=300)


def make_model(family: str = "gpt2", *, gates: float | None = 0.7, **overrides) -> Flamingo:
    """A tiny model; ``gates`` sets every tanh gate's alpha (None keeps the zero init)."""
    model = Flamingo.from_config(tiny_config(family=family, tokenizer=TOKENIZER, **overrides))
    if gates is not None:
        with torch.no_grad():
            for block in model.xattn.values():
                block.attn_gate.fill_(gates)
                block.ff_gate.fill_(gates)
    return model.eval()


def encode(model: Flamingo, texts: list[str], side: str = "right"):
    model.tokenizer.padding_side = side
    enc = model.tokenizer(texts, return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def random_media(batch: int, num: int, seed: int, frames: int = 1, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num, frames, 3, size, size, generator=generator)


# --- the media mask ------------------------------------------------------------------------------

IMG = 9  # stands for the <image> id in the literal mask tests


def test_media_mask_immediate_literal():
    ids = torch.tensor([[5, IMG, 6, 7, IMG, 8, IMG, 4]])
    mask = media_attention_mask(ids, image_token_id=IMG, num_media=2)
    expected = torch.tensor(
        [[[0, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]]], dtype=torch.bool
    )
    # the third <image> has no media slot: its tokens see nothing rather than a padded slot
    assert torch.equal(mask, expected)


def test_media_mask_all_previous_padding_and_segments():
    ids = torch.tensor([[5, IMG, 6, IMG, 7, 3, IMG, 8, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0]])
    segments = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1]])
    mask = media_attention_mask(
        ids,
        image_token_id=IMG,
        num_media=3,
        attention_mask=attention,
        segment_ids=segments,
        only_attend_immediate_media=False,
    )
    expected = torch.tensor(
        [[[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]]],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)
    immediate = media_attention_mask(ids, image_token_id=IMG, num_media=3, segment_ids=segments)
    # token 5 starts document 1: the latest image (slot 1) belongs to document 0, so it sees nothing
    assert immediate[0, 5].tolist() == [False, False, False]
    assert immediate[0, 4].tolist() == [False, True, False]


# --- equivalence with the frozen LM ----------------------------------------------------------------


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_zero_gates_give_frozen_lm_logits(family):
    model = make_model(family, gates=None)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, len(model.tokenizer), (3, 12), generator=generator)
    ids[:, 2] = model.image_token_id
    ids[0, 7] = model.image_token_id
    attention = torch.ones_like(ids)
    attention[1, :3] = 0  # left padding
    ids[1, :3] = model.pad_token_id
    attention[2, 9:] = 0  # right padding
    ids[2, 9:] = model.pad_token_id
    out = model(ids, attention, random_media(3, 2, seed=1))
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    reference = model.lm(input_ids=ids, attention_mask=attention, position_ids=positions).logits
    real = attention.bool()
    assert out.logits.shape == (3, 12, len(model.tokenizer))
    torch.testing.assert_close(out.logits[real], reference[real], rtol=0, atol=1e-5)


def test_zero_gates_siglip_tower():
    model = make_model("gpt2", gates=None, vision_family="siglip")
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a red circle{EOC_TOKEN}"])
    out = model(ids, attention, random_media(1, 1, seed=2))
    reference = model.lm(input_ids=ids).logits
    torch.testing.assert_close(out.logits, reference, rtol=0, atol=1e-5)


# --- what each token sees ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", LM_FAMILIES)
@pytest.mark.parametrize("immediate", [True, False])
def test_changing_image_k_never_changes_earlier_tokens(family, immediate):
    model = make_model(family, only_attend_immediate_media=immediate)
    text = (
        f"some text {IMAGE_TOKEN}a red circle{EOC_TOKEN}{IMAGE_TOKEN}a blue{EOC_TOKEN}{IMAGE_TOKEN}a square"
    )
    ids, attention = encode(model, [text])
    image_positions = (ids[0] == model.image_token_id).nonzero().flatten().tolist()
    media = random_media(1, 3, seed=4)
    base = model(ids, attention, media).logits
    assert torch.isfinite(base).all()
    for k, position in enumerate(image_positions):
        changed = media.clone()
        changed[:, k] = random_media(1, 1, seed=10 + k)[:, 0]
        logits = model(ids, attention, changed).logits
        assert torch.equal(logits[0, :position], base[0, :position]), k
        assert (logits[0, position:] - base[0, position:]).abs().amax() > 1e-4, k


def test_tokens_before_first_image_see_no_image_and_no_nan():
    model = make_model("gpt2")
    ids, attention = encode(model, [f"plain text here {IMAGE_TOKEN}a red circle"])
    first = int((ids[0] == model.image_token_id).nonzero()[0])
    with_media = model(ids, attention, random_media(1, 1, seed=5)).logits
    no_media = model(ids, attention, None).logits
    assert torch.equal(with_media[0, :first], no_media[0, :first])
    assert torch.isfinite(no_media).all() and torch.isfinite(with_media).all()


def test_text_only_batch_matches_frozen_lm_only_through_ffn():
    # without any image the cross-attention adds exactly zero: only the gated FFNs act
    model = make_model("gpt2")
    ids, attention = encode(model, ["hello world, this is text"])
    with torch.no_grad():
        for block in model.xattn.values():
            block.ff_gate.zero_()
    torch.testing.assert_close(
        model(ids, attention, None).logits, model.lm(input_ids=ids).logits, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_is_never_attended(side):
    model = make_model("llama")
    short = f"{IMAGE_TOKEN}a red"
    long = f"text {IMAGE_TOKEN}a red circle{EOC_TOKEN}{IMAGE_TOKEN}a blue square"
    ids, attention = encode(model, [short, long], side=side)
    media = random_media(2, 2, seed=6)
    batched = model(ids, attention, media).logits
    alone_ids, alone_attention = encode(model, [short])
    alone = model(alone_ids, alone_attention, media[:1, :1]).logits
    real = attention[0].bool()
    torch.testing.assert_close(batched[0, real], alone[0], rtol=1e-4, atol=1e-5)
    # row 0 has one <image>: its second media slot is padding and must change nothing
    changed = media.clone()
    changed[0, 1] = random_media(1, 1, seed=7)[0, 0]
    assert torch.equal(model(ids, attention, changed).logits, batched)


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_packed_documents_never_cross(family):
    model = make_model(family)
    doc_a = f"one {IMAGE_TOKEN}a red circle{EOC_TOKEN}"
    doc_b = f"two words {IMAGE_TOKEN}a blue square{EOC_TOKEN}"
    a_ids, _ = encode(model, [doc_a])
    b_ids, _ = encode(model, [doc_b])
    ids = torch.cat([a_ids, b_ids], dim=1)
    segments = torch.cat([torch.zeros_like(a_ids), torch.ones_like(b_ids)], dim=1)
    media = random_media(1, 2, seed=8)
    packed = model(ids, torch.ones_like(ids), media, segment_ids=segments).logits
    alone_b = model(b_ids, torch.ones_like(b_ids), media[:, 1:]).logits
    alone_a = model(a_ids, torch.ones_like(a_ids), media[:, :1]).logits
    n = a_ids.shape[1]
    torch.testing.assert_close(packed[0, n:], alone_b[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(packed[0, :n], alone_a[0], rtol=1e-4, atol=1e-4)
    changed = media.clone()
    changed[:, 0] = random_media(1, 1, seed=9)[:, 0]
    assert torch.equal(
        model(ids, torch.ones_like(ids), changed, segment_ids=segments).logits[0, n:], packed[0, n:]
    )
    # the loss never asks document 0's last token to predict document 1's first token
    labels = ids.clone()
    loss_packed = model(ids, torch.ones_like(ids), media, labels, segment_ids=segments).loss
    ref_a = model(a_ids, None, media[:, :1], a_ids).loss
    ref_b = model(b_ids, None, media[:, 1:], b_ids).loss
    n_a, n_b = a_ids.shape[1] - 1, b_ids.shape[1] - 1
    torch.testing.assert_close(loss_packed, (ref_a * n_a + ref_b * n_b) / (n_a + n_b), rtol=1e-4, atol=1e-5)


# --- media encoding ------------------------------------------------------------------------------------


def test_padded_media_slots_are_never_encoded():
    model = make_model("gpt2")
    seen = []
    model.vision.tower.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    texts = [f"{IMAGE_TOKEN}a{EOC_TOKEN}{IMAGE_TOKEN}b", f"{IMAGE_TOKEN}c", "no image"]
    ids, attention = encode(model, texts)
    model(ids, attention, random_media(3, 3, seed=1))
    assert seen == [3]  # 2 + 1 + 0 real slots out of 9


def test_video_frames_use_time_embeddings():
    model = make_model("gpt2", max_frames=3)
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a clip"])
    video = random_media(1, 1, seed=2, frames=3)
    base = model(ids, attention, video).logits
    swapped = video[:, :, [1, 0, 2]]
    assert (model(ids, attention, swapped).logits - base).abs().amax() > 1e-5  # frame order matters
    with pytest.raises(ValueError, match="max_frames"):
        model(ids, attention, random_media(1, 1, seed=2, frames=4))
    with pytest.raises(ValueError, match="media must be"):
        model(ids, attention, torch.zeros(2, 1, 1, 3, 32, 32))


def test_image_transform_and_embeddings():
    model = make_model("gpt2")
    red = Image.new("RGB", (50, 40), (255, 0, 0))
    pixels = model.image_transform(red)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    expected = [(v - m) / s for v, m, s in zip((1.0, 0.0, 0.0), CLIP_MEAN, CLIP_STD)]
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), torch.tensor(expected), rtol=0, atol=1e-5)
    blue = model.image_transform(Image.new("RGB", (32, 64), (0, 0, 255)))
    embeddings = model.image_embeddings(torch.stack([pixels, blue, pixels]))
    assert embeddings.shape == (3, 64)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    assert torch.equal(embeddings[0], embeddings[2]) and not torch.allclose(embeddings[0], embeddings[1])
    with pytest.raises(TypeError, match="PIL"):
        model.image_transform(torch.zeros(3, 4, 4))


def test_relative_features_centre_each_document_on_its_media():
    features = torch.randn(5, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    documents = torch.tensor([7, 7, 3, 9, 9])
    out = relative_features(features, documents)
    torch.testing.assert_close(out[0], (features[0] - features[1]) / 2)
    torch.testing.assert_close(out[1], (features[1] - features[0]) / 2)
    assert torch.equal(out[2], torch.zeros(2, 3, 4))  # a document's only medium: nothing sets it apart
    torch.testing.assert_close(out[3] + out[4], torch.zeros(2, 3, 4), rtol=0, atol=1e-6)


def set_relative_gates(model: Flamingo, value: float) -> None:
    with torch.no_grad():
        for block in model.xattn.values():
            block.relative_gate.fill_(value)


def test_relative_media_is_a_second_stream_that_starts_closed():
    plain, relative = make_model("gpt2"), make_model("gpt2", relative_media=True)
    text = f"{IMAGE_TOKEN}a red circle{EOC_TOKEN}{IMAGE_TOKEN}a blue square"
    ids, attention = encode(relative, [text])
    media = random_media(1, 2, seed=3)
    tokens = relative.encode_media(ids, media)
    assert tokens.shape[2] == 2 * plain.encode_media(ids, media).shape[2]
    assert torch.equal(tokens[:, :, : tokens.shape[2] // 2], plain.encode_media(ids, media))
    # its gates start at 0: the paper's model, exactly; the fresh model is still the frozen LM
    assert torch.equal(relative(ids, attention, media).logits, plain(ids, attention, media).logits)
    fresh = Flamingo.from_config(tiny_config(tokenizer=TOKENIZER, relative_media=True)).eval()
    torch.testing.assert_close(fresh(ids, attention, media).logits, fresh.lm(ids, attention_mask=attention).logits)
    trainable = {n for n, p in relative.named_parameters() if p.requires_grad}
    assert {"xattn.0.relative_gate", "relative_resampler.latents"} <= trainable
    opened = Flamingo.from_config(tiny_config(tokenizer=TOKENIZER, relative_media=True, relative_gate_init=0.3))
    assert [float(block.relative_gate.detach()) for block in opened.xattn.values()] == [pytest.approx(0.3)] * 2
    with pytest.raises(ValueError, match="relative_media=True"):
        tiny_config(tokenizer=TOKENIZER, relative_gate_init=0.3)
    # open: the text after the first image now depends on the second image, and only through it
    set_relative_gates(relative, 0.7)
    shifted = media.clone()
    shifted[:, 1] = random_media(1, 1, seed=4)[:, 0]
    second = [i for i, t in enumerate(ids[0].tolist()) if t == relative.image_token_id][1]
    for model, moves in ((plain, False), (relative, True)):
        before, after = model(ids, attention, media).logits, model(ids, attention, shifted).logits
        assert torch.equal(before[0, :second], after[0, :second]) is not moves
    # the same image in the same company gets the same relative tokens, whatever its slot
    swapped = relative.encode_media(ids, media[:, [1, 0]])
    torch.testing.assert_close(tokens[0, 0], swapped[0, 1])


def test_relative_media_keeps_packed_documents_apart():
    relative = make_model("gpt2", relative_media=True)
    set_relative_gates(relative, 0.7)
    one_ids, _ = encode(relative, [f"{IMAGE_TOKEN}a red circle"])
    media = random_media(1, 2, seed=5)
    packed_ids = torch.cat([one_ids, one_ids], dim=1)
    segments = torch.cat([torch.zeros_like(one_ids), torch.ones_like(one_ids)], dim=1)
    packed = relative.encode_media(packed_ids, media, segment_ids=segments)
    alone = relative.encode_media(one_ids, media[:, 1:])
    torch.testing.assert_close(packed[:, 1], alone[:, 0])  # a one-image document: relative part of zeros
    # one document: the two images are each other's company
    assert not torch.allclose(relative.encode_media(packed_ids, media)[:, 1], alone[:, 0])


# --- training contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # tied and untied output embeddings
def test_gradients_reach_exactly_the_trainable_set(family):
    model = make_model(family)
    model.train()
    assert model.resampler.training and model.xattn["0"].training
    assert not model.lm.training and not model.vision.tower.training  # frozen towers stay in eval mode
    names = set(model.trainable_parameters())
    expected_new = {"new_token_embeddings"} | (
        {"new_token_output_embeddings"} if family == "llama" else set()
    )
    assert {n for n in names if not n.startswith(("resampler.", "xattn."))} == expected_new
    assert any(n.startswith("resampler.") for n in names) and any(n.startswith("xattn.") for n in names)
    ids, attention = encode(model, [f"hi {IMAGE_TOKEN}a red circle{EOC_TOKEN}{IMAGE_TOKEN}a blue", "x <pad>"])
    model(ids, attention, random_media(2, 2, seed=1), ids).loss.backward()
    for name, param in model.named_parameters():
        if name in names:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert not param.requires_grad and param.grad is None, name


def test_only_new_token_rows_change_after_a_step():
    model = make_model("llama")
    model.train()
    vocab = torch.arange(len(model.tokenizer))
    hidden = torch.randn(1, 5, model.lm.config.hidden_size)
    with torch.no_grad():
        embed_before = model.embed_tokens(vocab[None])[0].clone()
        logits_before = model.lm_logits(hidden).clone()
    frozen_before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD(model.trainable_parameters().values(), lr=1.0)
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a red circle{EOC_TOKEN}<pad>"])
    model(ids, attention, random_media(1, 1, seed=1), ids).loss.backward()
    optimizer.step()
    with torch.no_grad():
        embed_after = model.embed_tokens(vocab[None])[0]
        logits_after = model.lm_logits(hidden)
    new = torch.zeros(len(vocab), dtype=torch.bool)
    new[model.new_token_ids] = True
    assert torch.equal(embed_after[~new], embed_before[~new])
    assert torch.equal(logits_after[..., ~new], logits_before[..., ~new])
    assert not torch.equal(embed_after[model.image_token_id], embed_before[model.image_token_id])
    assert not torch.equal(logits_after[..., model.eoc_token_id], logits_before[..., model.eoc_token_id])
    for name, param in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), name


def test_token_ids_stay_int64_under_bf16_autocast():
    model = make_model("gpt2")
    seen = []
    model.lm.get_input_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a red circle{EOC_TOKEN}"])
    assert int(ids.max()) > 256  # ids that bf16 could not represent exactly
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention, random_media(1, 1, seed=1), ids)
    assert seen[0].dtype == torch.int64
    assert torch.equal(seen[0], torch.where(ids < model.lm.get_input_embeddings().weight.shape[0], ids, 0))
    assert torch.isfinite(out.loss)
    with pytest.raises(TypeError, match="int64"):
        model(ids.float(), attention, None)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(ids + 10_000, attention, None)


# --- construction, tokenizer, save/load -----------------------------------------------------------


def test_layer_placement_and_generic_location():
    model = make_model("opt", num_layers=4, cross_attn_every=2)
    assert sorted(model.xattn) == ["1", "3"]
    assert len(decoder_layers(model.lm)) == 4
    with pytest.raises(ValueError, match="cross_attn_every"):
        make_model("gpt2", num_layers=2, cross_attn_every=3)


def test_tokenizer_gets_special_tokens_and_a_pad_that_is_not_eos():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "</s>": 2, "[UNK]": 3}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="</s>", pad_token="</s>", unk_token="[UNK]"
    )
    prepare_tokenizer(tokenizer)
    vocab = tokenizer.get_vocab()
    assert IMAGE_TOKEN in vocab and EOC_TOKEN in vocab
    assert tokenizer.pad_token == PAD_FALLBACK_TOKEN and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.encode(f"hello{IMAGE_TOKEN}world{EOC_TOKEN}") == [
        0,
        vocab[IMAGE_TOKEN],
        1,
        vocab[EOC_TOKEN],
    ]


def test_config_validation_and_dict_roundtrip():
    config = tiny_config(family="qwen2", tokenizer=TOKENIZER)
    again = FlamingoConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="num_latents"):
        config.replace(num_latents=0)
    with pytest.raises(ValueError, match="image_mean"):
        config.replace(image_mean=(0.5, 0.5))
    with pytest.raises(TypeError, match="language_model"):
        FlamingoConfig(language_model=3, vision_encoder="x")


@pytest.mark.parametrize(("family", "relative"), [("gpt2", False), ("llama", False), ("gpt2", True)])
def test_save_and_load_give_the_same_model(tmp_path, family, relative):
    model = make_model(family, relative_media=relative)
    with torch.no_grad():
        model.new_token_embeddings.add_(0.5)
        if relative:
            set_relative_gates(model, 0.7)
    ids, attention = encode(model, [f"hi {IMAGE_TOKEN}a red {IMAGE_TOKEN}circle{EOC_TOKEN}"])
    media = random_media(1, 2, seed=3)
    before = model(ids, attention, media).logits
    model.save_pretrained(tmp_path / "m")
    loaded = Flamingo.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded(ids, attention, media).logits, before)
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    assert loaded.config.to_dict() == model.config.to_dict()
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "m" / "trainable.safetensors"))) == set(model.trainable_parameters())
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        Flamingo.from_pretrained(tmp_path / "missing")


def test_timm_vision_encoder_optional():
    timm = pytest.importorskip("timm")
    config = tiny_config(family="gpt2", tokenizer=TOKENIZER).replace(
        vision_encoder="timm:nfnet_l0", vision_pretrained=False, image_size=64
    )
    model = Flamingo.from_config(config).eval()
    assert model.vision.kind == "timm" and timm is not None
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a red"])
    out = model(ids, attention, random_media(1, 1, seed=1, size=64))
    assert torch.isfinite(out.logits).all()


def test_build_from_local_paths_and_reload_without_frozen_copies(tmp_path):
    from transformers import AutoModelForCausalLM, CLIPConfig, CLIPModel

    config = tiny_config(family="gpt2", tokenizer=TOKENIZER)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config.language_model)
    lm.save_pretrained(tmp_path / "lm")
    TOKENIZER.save_pretrained(tmp_path / "lm")
    clip = CLIPModel(
        CLIPConfig(vision_config=config.vision_encoder.to_dict(), text_config={"hidden_size": 32})
    )
    clip.save_pretrained(tmp_path / "clip")  # a full CLIP checkpoint: only its vision half is used
    by_path = config.replace(
        language_model=str(tmp_path / "lm"), vision_encoder=str(tmp_path / "clip"), tokenizer=None
    )
    model = Flamingo.from_config(by_path).eval()
    assert torch.equal(model.lm.get_input_embeddings().weight, lm.get_input_embeddings().weight)
    tower = model.vision.tower
    tower = getattr(tower, "vision_model", tower)  # transformers 5 drops the vision_model wrapper
    vision_weight = tower.embeddings.patch_embedding.weight
    assert torch.equal(vision_weight, clip.vision_model.embeddings.patch_embedding.weight)
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a red circle"])
    media = random_media(1, 1, seed=1)
    before = model(ids, attention, media).logits
    model.save_pretrained(tmp_path / "flamingo")
    assert not (tmp_path / "flamingo" / "frozen_lm").exists()  # referenced by path, not copied
    assert not (tmp_path / "flamingo" / "frozen_vision").exists()
    assert torch.equal(
        Flamingo.from_pretrained(tmp_path / "flamingo").eval()(ids, attention, media).logits, before
    )


def test_build_tokenizer_keeps_special_tokens_whole():
    vocab = TOKENIZER.get_vocab()
    ids = TOKENIZER.encode(f"{IMAGE_TOKEN}a red circle{EOC_TOKEN}{PAD_FALLBACK_TOKEN}")
    assert ids[0] == vocab[IMAGE_TOKEN] and ids[-2:] == [vocab[EOC_TOKEN], vocab[PAD_FALLBACK_TOKEN]]
    assert TOKENIZER.decode(ids, skip_special_tokens=True) == "a red circle"
    assert TOKENIZER.pad_token_id != TOKENIZER.eos_token_id
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(TypeError, match="corpus items"):
        build_tokenizer(["ok", 3])


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_tiny_models_are_tiny(family):
    model = make_model(family)
    total = sum(p.numel() for p in model.parameters())
    assert total < 400_000, total
    assert model.image_transform.size == 32


# --- review additions: masking option, fully masked rows, media encoding, optional timm ---------------


@pytest.mark.parametrize("immediate", [True, False])
def test_only_attend_immediate_media_option_reaches_the_cross_attention(immediate):
    defaults = {f.name: f.default for f in dataclasses.fields(FlamingoConfig)}
    assert defaults["only_attend_immediate_media"] is True
    model = make_model("gpt2", only_attend_immediate_media=immediate)
    # the block before decoder layer 0 sees token embeddings only (no self-attention mixing yet),
    # so its cross-attention output shows exactly which images each token attends to
    outputs = []
    model.xattn["0"].attn.register_forward_hook(lambda module, args, out: outputs.append(out))
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a red{EOC_TOKEN}{IMAGE_TOKEN}a blue square"])
    first, second = (ids[0] == model.image_token_id).nonzero().flatten().tolist()
    media = random_media(1, 2, seed=11)
    context = model.media_context(ids, attention, media)
    assert context.media_mask[0, -1].tolist() == [not immediate, True]
    assert context.media_mask[0, second - 1].tolist() == [True, False]
    model(ids, attention, media)
    changed = media.clone()
    changed[:, 0] = random_media(1, 1, seed=12)[:, 0]
    model(ids, attention, changed)
    base, after = outputs[0][0], outputs[1][0]  # (tokens, dim)
    assert (after[first:second] - base[first:second]).abs().amax(dim=-1).min() > 1e-6  # all see image 0
    if immediate:
        assert torch.equal(after[second:], base[second:])  # image 1's tokens never see image 0
    else:
        assert (after[second:] - base[second:]).abs().amax(dim=-1).min() > 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fully_masked_rows_output_exact_zero_without_nan(dtype):
    torch.manual_seed(0)
    attn = MaskedCrossAttention(dim=16, dim_visual=8, heads=2, head_dim=4).to(dtype)
    x = torch.randn(2, 5, 16, dtype=dtype)
    visual = torch.randn(2, 3, 4, 8, dtype=dtype)  # (batch, media, latents, dim_visual)
    mask = torch.zeros(2, 5, 3, dtype=torch.bool)
    mask[0, 2:, 0] = True  # row 0: tokens 0-1 come before the first image
    mask[1, 4, 2] = True  # row 1: only the last token sees an image
    out = attn(x, visual, mask)
    sees = mask.any(dim=-1)
    assert torch.isfinite(out).all()
    assert torch.equal(out[~sees], torch.zeros_like(out[~sees]))  # no uniform spread over the images
    assert (out[sees].abs().amax(dim=-1) > 0).all()
    unseen = visual.clone()
    unseen[0, 1:] = 1e3  # images no token of row 0 may see
    unseen[1, :2] = -1e3
    assert torch.equal(attn(x, unseen, mask), out)


def test_video_and_imageless_batches_encode_only_real_slots():
    model = make_model("gpt2", max_frames=3)
    seen = []
    model.vision.tower.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    ids, attention = encode(model, [f"{IMAGE_TOKEN}a clip", "no video here"])
    model(ids, attention, random_media(2, 2, seed=3, frames=3))
    assert seen == [3]  # one real slot x 3 frames, out of 2 x 2 slots
    ids, attention = encode(model, ["plain text", "more text"])
    model(ids, attention, random_media(2, 2, seed=3, frames=3))
    assert seen == [3]  # no <image> token anywhere: the vision tower is not called at all


def test_missing_timm_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if the optional extra were not installed
    with pytest.raises(ImportError, match=r"timm:nfnet_l0 needs timm: pip install 'flamboyance\[timm\]'"):
        VisionEncoder.build("timm:nfnet_l0", pretrained=False)
    config = tiny_config(family="gpt2", tokenizer=TOKENIZER).replace(
        vision_encoder="timm:nfnet_l0", vision_pretrained=False, image_size=64
    )
    with pytest.raises(ImportError, match=r"pip install 'flamboyance\[timm\]'"):
        Flamingo.from_config(config)
