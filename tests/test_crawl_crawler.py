"""The crawler against real HTTP servers on 127.0.0.1: robots.txt, redirects, caps, timeouts,
SSRF guard, retries, politeness, link handling and the WARC it writes."""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime
import email.utils
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flamboyance.crawl import USER_AGENT, crawl, extract_links, is_public_address, normalize_url, read_warc
from flamboyance.crawl.crawler import CrawlConfig, _retry_after
from flamboyance.crawl.robots import ROBOTS_MAX_BYTES, RobotsCache, RobotsRules
from hypothesis import given, settings
from hypothesis import strategies as st
from warcio.archiveiterator import ArchiveIterator

FAST = {"delay": 0.0, "backoff_base": 0.01, "allow_private_hosts": True}


def html(*links: str, text: str = "Some words on a test page.") -> bytes:
    anchors = "".join(f'<a href="{href}">link</a>' for href in links)
    return f"<!DOCTYPE html><html><head><title>t</title></head><body><p>{text}</p>{anchors}</body></html>".encode()


Route = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


class Site:
    """Routes of a loopback test server and a record of the requests it got."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[tuple[float, str, str]] = []  # (time, path, user agent)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def hits(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if p == path)

    def paths(self) -> list[str]:
        return [p for _, p, _ in self.requests]


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            with site.lock:
                site.requests.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
            route = site.routes.get(self.path, (404, {"Content-Type": "text/html"}, b"<html>not found</html>"))
            if callable(route):
                route(self)
                return
            status, headers, body = route
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(site: Site) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        site.stop.set()  # releases stalling handlers
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def ok(body: bytes, content_type: str = "text/html; charset=utf-8", **headers: str) -> Route:
    return (200, {"Content-Type": content_type, **headers}, body)


def robots(text: str) -> Route:
    return (200, {"Content-Type": "text/plain"}, text.encode())


def read_warc_all(path: Path, **options) -> list:
    return list(read_warc(str(path), **options))


def read_log(out: Path) -> dict[str, dict]:
    entries = [json.loads(line) for line in (out / "crawl_log.jsonl").read_text().splitlines()]
    return {e["url"]: e for e in entries}


def reasons(out: Path, base: str) -> dict[str, str]:
    return {url.removeprefix(base): e["reason"] for url, e in read_log(out).items()}


def test_robots_wildcards_and_allow_precedence(tmp_path):
    site = Site({
        "/robots.txt": robots("User-agent: *\nDisallow: /private\nDisallow: /*.pdf$\nDisallow: /shop/*/cart\n"
                              "Allow: /private/public-\n\nUser-agent: otherbot\nDisallow: /\n"),
        "/": ok(html("/private/a.html", "/private/public-b.html", "/doc.pdf", "/doc.pdf.html", "/shop/x/cart",
                     "/shop/cart", "/privateer")),
        "/private/public-b.html": ok(html()),
        "/doc.pdf.html": ok(html()),
        "/shop/cart": ok(html()),
    })
    with serve(site) as base:
        result = crawl([base + "/"], out_dir=tmp_path, **FAST)
    assert reasons(tmp_path, base) == {
        "/": "ok",
        "/private/a.html": "robots_disallowed",
        "/private/public-b.html": "ok",  # the longer Allow wins over Disallow: /private
        "/doc.pdf": "robots_disallowed",  # wildcard with $ anchor
        "/doc.pdf.html": "ok",
        "/shop/x/cart": "robots_disallowed",  # wildcard in the middle
        "/shop/cart": "ok",
        "/privateer": "robots_disallowed",  # Disallow is a prefix match
    }
    assert site.hits("/robots.txt") == 1  # cached per host
    assert sorted(set(site.paths()) - {"/robots.txt"}) == ["/", "/doc.pdf.html", "/private/public-b.html", "/shop/cart"]
    assert {ua for _, _, ua in site.requests} == {USER_AGENT}
    assert result.outcomes == collections.Counter({"ok": 4, "robots_disallowed": 4})
    assert (result.pages_fetched, result.pages_stored, result.stopped) == (4, 4, "frontier_empty")


def test_robots_404_allows_all_and_503_disallows_all(tmp_path):
    pages = {"/": ok(html("/a.html")), "/a.html": ok(html())}
    site_404 = Site(pages)  # no robots.txt route: 404
    site_503 = Site({**pages, "/robots.txt": (503, {"Content-Type": "text/plain"}, b"busy")})
    with serve(site_404) as base:
        crawl([base + "/"], out_dir=tmp_path / "a", **FAST)
        assert reasons(tmp_path / "a", base) == {"/": "ok", "/a.html": "ok"}
    with serve(site_503) as base:
        result = crawl([base + "/"], out_dir=tmp_path / "b", **FAST)
        assert reasons(tmp_path / "b", base) == {"/": "robots_unavailable"}
    assert site_503.paths() == ["/robots.txt"]  # nothing else was fetched
    assert result.pages_fetched == 0
    with socket.socket() as probe:  # a port nobody listens on: robots.txt unreachable = disallow
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    crawl([closed + "/"], out_dir=tmp_path / "c", **FAST)
    assert reasons(tmp_path / "c", closed) == {"/": "robots_unavailable"}


def test_redirects_loop_limit_and_schemes(tmp_path):
    def redirect(to: str) -> Route:
        return (302, {"Location": to, "Content-Type": "text/html"}, b"<html>moved</html>")

    routes: dict[str, Route] = {
        "/": ok(html("/loop-a", "/r/0", "/moved", "/to-file", "/to-data", "/self")),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a"),
        "/self": redirect("/self#again"),
        "/moved": (301, {"Location": "/final.html"}, b""),
        "/final.html": ok(html()),
        "/to-file": redirect("file:///etc/passwd"),
        "/to-data": redirect("data:text/html,<h1>hi</h1>"),
    }
    for n in range(10):
        routes[f"/r/{n}"] = redirect(f"/r/{n + 1}")
    site = Site(routes)
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path, **FAST)
    log = read_log(tmp_path)
    assert reasons(tmp_path, base) == {
        "/": "ok",
        "/loop-a": "redirect_loop",
        "/self": "redirect_loop",
        "/r/0": "too_many_redirects",
        "/moved": "ok",
        "/to-file": "unsupported_scheme",
        "/to-data": "unsupported_scheme",
    }
    assert [site.hits(f"/r/{n}") for n in range(8)] == [1, 1, 1, 1, 1, 1, 0, 0]  # 5 redirects followed
    assert log[base + "/moved"]["final_url"] == base + "/final.html"
    assert [h["status"] for h in log[base + "/moved"]["redirects"]] == [301]
    assert site.hits("/final.html") == 1


def test_body_size_cap(tmp_path):
    big = html(text="x" * 50_000)

    def chunked(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for i in range(0, len(big), 4096):
            part = big[i : i + 4096]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        handler.wfile.write(b"0\r\n\r\n")

    site = Site({"/": ok(html("/declared", "/chunked", "/small")), "/declared": ok(big), "/chunked": chunked,
                 "/small": ok(html())})
    with serve(site) as base:
        result = crawl([base + "/"], out_dir=tmp_path, max_body_bytes=20_000, **FAST)
    assert reasons(tmp_path, base) == {"/": "ok", "/declared": "body_too_large", "/chunked": "body_too_large",
                                       "/small": "ok"}
    skipped: collections.Counter = collections.Counter()
    records = list(read_warc(str(result.warc_path), skipped=skipped))
    # the cut chunked body is kept as a record marked WARC-Truncated; the declared one never downloaded
    assert sorted((r.url.removeprefix(base), r.truncated) for r in records) == [
        ("/", False), ("/chunked", True), ("/small", False)]
    assert skipped == collections.Counter({"not_response": 1 + 3})
    assert len(read_warc_all(result.warc_path, skip_truncated=True)) == 2


def test_stalling_server_times_out(tmp_path):
    def stall_headers(handler: BaseHTTPRequestHandler) -> None:
        site.stop.wait(5)  # never answers in time

    def stall_body(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"<html>")
        handler.wfile.flush()
        site.stop.wait(5)

    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(100):  # a byte every 0.1 s: each read is quick, the whole is too slow
            if site.stop.wait(0.1):
                return
            handler.wfile.write(b"x")
            handler.wfile.flush()

    site = Site({"/": ok(html("/stall-headers", "/stall-body", "/drip")), "/stall-headers": stall_headers,
                 "/stall-body": stall_body, "/drip": drip})
    started = time.monotonic()
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path, read_timeout=0.3, total_timeout=1.0, **FAST)
        elapsed = time.monotonic() - started
    assert reasons(tmp_path, base) == {"/": "ok", "/stall-headers": "read_timeout", "/stall-body": "read_timeout",
                                       "/drip": "total_timeout"}
    assert elapsed < 8.0  # without working timeouts the stalls alone take 20 s


def test_private_addresses_refused_by_default_and_allowed_with_flag(tmp_path):
    site = Site({"/": ok(html("/a.html")), "/a.html": ok(html())})
    with serve(site) as base:
        refused = crawl([base + "/"], out_dir=tmp_path / "refused", delay=0.0)
        assert reasons(tmp_path / "refused", base) == {"/": "refused_address"}
        assert site.requests == []  # not even robots.txt was requested
        assert refused.pages_fetched == 0
        crawl([base + "/"], out_dir=tmp_path / "allowed", delay=0.0, allow_private_hosts=True)
        assert reasons(tmp_path / "allowed", base) == {"/": "ok", "/a.html": "ok"}
        localhost = base.replace("127.0.0.1", "localhost")
        crawl([localhost + "/"], out_dir=tmp_path / "name", delay=0.0)
        assert reasons(tmp_path / "name", localhost) == {"/": "refused_address"}  # checked after resolving
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.4", "169.254.169.254", "::1", "fe80::1",
                    "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1", "fc00::1"):
        assert not is_public_address(address), address
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert is_public_address(address), address


def test_every_redirect_hop_is_checked_against_the_connected_address(tmp_path):
    inner = Site({"/secret.html": ok(html(text="internal metadata"))})
    with serve(inner) as inner_base:
        outer = Site({"/": ok(html("/jump")), "/jump": (302, {"Location": inner_base + "/secret.html"}, b"")})
        with serve(outer) as outer_base:
            outer_port = int(outer_base.rsplit(":", 1)[1])
            # Only the outer server's socket counts as "public" here.
            crawl([outer_base + "/"], out_dir=tmp_path, delay=0.0,
                  address_allowed=lambda ip, port: port == outer_port)
            assert reasons(tmp_path, outer_base) == {"/": "ok", "/jump": "refused_address"}
    assert inner.requests == []


def test_retries_only_on_retryable_statuses(tmp_path):
    state = collections.Counter()

    def flaky(handler: BaseHTTPRequestHandler) -> None:
        state["flaky"] += 1
        if state["flaky"] <= 2:
            handler.send_response(503)
            handler.send_header("Retry-After", "0")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = html()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def limited(handler: BaseHTTPRequestHandler) -> None:
        state["limited"] += 1
        status = 429 if state["limited"] == 1 else 200
        body = html()
        handler.send_response(status)
        handler.send_header("Retry-After", "1")
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    site = Site({"/": ok(html("/flaky", "/gone", "/down", "/limited")), "/flaky": flaky,
                 "/down": (500, {"Content-Type": "text/html"}, b"<html>oops</html>"), "/limited": limited})
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path, **FAST)
    log = read_log(tmp_path)
    summary = {u.removeprefix(base): (e["reason"], e["status"], e["attempts"]) for u, e in log.items()}
    assert summary == {
        "/": ("ok", 200, 1),
        "/flaky": ("ok", 200, 3),  # two 503s, then success
        "/gone": ("http_error", 404, 1),  # never retried
        "/down": ("http_error", 500, 4),  # 1 try + 3 retries
        "/limited": ("ok", 200, 2),
    }
    assert (site.hits("/flaky"), site.hits("/gone"), site.hits("/down"), site.hits("/limited")) == (3, 1, 4, 2)
    times = [t for t, p, _ in site.requests if p == "/limited"]
    assert times[1] - times[0] >= 0.95  # Retry-After: 1 honoured


def test_politeness_delay_and_crawl_delay(tmp_path):
    pages = {"/": ok(html("/a", "/b")), "/a": ok(html()), "/b": ok(html())}
    site = Site(pages)
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path / "delay", delay=0.15, allow_private_hosts=True)
    times = [t for t, _, _ in site.requests]
    assert len(times) == 4  # robots.txt + 3 pages
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.14

    site = Site({**pages, "/robots.txt": robots("User-agent: *\nCrawl-delay: 0.3\n")})
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path / "crawl_delay", delay=0.0, allow_private_hosts=True)
    times = [t for t, _, _ in site.requests]
    assert len(times) == 4  # the robots.txt request counts for the delay too
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.29


def test_links_are_normalized_deduped_and_filtered(tmp_path):
    site = Site({
        "/": ok(html("/a", "/a#section", "./a", "/x/../a", "HTTP://127.0.0.1:{port}/a", "mailto:me@example.com",
                     "javascript:void(0)", "ftp://example.com/f", "/image.png", "/b?q=1", "/b?q=1#frag")),
        "/a": ok(html("/")),
        "/b?q=1": ok(html()),
        "/image.png": ok(b"\x89PNG\r\n\x1a\n", "image/png"),
    })
    with serve(site) as base:
        port = base.rsplit(":", 1)[1]
        site.routes["/"] = ok(site.routes["/"][2].replace(b"{port}", port.encode()))
        result = crawl([base + "/"], out_dir=tmp_path, **FAST)
    assert reasons(tmp_path, base) == {"/": "ok", "/a": "ok", "/image.png": "not_html", "/b?q=1": "ok"}
    assert sorted(site.paths()) == ["/", "/a", "/b?q=1", "/image.png", "/robots.txt"]
    records = list(read_warc(str(result.warc_path)))
    assert sorted(r.url.removeprefix(base) for r in records) == ["/", "/a", "/b?q=1"]  # the image is not stored


def test_max_pages_and_same_host(tmp_path):
    other = Site({"/": ok(html())})
    with serve(other) as other_base:
        site = Site({"/": ok(html("/1", "/2", "/3", other_base + "/")), "/1": ok(html()), "/2": ok(html()),
                     "/3": ok(html())})
        with serve(site) as base:
            result = crawl([base + "/"], out_dir=tmp_path / "few", max_pages=2, **FAST)
            assert list(reasons(tmp_path / "few", base)) == ["/", "/1"]
            assert (result.pages_fetched, result.stopped) == (2, "max_pages")
            crawl([base + "/"], out_dir=tmp_path / "same", same_host=True, **FAST)
            # same host name, other port: "same host" is about the host name
            assert set(reasons(tmp_path / "same", base)) == {"/", "/1", "/2", "/3", other_base.removeprefix(base) + "/"}
    with serve(Site({"/": ok(html("http://localhost:1/x"))})) as base:
        crawl([base + "/"], out_dir=tmp_path / "host", same_host=True, **FAST)
        assert reasons(tmp_path / "host", base) == {"/": "ok"}


def test_warc_output_is_standard_and_read_back(tmp_path):
    page = html("/gz", text="The main page of this little site.")
    gz_page = html(text="A gzipped and chunked page.")
    compressed = gzip.compress(gz_page, mtime=0)

    def gz_chunked(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for i in range(0, len(compressed), 10):
            part = compressed[i : i + 10]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        handler.wfile.write(b"0\r\n\r\n")

    site = Site({"/": ok(page), "/gz": gz_chunked})
    with serve(site) as base:
        result = crawl([base + "/"], out_dir=tmp_path, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crawl-00000.warc.gz", "crawl_log.jsonl"]  # no temp files
    records = {r.url: r for r in read_warc(str(result.warc_path))}
    assert records[base + "/"].body == page
    assert records[base + "/gz"].body == gz_page  # de-chunked and gunzipped on read
    assert records[base + "/gz"].headers["content-encoding"] == "gzip"
    log = read_log(tmp_path)
    assert {r.warc_offset for r in records.values()} == {log[u]["warc_offset"] for u in records}

    by_id = {}
    with open(result.warc_path, "rb") as f:
        for record in ArchiveIterator(f):
            headers = record.rec_headers
            raw = record.raw_stream.read()
            by_id[headers.get_header("WARC-Record-ID")] = (record.rec_type, headers, raw, record)
    types = collections.Counter(t for t, *_ in by_id.values())
    assert types == collections.Counter({"warcinfo": 1, "response": 2, "request": 2})
    for rtype, headers, _, _ in by_id.values():
        assert headers.protocol == "WARC/1.1"
        if rtype == "request":
            response = by_id[headers.get_header("WARC-Concurrent-To")]
            assert response[0] == "response"
            assert response[1].get_header("WARC-Target-URI") == headers.get_header("WARC-Target-URI")
        if rtype == "response":
            assert headers.get_header("WARC-IP-Address") == "127.0.0.1"
            assert headers.get_header("WARC-Date").endswith("Z")
    gz_response = next(h for t, h, _, _ in by_id.values() if t == "response" and h.get_header("WARC-Target-URI")
                       == base + "/gz")
    digest = "sha1:" + base64.b32encode(hashlib.sha1(compressed).digest()).decode()
    assert gz_response.get_header("WARC-Payload-Digest") == digest  # over the de-chunked payload


def test_normalize_url_and_extract_links():
    assert normalize_url("HTTP://Example.COM:80/a/./b/../c?x=1#f") == "http://example.com/a/c?x=1"
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("https://example.com:8443/p q") == "https://example.com:8443/p%20q"
    assert normalize_url("/x", "http://h.example/dir/page.html") == "http://h.example/x"
    assert normalize_url("file:///etc/passwd") is None
    assert normalize_url("data:text/html,hi") is None
    assert normalize_url("http://[::1]:8080/") == "http://[::1]:8080/"
    body = (b'<html><head><base href="http://base.example/sub/"></head><body><a href="a">1</a>'
            b'<a href="a#x">dup</a><a rel="nofollow" href="n">n</a><area href="/m"><a href="mailto:x@y">m</a>'
            b"<a>no href</a></body></html>")
    assert extract_links(body, "http://h.example/") == ["http://base.example/sub/a", "http://base.example/m"]
    assert extract_links(b"", "http://h.example/") == []


def test_bad_seeds_are_logged(tmp_path):
    result = crawl(["file:///etc/passwd", "not a url", "data:,x"], out_dir=tmp_path, delay=0.0)
    assert result.outcomes == collections.Counter({"unsupported_scheme": 2, "bad_url": 1})
    with pytest.raises(TypeError, match="no_such_option"):
        crawl([], out_dir=tmp_path, no_such_option=1)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
       st.sampled_from(["http://Example.com", "https://h.example:8443/a/b/", "http://[::1]:8/x?y=1"]))
def test_normalize_url_is_idempotent(path, base):
    url = normalize_url(path, base)
    if url is not None:
        assert url.startswith(("http://", "https://"))
        assert normalize_url(url) == url


def test_crawl_delay_is_capped_and_robots_fetched_once_per_host(tmp_path):
    assert CrawlConfig().max_crawl_delay == 30.0  # the documented cap
    site = Site({"/": ok(html("/a", "/b")), "/a": ok(html()), "/b": ok(html()),
                 "/robots.txt": robots("User-agent: *\nCrawl-delay: 4\n")})
    started = time.monotonic()
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path, delay=0.0, max_crawl_delay=0.25, allow_private_hosts=True)
    assert time.monotonic() - started < 3.0  # 4 s per request asked for, 0.25 s taken
    assert reasons(tmp_path, base) == {"/": "ok", "/a": "ok", "/b": "ok"}
    assert site.paths() == ["/robots.txt", "/", "/a", "/b"]  # robots.txt cached for the host
    gaps = [b - a for (a, _, _), (b, _, _) in zip(site.requests, site.requests[1:])]
    assert min(gaps) >= 0.24 and max(gaps) < 3.0


def test_retry_on_408_with_retry_after_capped_by_max_backoff(tmp_path):
    state = collections.Counter()

    def slow_client(handler: BaseHTTPRequestHandler) -> None:
        state["hits"] += 1
        status, body = (408, b"") if state["hits"] == 1 else (200, html())
        handler.send_response(status)
        handler.send_header("Retry-After", "5")  # more than max_backoff
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    site = Site({"/": ok(html("/t")), "/t": slow_client})
    with serve(site) as base:
        crawl([base + "/"], out_dir=tmp_path, **{**FAST, "max_backoff": 0.3})
    entry = read_log(tmp_path)[base + "/t"]
    assert (entry["reason"], entry["status"], entry["attempts"]) == ("ok", 200, 2)
    times = [t for t, p, _ in site.requests if p == "/t"]
    assert len(times) == 2 and 0.29 <= times[1] - times[0] < 3.0


def test_retry_after_header_forms():
    assert _retry_after(None) is None
    assert _retry_after("") is None
    assert _retry_after("7") == 7.0
    assert _retry_after(" 12 ") == 12.0
    assert _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    future = email.utils.format_datetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=100),
                                         usegmt=True)
    assert 95.0 <= _retry_after(future) <= 100.0


def test_oversize_robots_txt_is_parsed_up_to_500_kib(tmp_path):
    rules = "User-agent: *\nDisallow: /private\n"
    padding = "# " + "x" * 97 + "\n"
    big = (rules + padding * 6000 + "Disallow: /beyond-the-cap\n").encode()  # ~600 KiB
    assert len(big) > ROBOTS_MAX_BYTES
    pages = {"/": ok(html("/private/a", "/beyond-the-cap")), "/beyond-the-cap": ok(html())}
    declared = Site({**pages, "/robots.txt": robots(big.decode())})

    def gz_chunked(handler: BaseHTTPRequestHandler) -> None:  # no Content-Length, gzip-encoded
        data = gzip.compress(big, mtime=0)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))

    compressed = Site({**pages, "/robots.txt": gz_chunked})
    for name, site in (("declared", declared), ("gzip", compressed)):
        with serve(site) as base:
            crawl([base + "/"], out_dir=tmp_path / name, **FAST)
        # the first 500 KiB are obeyed; what lies beyond them is not seen (RFC 9309 section 2.5)
        assert reasons(tmp_path / name, base) == {"/": "ok", "/private/a": "robots_disallowed",
                                                  "/beyond-the-cap": "ok"}, name


def test_robots_cache_ttl_and_size_bound():
    assert CrawlConfig().robots_ttl == 24 * 3600.0
    fetched = []

    def fetch_rules(site: str) -> RobotsRules:
        fetched.append(site)
        return RobotsRules.from_response(404, None)

    cache = RobotsCache(fetch_rules, ttl=0.2, max_entries=2)
    assert cache.get("http://a.example").mode == "allow_all"
    cache.get("http://a.example")
    assert fetched == ["http://a.example"]  # cached
    time.sleep(0.25)
    cache.get("http://a.example")
    assert fetched == ["http://a.example"] * 2  # expired, fetched again
    cache.get("http://b.example")
    cache.get("http://c.example")  # evicts the least recently used origin (a)
    cache.get("http://b.example")
    cache.get("http://a.example")
    assert fetched == ["http://a.example"] * 2 + ["http://b.example", "http://c.example", "http://a.example"]
    assert RobotsRules.from_response(503, b"").mode == "disallow_all"
    assert RobotsRules.from_response(None, None, reason="connect_error").mode == "disallow_all"
    assert RobotsRules.from_response(403, b"").mode == "allow_all"
