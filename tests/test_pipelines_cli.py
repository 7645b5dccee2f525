"""`flamboyance etl` argument handling: Beam defaults, pass-through options, early input checks."""

from __future__ import annotations

import pytest
from flamboyance.cli import main
from flamboyance.pipelines.cli import beam_args


def test_beam_args_default_to_two_worker_processes_on_the_direct_runner():
    from flamboyance.pipelines.cli import LOCAL_RUNNER
    from flamboyance.pipelines.common import LocalRunner

    args = beam_args([])
    assert "--direct_num_workers=2" in args and "--direct_running_mode=multi_processing" in args
    assert f"--runner={LocalRunner.NAME}" in args and LOCAL_RUNNER == LocalRunner.NAME
    direct = beam_args(["--runner=DirectRunner"])  # Beam's own DirectRunner when named, with our defaults
    assert direct[0] == "--runner=DirectRunner" and "--direct_num_workers=2" in direct
    assert not any(a.startswith("--runner=flamboyance") for a in direct)
    workers = [a for a in beam_args(["--direct_num_workers=4"]) if a.startswith("--direct_num_workers")]
    assert workers == ["--direct_num_workers=4"]
    assert beam_args(["--runner", "DataflowRunner", "--project", "p"]) == ["--runner", "DataflowRunner",
                                                                           "--project", "p"]
    assert beam_args(["--runner=FlinkRunner"]) == ["--runner=FlinkRunner"]


def test_etl_names_an_input_that_matches_nothing(tmp_path):
    with pytest.raises(SystemExit, match=r"etl m3w: no input file matches '.*nothing-\*\.warc\.gz'"):
        main(["etl", "m3w", "--input", str(tmp_path / "nothing-*.warc.gz"), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_limit_heap_growth_sets_glibc_malloc_for_this_process_and_its_workers_keeping_user_values():
    import json
    import os
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = ("import json, os; from flamboyance.pipelines.common import limit_heap_growth;"
            "applied = limit_heap_growth();"
            "print(json.dumps([applied, {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    applied, seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert applied == {"MALLOC_MMAP_THRESHOLD_": 1048576, "MALLOC_ARENA_MAX": 2}
    assert seen == {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_ARENA_MAX": "2"}  # inherited by workers
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "8"},
                         capture_output=True, text=True, check=True)
    applied, seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert applied == {"MALLOC_MMAP_THRESHOLD_": 1048576}
    assert seen == {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_ARENA_MAX": "8"}


def test_local_runner_runs_on_the_direct_runners_engine_without_trying_prism(caplog):
    import logging

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    caplog.set_level(logging.INFO)
    options = PipelineOptions(beam_args(["--direct_num_workers=1", "--direct_running_mode=in_memory"]))
    with beam.Pipeline(options=options) as p:
        assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    assert type(p.runner).__name__ == "LocalRunner"
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]
