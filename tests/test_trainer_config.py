"""TrainConfig: YAML loading, dotted key=value overrides with type checks, the example configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flamboyance.cli import main as flamboyance_main
from flamboyance.trainer.config import ConfigError, TrainConfig, apply_override, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


def _minimal(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        "run_dir: runs/x\nmax_steps: 7\n"
        "data:\n  image_text:\n    urls: [data/it]\n    batch_size: 3\n"
        "optim:\n  lr: 1.0e-3\n"
    )
    return path


def test_yaml_and_overrides_are_typed(tmp_path: Path) -> None:
    cfg = load_config(
        _minimal(tmp_path),
        ["optim.lr=3e-4", "data.image_text.weight=0.2", "parallel.num_workers=2", "optim.betas=[0.9, 0.95]"],
    )
    assert cfg.max_steps == 7
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.image_text.weight == 0.2
    assert cfg.data.image_text.batch_size == 3
    assert cfg.parallel.num_workers == 2
    assert cfg.optim.betas == (0.9, 0.95)
    assert list(cfg.data.sources()) == ["image_text"]
    # an integer where a float is expected is accepted and converted
    assert load_config(_minimal(tmp_path), ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
        ("max_steps=2.5", "max_steps: expected an integer, got 2.5"),
        ("optim.lrr=3", "optim: unknown key(s) ['lrr']"),
        ("mode=sometimes", "mode: 'sometimes' is not one of ['accumulate', 'round_robin']"),
        ("parallel.use_gpu=maybe", "parallel.use_gpu: expected true/false, got 'maybe'"),
        ("lr", "override 'lr' must look like key=value"),
        ("max_steps.x=1", "max_steps is not a section"),
        ("parallel.strategy=zero3", "parallel.strategy: 'zero3' is not one of ['ddp', 'fsdp']"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(_minimal(tmp_path), [override])
    assert message in str(excinfo.value)


def test_sources_can_be_removed_and_at_least_one_is_required(tmp_path: Path) -> None:
    path = _minimal(tmp_path)
    with pytest.raises(ConfigError, match="at least one of m3w, image_text, video_text"):
        load_config(path, ["data.image_text=null"])


def test_roundtrip_and_resolved_paths(tmp_path: Path) -> None:
    cfg = load_config(_minimal(tmp_path))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    resolved = cfg.resolved()
    assert Path(resolved.run_dir).is_absolute()
    assert resolved.data.image_text.urls == [str(Path("data/it").resolve())]
    data: dict = {}
    apply_override(data, "a.b.c=s3://bucket/x")
    assert data == {"a": {"b": {"c": "s3://bucket/x"}}}


def test_example_configs_load() -> None:
    demo = load_config(CONFIGS / "demo.yaml")
    assert demo.parallel.num_workers == 2 and not demo.parallel.use_gpu
    assert [s.weight for s in demo.data.sources().values()] == [1.0, 0.2, 0.03]
    assert demo.data.m3w.max_tokens == 256 and demo.data.m3w.max_images == 5
    assert demo.data.video_text.num_frames == 8
    packs = demo.data.image_text
    assert (packs.pairs_per_sequence, packs.random_pack_size) == (9, True)  # 0..8-shot contexts
    assert demo.data.video_text.random_pack_size is False
    gpu = load_config(CONFIGS / "gpu.yaml")
    assert gpu.parallel.strategy == "fsdp" and gpu.parallel.precision == "bf16"
    assert gpu.parallel.activation_checkpointing and gpu.optim.lr == 1e-4


def test_cli_print_config_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code = flamboyance_main(["train", "--config", str(CONFIGS / "demo.yaml"), "--print-config", "optim.lr=2e-3"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 2e-3
    assert Path(printed["run_dir"]).is_absolute()
    code = flamboyance_main(["train", "--config", str(CONFIGS / "demo.yaml"), "optim.nope=1"])
    assert code == 2
    assert "optim: unknown key(s) ['nope']" in capsys.readouterr().err
