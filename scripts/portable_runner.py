#!/usr/bin/env python3
"""Run a command on a local Beam portable runner: Beam's own Python job service and an external
SDK worker pool (workers in separate processes: the Fn API contract that Flink, Spark and
Dataflow workers use), both stopped when the command ends, fails or is interrupted.

    scripts/portable_runner.py .venv/bin/flamboyance etl m3w --input 'data/web/*.warc.gz' --output out

runs the command with `--runner=PortableRunner --job_endpoint=127.0.0.1:<port>
--environment_type=EXTERNAL --environment_config=127.0.0.1:<port>` appended. `make m3w
RUNNER=portable` (and the other ETL targets) go through here. The tests import
`portable_services` from this file.

The worker pool starts its SDK workers as `python` from PATH; the interpreter running this
script (the project's virtualenv) is put first on PATH so that they can import the project.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

JOB_SERVICE = "apache_beam.runners.portability.local_job_service_main"
WORKER_POOL = "apache_beam.runners.worker.worker_pool_main"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(process.args[1:3])} exited with {process.returncode} before listening "
                               f"on 127.0.0.1:{port}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{' '.join(process.args[1:3])} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Interrupt a service started in its own process group (the worker pool then stops its SDK
    workers), and kill the group if it has not exited within 10 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stray SDK workers of the pool share its group
    process.wait(timeout=10)


@contextlib.contextmanager
def portable_services(*, python: str = sys.executable, log_dir: str | os.PathLike | None = None,
                      startup_timeout_s: float = 120.0) -> Iterator[list[str]]:
    """Start a job service and a worker pool on 127.0.0.1; yield the Beam options that run a job on
    them; stop both (and the pool's SDK workers) on exit. Their logs go to `log_dir`
    (default: a temporary folder, removed afterwards) as job_service.log and worker_pool.log."""
    with contextlib.ExitStack() as stack:
        logs = Path(log_dir) if log_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])}
        job_port, pool_port = free_port(), free_port()
        started = []
        for module, flag, port, name in ((JOB_SERVICE, "--port", job_port, "job_service"),
                                         (WORKER_POOL, "--service_port", pool_port, "worker_pool")):
            log = logs / f"{name}.log"
            handle = stack.enter_context(open(log, "wb"))
            process = subprocess.Popen([python, "-m", module, flag, str(port)], stdout=handle,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
            stack.callback(_stop, process)
            started.append((port, process, log))
        for port, process, log in started:
            _wait_for_port(port, process, log, timeout_s=startup_timeout_s)
        yield ["--runner=PortableRunner", f"--job_endpoint=127.0.0.1:{job_port}",
               "--environment_type=EXTERNAL", f"--environment_config=127.0.0.1:{pool_port}"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    with portable_services() as beam_args:
        print(f"portable runner: {' '.join(beam_args)}", flush=True)
        # the command runs in our process group: Ctrl-C reaches it, and we stop the services after
        return subprocess.run([*argv, *beam_args]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
