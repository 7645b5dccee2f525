"""The three jobs on a portable runner: Beam's own Python job service and an external SDK worker
pool on 127.0.0.1 (workers in separate processes, through the Fn API as on Flink, Spark or
Dataflow), `--runner=PortableRunner --environment_type=EXTERNAL`: shards byte-identical to the
local run. Also: a local --output with a runner whose workers are elsewhere stops before any work."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from flamboyance.pipelines.common import check_output_reachable

# a plugin, so that its session fixtures (the crawl, the local reference runs) are shared with the
# other test file; registered for assert rewriting before its import
pytest_plugins = ["etl_remote_fixtures"]
pytest.register_assert_rewrite("etl_remote_fixtures")
from etl_remote_fixtures import JOBS, dataset_digests, load_script, run_etl  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def portable_args(tmp_path_factory: pytest.TempPathFactory):
    """Beam options of a running job service + worker pool (stopped after the module)."""
    portable = load_script("portable_runner")
    with portable.portable_services(log_dir=tmp_path_factory.mktemp("portable_logs")) as args:
        yield args


@pytest.mark.parametrize("job", JOBS)
def test_portable_runner_matches_local_run(job, sample_crawl, local_runs, portable_args):
    glob, root = sample_crawl
    local_output, local_stats = local_runs[job]
    output = root / "portable" / job
    stats = run_etl(job, glob, str(output), *portable_args)
    assert stats["counters"] == local_stats["counters"]
    digests = dataset_digests(str(output))
    assert any(name.endswith(".tar") for name in digests)
    assert digests == dataset_digests(str(local_output))


def test_portable_script_stops_its_services():
    """scripts/portable_runner.py runs the command with the runner's options while both services
    listen, and leaves nothing listening once the command has ended."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "portable_runner.py"
    probe = ("import json, socket, sys; a = dict(x.split('=', 1) for x in sys.argv[1:]); "
             "[socket.create_connection(a[k].rsplit(':', 1), 5).close() for k in ('--job_endpoint', "
             "'--environment_config')]; print(json.dumps(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, str(script), sys.executable, "-c", probe], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = json.loads(proc.stdout.strip().splitlines()[-1])
    assert args[0] == "--runner=PortableRunner" and args[2] == "--environment_type=EXTERNAL"
    for option in (args[1], args[3]):
        host, port = option.split("=", 1)[1].rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), 1).close()


REMOTE_RUNNERS = [
    ["--runner=DataflowRunner", "--project=p", "--region=r"],
    ["--runner=FlinkRunner", "--flink_master=flink.example.org:8081", "--environment_type=PROCESS"],
    ["--runner=SparkRunner", "--spark_master_url=spark://10.0.0.5:7077", "--environment_type=DOCKER"],
    ["--runner=PortableRunner", "--job_endpoint=127.0.0.1:8099"],  # Docker workers
    ["--runner=PortableRunner", "--job_endpoint=jobs.example.org:8099", "--environment_type=EXTERNAL",
     "--environment_config=127.0.0.1:50000"],
]
LOCAL_RUNNERS = [
    [],
    ["--runner=DirectRunner"],
    ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL",
     "--environment_config=127.0.0.1:50000"],
    ["--runner=FlinkRunner", "--environment_type=LOOPBACK"],  # embedded Flink ([auto])
    ["--runner=SparkRunner", "--spark_master_url=spark://10.0.0.5:7077", "--environment_type=LOOPBACK"],
]


@pytest.mark.parametrize("args", REMOTE_RUNNERS, ids=lambda a: a[0].split("=")[1] + str(len(a)))
def test_local_output_refused_for_remote_workers(args):
    for output in ("data/shards/m3w", "/abs/out", "file:///abs/out"):
        with pytest.raises(ValueError, match=r"is a local path, .* each worker would write"):
            check_output_reachable(output, PipelineOptions(args))
    check_output_reachable("s3://bucket/shards/m3w", PipelineOptions(args))
    check_output_reachable("gs://bucket/shards/m3w", PipelineOptions(args))


@pytest.mark.parametrize("args", LOCAL_RUNNERS, ids=lambda a: a[0].split("=")[1] if a else "default")
def test_local_output_allowed_for_workers_on_this_machine(args):
    check_output_reachable("data/shards/m3w", PipelineOptions(args))


def test_cli_stops_before_any_work(sample_crawl, tmp_path):
    glob, _ = sample_crawl
    output = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "flamboyance", "etl", "m3w", "--input", glob, "--output",
                           str(output), "--runner=PortableRunner", "--job_endpoint=192.0.2.1:8099",
                           "--environment_type=EXTERNAL", "--environment_config=192.0.2.1:50000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"--output '{output}' is a local path, but PortableRunner runs the job" in proc.stderr
    assert "Traceback" not in proc.stderr  # one clear line, not a stack
    assert not output.exists()  # nothing staged or written, and no job submitted (192.0.2.1 is unroutable)


def _make_dry_run(*args: str) -> list[str]:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["make", "-n", "-o", ".venv/.installed", "-C", str(root), *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if "flamboyance" in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_etl_targets_crawl_first_and_select_the_runner(tmp_path):
    data = tmp_path / "fresh"  # a fresh clone: no crawl yet
    lines = _make_dry_run("etl", f"DATA={data}", "RUNNER=portable")
    assert len(lines) == 4 and f"crawl {data}/seeds.txt --out {data}/web" in lines[0]  # crawled once, first
    for line, job in zip(lines[1:], JOBS):
        assert line.startswith("scripts/with-sample-web.sh .venv/bin/python scripts/portable_runner.py "
                               f".venv/bin/flamboyance etl {job} --input '{data}/web/*.warc.gz'")
        assert "--runner" not in line
    (data / "web").mkdir(parents=True)
    (data / "web" / ".done").touch()  # crawled: not again
    lines = _make_dry_run("m3w", f"DATA={data}", "RUNNER=FlinkRunner")
    assert len(lines) == 1 and "etl m3w" in lines[0] and "--runner FlinkRunner" in lines[0]
    assert "portable_runner" not in lines[0]
    lines = _make_dry_run("video-text", "INPUT=s3://b/web/*.warc.gz", "OUTPUT=s3://b/video")
    assert [line.split() for line in lines] == [
        [".venv/bin/flamboyance", "etl", "video-text", "--input", "'s3://b/web/*.warc.gz'", "--output", "s3://b/video"]]
