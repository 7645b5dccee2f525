"""Fixtures for the ETL jobs on distributed parts (test_pipelines_portable.py, test_pipelines_s3.py):
a small sample web crawled to WARC and served on 127.0.0.1 while the jobs download its media,
every job run once on the local runner as the reference, Beam's portable-runner services
(scripts/portable_runner.py) and an S3 server (moto's server mode)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from flamboyance.crawl.crawler import crawl
from flamboyance.crawl.sample_web import SampleWeb, serve_sample_web

JOBS = ("m3w", "image-text", "video-text")
NUM_PAGES = 8
"""Sample-web articles: 11 crawled pages, enough for every job to write samples, failures and
near/exact duplicates."""
SHARD_ARGS = ("--samples-per-shard", "3")
"""Several shards per job, so that the shard assignment is compared too."""
REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> Any:
    """Import scripts/<name>.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_etl(job: str, input_glob: str, output: str, *extra: str, env: dict[str, str] | None = None,
            timeout_s: float = 300) -> dict[str, Any]:
    """`flamboyance etl JOB` in a subprocess; returns the run's etl_stats.json (read over fsspec)."""
    cmd = [sys.executable, "-m", "flamboyance", "etl", job, "--input", input_glob, "--output", output,
           "--retries", "0", "--allow-private-hosts", *SHARD_ARGS, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    with fsspec.open(f"{output.rstrip('/')}/etl_stats.json", "rb") as handle:
        return json.loads(handle.read())


def dataset_digests(root: str) -> dict[str, str]:
    """sha256 of every file a job wrote under `root` (any fsspec URL), by relative path: shards,
    parquet, stats, manifests, plan and dead letters; not etl_stats.json (it holds the run's
    duration and output URL) nor the m3w job's `_staging/` intermediates."""
    fs, path = fsspec.core.url_to_fs(root)
    path = path.rstrip("/")
    digests = {}
    for name in sorted(fs.find(path)):
        relative = name[len(path) + 1:]
        if relative == "etl_stats.json" or relative.startswith("_staging/"):
            continue
        digests[relative] = hashlib.sha256(fs.cat_file(name)).hexdigest()
    return digests


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(WARC glob, folder) of the crawled sample web; the web stays served for the jobs' downloads."""
    root = tmp_path_factory.mktemp("remote_etl")
    with serve_sample_web(SampleWeb(seed=0, num_pages=NUM_PAGES)) as base:
        result = crawl([base], out_dir=root / "web", max_pages=200, same_host=True, allow_private_hosts=True,
                       delay=0)
        assert result.pages_stored > NUM_PAGES
        yield str(root / "web" / "*.warc.gz"), root


@pytest.fixture(scope="session")
def local_runs(sample_crawl: tuple[str, Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """job -> (output folder, etl_stats) of each job run on the local runner (the reference)."""
    glob, root = sample_crawl
    runs = {}
    for job in JOBS:
        output = root / "local" / job
        runs[job] = output, run_etl(job, glob, str(output))
        assert runs[job][1]["counters"]["samples.written"] > 0
    return runs
