"""Hostile conditions for the crawler: a full disk, crashed runs, slow and lying servers, SSRF
tricks. Each ends in a clear error, a counted reason, or a clean result; never a traceback, a
hang, or a half-written file."""

from __future__ import annotations

import collections
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from flamboyance.cli import main
from flamboyance.crawl import crawl, extract_links, is_public_address, read_warc
from flamboyance.crawl import crawler as crawler_module
from flamboyance.crawl.markup import bound_attributes
from test_crawl_crawler import FAST, Site, html, ok, read_log, reasons, serve


def many_pages(n: int) -> Site:
    """A site whose index links `n` pages of about 2 KB each."""
    links = [f"/p{i}.html" for i in range(n)]
    routes = {"/": ok(html(*links))}
    routes.update({link: ok(html(text=f"Page {i}: " + "words " * 300)) for i, link in enumerate(links)})
    return Site(routes)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


def check_whole_output(out: Path, result_pages: int) -> None:
    """Every record of the WARC and every log line is whole, and they agree."""
    skipped: collections.Counter = collections.Counter()
    pages = list(read_warc(str(out / "crawl-00000.warc.gz"), skipped=skipped))
    assert len(pages) == result_pages
    assert set(skipped) <= {"not_response"}  # request records and warcinfo only: nothing cut
    log = read_log(out)  # every line parses
    assert sum(1 for e in log.values() if e["reason"] == "ok") == result_pages


