"""Ray Train runs on tiny shards: 1 and 2 CPU workers (DDP over gloo) where every source's loss
falls, and a worker killed mid-run that the run survives from its last checkpoint by itself."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from flamboyance.trainer.build import INIT_DIR, prepare_run
from flamboyance.trainer.config import load_config
from flamboyance.trainer.launch import RAY_RUN_NAME, RAY_STORAGE_DIR, train
from flamboyance.trainer.metrics import EVENTS_NAME, METRICS_NAME, read_metrics
from flamboyance.trainer.tiny_data import write_tiny_shards

ray = pytest.importorskip("ray")
SOURCES = ("m3w", "image_text", "video_text")


@pytest.fixture(scope="module")
def ray_instance():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # the S3 test's local server (moto) accepts any credentials; Ray workers inherit these
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ray")
    shards = write_tiny_shards(root / "shards", samples=32, per_shard=8, frames=3)
    overrides = [
        *(f"data.{name}.urls=[{shards[name]}]" for name in SOURCES),
        "data.m3w.batch_size=2",
        "data.m3w.max_tokens=48",
        "data.image_text.batch_size=4",
        "data.video_text.batch_size=2",
        "data.video_text.num_frames=4",
        "model.tiny.max_frames=4",
        "model.tokenizer_vocab_size=320",
        "model.tokenizer_corpus_records=40",
        "optim.lr=1e-2",
        "optim.warmup_steps=3",
        "logging.progress=false",
        "logging.tensorboard=false",
        "data.num_workers=0",
    ]
    init_run = root / "init_run"
    prepare_run(load_config(None, [*overrides, f"run_dir={init_run}"]).resolved())
    return {"root": root, "overrides": overrides, "init": init_run / INIT_DIR}


def _run(workspace: dict, name: str, *extra: str) -> Path:
    run_dir = workspace["root"] / name
    shutil.copytree(workspace["init"], run_dir / INIT_DIR)  # same untrained model, built once
    train(load_config(None, [*workspace["overrides"], f"run_dir={run_dir}", *extra]))
    return run_dir


def _assert_losses_fall(records: list[dict], *, margin: float) -> None:
    for name in SOURCES:
        losses = [r[f"loss/{name}"] for r in records]
        first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
        assert last < first - margin, (name, losses)


def test_one_worker_every_loss_falls(ray_instance, workspace: dict) -> None:
    run = _run(workspace, "one", "parallel.num_workers=1", "max_steps=15", "checkpoint.every=15")
    records = read_metrics(run / METRICS_NAME)
    assert [r["step"] for r in records] == list(range(1, 16))
    _assert_losses_fall(records, margin=1.0)
    assert (run / "final" / "trainable.safetensors").exists()
    checkpoint = run / RAY_STORAGE_DIR / RAY_RUN_NAME / "step_00000015"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "COMMITTED", "meta.json", "rank_00000.pt", "state", "train_state.pt"
    ]
    assert (checkpoint / "state" / ".metadata").exists()


@pytest.fixture(scope="module")
def two_worker_run(ray_instance, workspace: dict) -> Path:
    """2 DDP workers, rank 1 killed before step 8 on the first attempt (marker file)."""
    marker = workspace["root"] / "killed.marker"
    return _run(
        workspace,
        "two",
        "parallel.num_workers=2",
        "max_steps=15",
        "checkpoint.every=5",
        "faults.kill_at_step=8",
        "faults.kill_rank=1",
        f"faults.marker_file={marker}",
    )


def test_two_workers_survive_a_killed_worker(workspace: dict, two_worker_run: Path) -> None:
    run = two_worker_run
    marker = workspace["root"] / "killed.marker"
    assert marker.read_text() == "killed rank 1 before step 8\n"
    events = [json.loads(line) for line in (run / EVENTS_NAME).read_text().splitlines()]
    # first attempt from scratch, the restarted one from the step-5 checkpoint, then finished
    assert [(e["event"], e["step"]) for e in events] == [("start", 0), ("start", 5), ("end", 15)]
    assert all(e.get("world_size", 2) == 2 for e in events)
    records = read_metrics(run / METRICS_NAME)
    assert [r["step"] for r in records] == list(range(1, 16))
    _assert_losses_fall(records, margin=1.0)
    checkpoint = run / RAY_STORAGE_DIR / RAY_RUN_NAME / "step_00000015"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "COMMITTED",
        "meta.json",
        "rank_00000.pt",
        "rank_00001.pt",
        "state",
        "train_state.pt",
    ]
    # each rank wrote its own part of the sharded state; Ray merged them into one folder
    assert {p.name for p in (checkpoint / "state").iterdir()} >= {".metadata", "__0_0.distcp", "__1_0.distcp"}
    assert (run / "final" / "trainable.safetensors").exists()
    assert (run / "gates.png").exists()


def test_fsdp_with_activation_checkpointing_matches_ddp(ray_instance, workspace: dict, two_worker_run: Path) -> None:
    run = _run(
        workspace,
        "fsdp",
        "parallel.num_workers=2",
        "parallel.strategy=fsdp",
        "parallel.activation_checkpointing=true",
        "max_steps=4",
        "checkpoint.every=4",
    )
    fsdp, ddp = read_metrics(run / METRICS_NAME), read_metrics(two_worker_run / METRICS_NAME)[:4]
    assert [r["step"] for r in fsdp] == [1, 2, 3, 4]
    for a, b in zip(fsdp, ddp):
        for key in ("loss/m3w", "loss/image_text", "loss/video_text", "grad_norm", "gate/1/attn"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    checkpoint = run / RAY_STORAGE_DIR / RAY_RUN_NAME / "step_00000004"
    assert (checkpoint / "COMMITTED").exists() and (checkpoint / "rank_00001.pt").exists()
    assert (run / "final" / "trainable.safetensors").exists()


@pytest.fixture(scope="module")
def s3_endpoint():
    """An S3-protocol server (moto's server mode) on 127.0.0.1 with one bucket, ``runs``."""
    import socket

    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="runs")
    yield endpoint
    server.stop()


