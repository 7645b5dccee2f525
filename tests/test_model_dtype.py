"""Frozen towers in their own dtype (bf16 on GPUs), and building a model without its weights to
read single blocks of them (what FSDP workers do)."""

from __future__ import annotations

import pytest
import torch
from flamboyance.model import Flamingo, FlamingoConfig
from flamboyance.model.tiny import tiny_config


def test_frozen_towers_take_the_configured_dtype_and_trainable_weights_stay_fp32(tmp_path) -> None:
    config = tiny_config(family="llama").replace(frozen_dtype="bf16")
    model = Flamingo.from_config(config)
    trainable = model.trainable_parameters()
    assert {p.dtype for n, p in model.named_parameters() if n.startswith(("lm.", "vision."))} == {torch.bfloat16}
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    ids = model.tokenizer(["<image>a red circle<EOC>"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    media = torch.randn(1, 1, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(ids, media=media, labels=ids)  # no autocast: the blocks cast at their boundary
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable.values())
    model.save_pretrained(tmp_path / "m")
    again = Flamingo.from_pretrained(tmp_path / "m")
    assert again.lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert again.config.frozen_dtype == "bf16"


def test_default_dtype_is_fp32_without_cuda_and_names_are_checked(monkeypatch) -> None:
    config = tiny_config(family="gpt2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.frozen_dtype is None and config.torch_dtype() == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.torch_dtype() == torch.bfloat16 and config.torch_dtype(frozen=False) == torch.float32
    assert config.replace(frozen_dtype="fp16").torch_dtype() == torch.float16
    with pytest.raises(ValueError, match="frozen_dtype"):
        config.replace(frozen_dtype="float8")
    assert FlamingoConfig.from_dict(config.replace(frozen_dtype="bf16").to_dict()).frozen_dtype == "bf16"


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt"])
def test_empty_build_has_meta_parameters_and_every_weight_block_is_readable(tmp_path, family) -> None:
    model = Flamingo.from_config(tiny_config(family=family))
    model.save_pretrained(tmp_path / "m")
    empty = Flamingo.from_pretrained(tmp_path / "m", empty=True)
    real = dict(model.named_parameters())
    assert list(dict(empty.named_parameters())) == list(real)
    assert all(p.is_meta for p in empty.parameters())
    assert all(not b.is_meta for b in empty.buffers())
    for (name, a), (_, b) in zip(model.named_buffers(), empty.named_buffers()):
        assert torch.equal(a, b), name
    files = Flamingo.weight_files(tmp_path / "m")
    for name, param in real.items():
        rows = max(1, param.shape[0] // 2) if param.dim() else 0
        offset = (param.shape[0] - rows,) + (0,) * (param.dim() - 1) if param.dim() else ()
        shape = (rows, *param.shape[1:]) if param.dim() else ()
        block = files.read(name, offset=offset, shape=shape)
        expected = param.detach()[param.shape[0] - rows :] if param.dim() else param.detach()
        assert torch.equal(block, expected), name