def test_full_disk_file_size_limit_stops_the_crawl_with_one_line_and_whole_files(tmp_path):
    # RLIMIT_FSIZE makes every write past 30 KB fail with EFBIG, as a full disk fails with ENOSPC.
    site = many_pages(40)
    out = tmp_path / "out"

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    with serve(site) as base:
        proc = subprocess.run(
            [sys.executable, "-m", "flamboyance", "crawl", base + "/", "--out", str(out), "--delay", "0",
             "--allow-private-hosts"],
            capture_output=True, text=True, timeout=120, preexec_fn=limit,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    [message] = proc.stderr.strip().splitlines()
    assert message.startswith("flamboyance crawl: stopped early, cannot write ")
    assert "File too large" in message
    summary = json.loads(proc.stdout)
    assert summary["stopped"] == "write_error"
    assert 0 < summary["pages_stored"] < 40
    assert leftovers(out) == []
    assert (out / "crawl-00000.warc.gz").stat().st_size <= 30_000
    check_whole_output(out, summary["pages_stored"])


def test_enospc_mid_record_cuts_back_to_the_last_whole_exchange(tmp_path, monkeypatch):
    real_open = open
    budget = {"bytes": 25_000}

    class FullDisk:
        """The WARC file on a disk that fills up: a short write, then ENOSPC."""

        def __init__(self, raw) -> None:
            self.raw = raw

        def write(self, data) -> int:
            if budget["bytes"] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = self.raw.write(bytes(data)[: budget["bytes"]])
            budget["bytes"] -= n
            return n

        def __getattr__(self, name):
            return getattr(self.raw, name)

    def fake_open(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        return FullDisk(f) if str(path).endswith(".tmp") and "warc" in str(path) else f

    monkeypatch.setattr(crawler_module, "open", fake_open, raising=False)
    site = many_pages(30)
    with serve(site) as base:
        result = crawl([base + "/"], out_dir=tmp_path, **FAST)
    assert result.stopped == "write_error"
    assert result.error.endswith("No space left on device")
    assert 0 < result.pages_stored < 30
    assert leftovers(tmp_path) == []
    check_whole_output(tmp_path, result.pages_stored)


def test_temp_files_of_dead_crawls_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live_pid = os.getppid()  # the shell/pytest parent: alive, and not us
    (tmp_path / f".crawl-00000.warc.gz.{dead_pid}.tmp").write_bytes(b"half a record")
    (tmp_path / f".crawl_log.jsonl.{dead_pid}.tmp").write_text('{"url": "cut')
    (tmp_path / f".crawl-00000.warc.gz.{live_pid}.tmp").write_bytes(b"another crawl, still running")
    site = Site({"/": ok(html())})
    with serve(site) as base:
        result = crawl([base + "/"], out_dir=tmp_path, **FAST)
    assert result.stopped == "frontier_empty" and result.pages_stored == 1
    assert leftovers(tmp_path) == [f".crawl-00000.warc.gz.{live_pid}.tmp"]


def test_unwritable_out_dir_is_one_line_and_rc_1(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["crawl", "http://127.0.0.1:9/", "--out", str(blocker / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"flamboyance crawl: cannot write to {blocker / 'out'}: ")


def test_slowloris_headers_and_endless_bodies_hit_the_crawler_timeouts_and_caps(tmp_path):
    def drip_headers(handler) -> None:  # one header byte every 0.1 s, forever
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(200):
            if site.stop.wait(0.1):
                return
            handler.wfile.write(b"X")
            handler.wfile.flush()

    def endless_chunks(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"<p>" + b"z" * 4090 + b"</p>"
        while not site.stop.is_set():
            try:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                return

    def huge_header(handler) -> None:  # a header block that never ends
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (100 << 10))
        handler.wfile.flush()
        site.stop.wait(5)

    def lying_length(handler) -> None:  # says 1000 bytes, sends 10 and closes
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n<p>short")
        handler.close_connection = True

    site = Site({"/": ok(html("/drip", "/endless", "/huge", "/lying")), "/drip": drip_headers,
                 "/endless": endless_chunks, "/huge": huge_header, "/lying": lying_length})
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path, read_timeout=0.5, total_timeout=1.5, max_body_bytes=50_000, **FAST)
        got = reasons(tmp_path, base)
    assert got == {"/": "ok", "/drip": "total_timeout", "/endless": "body_too_large", "/huge": "bad_response",
                   "/lying": "connection_error"}


SSRF_TARGETS = {
    "http://169.254.169.254/latest/meta-data/": "refused_address",  # cloud metadata
    "http://2130706433:{port}/secret": "refused_address",  # 127.0.0.1 as one decimal number
    "http://0x7f000001:{port}/secret": "refused_address",  # ... as hex
    "http://017700000001:{port}/secret": "refused_address",  # ... as octal
    "http://127.1:{port}/secret": "refused_address",  # ... shortened
    "http://[::1]:{port}/secret": "refused_address",
    "http://[::ffff:127.0.0.1]:{port}/secret": "refused_address",  # IPv4-mapped IPv6
    "http://0.0.0.0:{port}/secret": "refused_address",
    "http://localhost:{port}/secret": "refused_address",
    "http://user@127.0.0.1:{port}/secret": "refused_address",  # userinfo is dropped, host checked
    "file:///etc/passwd": "unsupported_scheme",
    "gopher://127.0.0.1:{port}/_": "unsupported_scheme",
}


@pytest.mark.parametrize("target", list(SSRF_TARGETS))
def test_redirect_ssrf_tricks_are_refused(tmp_path, target):
    inner = Site({"/secret": ok(html(text="internal metadata"))})
    with serve(inner) as inner_base:
        port = int(inner_base.rsplit(":", 1)[1])
        outer = Site({"/": ok(html("/jump")), "/jump": (302, {"Location": target.format(port=port)}, b"")})
        with serve(outer) as outer_base:
            outer_port = int(outer_base.rsplit(":", 1)[1])
            # Only the outer test server is let through; every other address meets the real policy.
            crawl([outer_base + "/"], out_dir=tmp_path, delay=0.0,
                  address_allowed=lambda ip, p: p == outer_port or is_public_address(ip))
            assert reasons(tmp_path, outer_base) == {"/": "ok", "/jump": SSRF_TARGETS[target]}
    assert inner.requests == []


def test_attribute_bomb_does_not_stall_link_extraction():
    # libxml2 is quadratic in attributes per element: 30k on one tag took 33 s before the cut.
    attrs = " ".join(f"a{i}=1" for i in range(30_000))
    body = f"<html><body><a href='/first' {attrs} href='/ignored'>x</a><a href='/next'>y</a></body></html>"
    assert extract_links(body.encode(), "http://h.example/") == ["http://h.example/first", "http://h.example/next"]
    cut, dropped = bound_attributes(body.encode(), 1000)
    assert dropped == 29_002 and cut.count(b" a") == 999 and cut.endswith(b"<a href='/next'>y</a></body></html>")
