"""The three jobs on object storage: an S3 server (moto's server mode) on 127.0.0.1, the crawled
WARCs under s3://, input, staging (`_staging/`, `--temp_location`) and output on s3://, read back
over s3:// with `open_dataset` and `flamboyance stats --verify`: the same bytes as the local run.
The endpoint and credentials reach the jobs (and their worker processes) the way users pass
them: the standard AWS variables (`AWS_ENDPOINT_URL_S3`, `AWS_ACCESS_KEY_ID`, ...)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import s3fs
from apache_beam.options.pipeline_options import PipelineOptions
from flamboyance.pipelines.common import check_output_reachable
from flamboyance.shards import open_dataset
from moto.server import ThreadedMotoServer

# a plugin, so that its session fixtures (the crawl, the local reference runs) are shared with the
# other test file; registered for assert rewriting before its import
pytest_plugins = ["etl_remote_fixtures"]
pytest.register_assert_rewrite("etl_remote_fixtures")
from etl_remote_fixtures import JOBS, dataset_digests, load_script, run_etl  # noqa: E402

pytestmark = pytest.mark.slow


BUCKET = "flamboyance-test"


@pytest.fixture(scope="module")
def s3_web(sample_crawl):
    """The crawled WARCs under s3://BUCKET/web/ on a loopback S3 server; yields their glob."""
    glob, root = sample_crawl
    portable = load_script("portable_runner")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=portable.free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
                                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
                patch.setenv(name, value)
            patch.delenv("AWS_PROFILE", raising=False)
            s3fs.S3FileSystem.clear_instance_cache()
            fs = fsspec.filesystem("s3")
            fs.mkdir(BUCKET)
            for warc in sorted(Path(root, "web").glob("*.warc.gz")):
                fs.put_file(str(warc), f"{BUCKET}/web/{warc.name}")
            yield f"s3://{BUCKET}/web/*.warc.gz"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def _raw_samples(root: str) -> list[tuple[str, dict[str, bytes]]]:
    dataset = open_dataset(root, decode=False, shuffle_shards=False, split_by_node=False, split_by_worker=False)
    return [(raw.key, raw.members) for raw in dataset.raw_stream()]


def _dataset_roots(digests: dict[str, str]) -> list[str]:
    """The datasets (folders holding a manifest.json) of a job's output, relative to it."""
    return sorted(name.removesuffix("manifest.json").rstrip("/") for name in digests
                  if name.endswith("manifest.json"))


@pytest.mark.parametrize("job", JOBS)
def test_jobs_on_s3_match_local_run(job, s3_web, local_runs):
    local_output, local_stats = local_runs[job]
    output = f"s3://{BUCKET}/shards/{job}"
    stats = run_etl(job, s3_web, output, f"--temp_location=s3://{BUCKET}/tmp")
    assert stats["counters"] == local_stats["counters"]
    digests = dataset_digests(output)
    assert any(name.endswith(".tar") for name in digests)
    assert digests == dataset_digests(str(local_output))
    if job == "m3w":  # its documents were staged on s3 too
        assert fsspec.filesystem("s3").find(f"{BUCKET}/shards/m3w/_staging")
    roots = _dataset_roots(digests)
    assert roots == (["heldout", "train"] if job == "image-text" else [""])
    for relative in roots:
        remote = f"{output}/{relative}".rstrip("/")
        samples = _raw_samples(remote)
        assert samples == _raw_samples(str(local_output / relative))
        proc = subprocess.run([sys.executable, "-m", "flamboyance", "stats", "--verify", remote],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        tars = sum(name.startswith(f"{relative}/".lstrip("/")) and name.endswith(".tar") for name in digests)
        assert f"verified {tars} shards, {len(samples)} samples: OK" in proc.stdout


def test_m3w_on_portable_runner_and_s3(s3_web, local_runs, tmp_path):
    """Remote storage with workers in other processes: the case a cluster runs."""
    portable = load_script("portable_runner")
    output = f"s3://{BUCKET}/portable/m3w"
    with portable.portable_services(log_dir=tmp_path) as beam_args:  # started with the S3 variables set
        check_output_reachable(output, PipelineOptions(beam_args))
        stats = run_etl("m3w", s3_web, output, *beam_args)
    assert stats["counters"] == local_runs["m3w"][1]["counters"]
    assert dataset_digests(output) == dataset_digests(str(local_runs["m3w"][0]))