def test_run_dir_on_object_storage_survives_a_killed_worker(ray_instance, workspace: dict, s3_endpoint: str,
                                                            tmp_path: Path, monkeypatch) -> None:
    import pyarrow.fs as pafs

    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http",
                           access_key="testing", secret_key="testing", region="us-east-1")
    pafs.copy_files(str(workspace["init"]), f"runs/s3run/{INIT_DIR}", destination_filesystem=s3)  # built once
    monkeypatch.chdir(tmp_path)  # nothing may land in a local folder named after the URI
    marker = tmp_path / "killed.marker"
    train(load_config(None, [
        *workspace["overrides"], "run_dir=s3://runs/s3run", f"storage.endpoint_override={s3_endpoint}",
        f"storage.local_dir={tmp_path / 'scratch'}", "parallel.num_workers=2", "max_steps=4",
        "checkpoint.every=2", "faults.kill_at_step=3", "faults.kill_rank=1", f"faults.marker_file={marker}",
    ]))
    assert marker.read_text() == "killed rank 1 before step 3\n"

    def read(path: str) -> str:
        with s3.open_input_stream(f"runs/s3run/{path}") as handle:
            return handle.read().decode()

    events = [json.loads(line) for line in read(EVENTS_NAME).splitlines()]
    # the restarted attempt resumed from the step-2 checkpoint, read back from object storage
    assert [(e["event"], e["step"]) for e in events] == [("start", 0), ("start", 2), ("end", 4)]
    assert [json.loads(line)["step"] for line in read(METRICS_NAME).splitlines()] == [1, 2, 3, 4]
    checkpoints = f"runs/s3run/{RAY_STORAGE_DIR}/{RAY_RUN_NAME}"
    for step in (2, 4):
        names = {i.base_name for i in s3.get_file_info(pafs.FileSelector(f"{checkpoints}/step_{step:08d}"))}
        assert {"COMMITTED", "meta.json", "rank_00000.pt", "rank_00001.pt", "state", "train_state.pt"} <= names
    final = s3.get_file_info("runs/s3run/final/trainable.safetensors")
    assert final.type == pafs.FileType.File and final.size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.marker", "scratch"]
    # every working copy was removed, but the one of the SIGKILLed worker (it had no chance to)
    assert len(list((tmp_path / "scratch").iterdir())) == 1
