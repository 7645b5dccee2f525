"""A polite breadth-first crawler that writes what it fetches as WARC.

One process, one request at a time: the next URL comes from the host that may be contacted
soonest (each host's queue is breadth-first), so there is never more than one connection per
host and every host gets its politeness delay (or its robots.txt Crawl-delay, capped). Only HTML
pages (and the redirects leading to them) are stored; images and videos are left to the
pipelines. Every URL gets one line in `crawl_log.jsonl` with its status or failure reason.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import email.utils
import heapq
import json
import os
import random
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from flamboyance.crawl.fetch import USER_AGENT, FetchConfig, FetchError, Response, fetch
from flamboyance.crawl.robots import ROBOTS_MAX_BYTES, RobotsCache, RobotsRules
from flamboyance.crawl.urls import extract_links, html_charset, normalize_url, origin
from flamboyance.crawl.warc import HTML_TYPES, WarcWriter, sniff_html

__all__ = ["CrawlConfig", "CrawlResult", "crawl", "WARC_NAME", "LOG_NAME"]

WARC_NAME = "crawl-00000.warc.gz"
LOG_NAME = "crawl_log.jsonl"
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})


@dataclass(frozen=True, kw_only=True)
class CrawlConfig:
    """Everything a crawl may do; defaults follow Scrapy/Nutch/Common Crawl practice."""

    max_pages: int = 1000
    """Page fetches (URLs that cost at least one HTTP request, robots.txt not counted)."""
    same_host: bool = False
    """Follow links only to the hosts of the seeds."""
    allow_private_hosts: bool = False
    """Allow loopback/private/link-local targets (off by default: SSRF guard)."""
    delay: float = 1.0
    """Seconds between two requests to the same host (robots Crawl-delay may raise it)."""
    max_crawl_delay: float = 30.0
    """Cap on a robots.txt Crawl-delay."""
    connect_timeout: float = 10.0
    """Seconds to connect."""
    read_timeout: float = 30.0
    """Seconds a single read may stall."""
    total_timeout: float = 60.0
    """Seconds for one HTTP exchange in all."""
    max_body_bytes: int = 5 * 2**20
    """Body cap; a declared longer body is not downloaded, an undeclared one is cut."""
    max_redirects: int = 5
    """Redirects followed per URL."""
    max_retries: int = 3
    """Retries on 408/429/5xx (never on other statuses or network errors)."""
    backoff_base: float = 1.0
    """First retry waits about this many seconds (doubling, with jitter)."""
    max_backoff: float = 60.0
    """Cap on one retry wait, Retry-After included."""
    max_depth: int | None = None
    """Link depth from the seeds (None: unlimited)."""
    max_frontier: int = 100_000
    """URLs ever queued; later links are dropped (counted as `frontier_full`)."""
    max_links_per_page: int = 1000
    """Links taken from one page."""
    robots_ttl: float = 24 * 3600.0
    """Seconds a robots.txt stays cached."""
    user_agent: str = USER_AGENT
    """User-Agent header."""
    robots_agent: str = "flamboyance"
    """Product token matched against robots.txt User-agent lines."""
    seed: int = 0
    """Seeds the retry jitter."""
    address_allowed: Callable[[str, int], bool] | None = None
    """Replaces the address policy (peer ip, port) -> allowed; for tests and special setups."""

    def __post_init__(self) -> None:
        if self.max_pages < 0:
            raise ValueError(f"CrawlConfig.max_pages must be >= 0, got {self.max_pages}")
        if self.delay < 0:
            raise ValueError(f"CrawlConfig.delay must be >= 0, got {self.delay}")
        if not 0 <= self.max_redirects <= 20:
            raise ValueError(f"CrawlConfig.max_redirects must be in 0..20, got {self.max_redirects}")
        if self.max_retries < 0:
            raise ValueError(f"CrawlConfig.max_retries must be >= 0, got {self.max_retries}")

    def fetch_config(self, *, max_body_bytes: int | None = None, truncate_over_cap: bool = False) -> FetchConfig:
        return FetchConfig(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            total_timeout=self.total_timeout,
            max_body_bytes=max_body_bytes or self.max_body_bytes,
            truncate_over_cap=truncate_over_cap,
            user_agent=self.user_agent,
            allow_private_hosts=self.allow_private_hosts,
            address_allowed=self.address_allowed,
        )


@dataclass(frozen=True, kw_only=True)
class CrawlResult:
    """What a crawl did: output paths, counts per log reason, why it stopped."""

    warc_path: Path
    log_path: Path
    pages_fetched: int
    pages_stored: int
    outcomes: collections.Counter
    stopped: str  # "frontier_empty" | "max_pages" | "interrupted" | "write_error"
    error: str | None = None
    """Why writing failed (`stopped == "write_error"`, e.g. a full disk); what was fetched before
    is kept, every record whole."""


class _WholeWrites:
    """An unbuffered output file whose every `write` lands whole or not at all: a failed write
    (ENOSPC, EFBIG, EIO) cuts the file back to the end of the last whole write before raising
    `_WriteFailed`, so a record or log line is never left half-written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self.complete = 0

    def write(self, data: bytes | str) -> int:
        view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
        try:
            while view:
                view = view[self._f.write(view) or 0:]
        except OSError as exc:
            self.cut(self.complete)
            raise _WriteFailed(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.complete = self._f.tell()
        return len(data)

    def tell(self) -> int:
        return self.complete

    def cut(self, offset: int) -> None:
        """Drop everything after `offset` (a whole write's end)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._f.fileno(), offset)
            self._f.seek(offset)
            self.complete = offset

    def close(self) -> None:
        self._f.close()


class _WriteFailed(Exception):
    """Writing the crawl's output failed; the message names the file and the OS error."""


def _remove_stale_temps(out: Path) -> list[Path]:
    """Delete the temporary files (`.crawl-*.tmp`, `.crawl_log*.tmp`) of crawls that died
    without renaming them (killed, machine crashed); files of crawls still running are left."""
    removed = []
    for temp in [*out.glob(f".{WARC_NAME}.*.tmp"), *out.glob(f".{LOG_NAME}.*.tmp")]:
        pid = temp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            removed.append(temp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _robots_body(response: Response) -> bytes | None:
    """The robots.txt bytes to parse. A body over the cap (cut while downloading, or expanding
    past it when decompressed) keeps the start of its decoded text instead of compressed bytes."""
    if response.body is not None or response.payload is None:
        return response.body
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return response.payload
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None  # undecodable: parsed as empty rules (allow all), like a 4xx
    wbits = zlib.MAX_WBITS if encoding == "deflate" else 16 + zlib.MAX_WBITS
    try:
        return zlib.decompressobj(wbits).decompress(response.payload, ROBOTS_MAX_BYTES)
    except zlib.error:
        return None


class _Crawler:
    def __init__(self, config: CrawlConfig, writer: WarcWriter, log, seed_hosts: set[str]) -> None:
        self.cfg = config
        self.writer = writer
        self.log = log
        self.seed_hosts = seed_hosts
        self.fetch_config = config.fetch_config()
        # RFC 9309: a robots.txt over the limit is parsed up to it, not treated as unavailable
        self.robots_fetch_config = config.fetch_config(max_body_bytes=ROBOTS_MAX_BYTES, truncate_over_cap=True)
        self.robots = RobotsCache(self._fetch_robots, ttl=config.robots_ttl)
        self.rng = random.Random(config.seed)
        self.ready: dict[str, float] = {}  # host -> monotonic time it may be contacted again
        self.host_delay: dict[str, float] = {}
        self.last_request: dict[str, float] = {}
        self.queues: dict[str, collections.deque] = {}
        self.heap: list[tuple[float, int, str]] = []
        self.scheduled: set[str] = set()  # hosts that have an entry in the heap
        self.counter = 0
        self.seen: set[str] = set()
        self.queued_total = 0
        self.outcomes: collections.Counter = collections.Counter()
        self.pages_stored = 0
        self.fetched = 0

    # -- politeness ------------------------------------------------------------------------

    def _wait(self, host: str) -> None:
        pause = self.ready.get(host, 0.0) - time.monotonic()
        if pause > 0:
            time.sleep(pause)

    def _done(self, host: str) -> None:
        now = time.monotonic()
        self.last_request[host] = now
        self.ready[host] = now + self.host_delay.get(host, self.cfg.delay)

    # -- robots ------------------------------------------------------------------------------

    def _fetch_robots(self, site: str) -> RobotsRules:
        current = site + "/robots.txt"
        for _ in range(self.cfg.max_redirects + 1):
            host = _host(current)
            self._wait(host)
            try:
                response = fetch(current, self.robots_fetch_config, want_body=lambda status, _: status < 400)
            except FetchError as exc:
                return RobotsRules.from_response(None, None, reason=exc.reason)
            finally:
                self._done(host)
            location = response.headers.get("location")
            if 300 <= response.status < 400 and location:
                target = normalize_url(location, current)
                if target is None:
                    return RobotsRules.from_response(None, None, reason="bad_redirect")
                current = target
                continue
            return RobotsRules.from_response(response.status, _robots_body(response))
        return RobotsRules.from_response(404, None)  # RFC 9309: too many redirects = unavailable

    def _robots_verdict(self, url: str) -> str | None:
        """None when robots.txt lets us fetch `url`, else the log reason."""
        rules = self.robots.get(origin(url))
        delay = rules.crawl_delay(self.cfg.robots_agent)
        host = _host(url)
        if delay is not None and host not in self.host_delay:
            self.host_delay[host] = max(self.cfg.delay, min(delay, self.cfg.max_crawl_delay))
            # the robots.txt request itself already counts for this host's delay
            self.ready[host] = max(self.ready.get(host, 0.0), self.last_request.get(host, 0.0) + self.host_delay[host])
        if rules.allowed(url, self.cfg.robots_agent):
            return None
        if rules.mode == "disallow_all":
            # The host itself was refused (SSRF guard) or robots.txt was 5xx/unreachable.
            return "refused_address" if rules.reason == "refused_address" else "robots_unavailable"
        return "robots_disallowed"

    # -- frontier ----------------------------------------------------------------------------

    def enqueue(self, url: str, depth: int) -> None:
        if url in self.seen:
            return
        if self.cfg.max_depth is not None and depth > self.cfg.max_depth:
            return
        if self.cfg.same_host and _host(url) not in self.seed_hosts:
            return
        if self.queued_total >= self.cfg.max_frontier:
            self.outcomes["frontier_full"] += 1
            return
        self.seen.add(url)
        self.queued_total += 1
        host = _host(url)
        self.queues.setdefault(host, collections.deque()).append((url, depth))
        self._schedule(host)

    def _schedule(self, host: str) -> None:
        if host in self.scheduled:
            return
        self.scheduled.add(host)
        self.counter += 1
        heapq.heappush(self.heap, (self.ready.get(host, 0.0), self.counter, host))

    def run(self) -> str:
        """Crawl until the frontier is empty or `max_pages` pages were fetched."""
        while self.heap:
            if self.fetched >= self.cfg.max_pages:
                return "max_pages"
            when, _, host = heapq.heappop(self.heap)
            self.scheduled.discard(host)
            if self.ready.get(host, 0.0) > when:  # a redirect or retry touched this host meanwhile
                self._schedule(host)
                continue
            url, depth = self.queues[host].popleft()
            if self._process(url, depth):
                self.fetched += 1
            if self.queues[host]:
                self._schedule(host)
        return "frontier_empty"

    # -- one URL -----------------------------------------------------------------------------

    def _fetch_with_retries(self, url: str) -> tuple[Response, int]:
        host = _host(url)
        for attempt in range(self.cfg.max_retries + 1):
            self._wait(host)
            try:
                response = fetch(url, self.fetch_config)
            finally:
                self._done(host)
            if response.status in RETRY_STATUSES and attempt < self.cfg.max_retries:
                backoff = self.cfg.backoff_base * 2**attempt * self.rng.uniform(0.5, 1.5)
                retry_after = _retry_after(response.headers.get("retry-after"))
                pause = min(self.cfg.max_backoff, max(backoff, retry_after or 0.0))
                self.ready[host] = max(self.ready[host], time.monotonic() + pause)
                continue
            return response, attempt + 1
        raise AssertionError("unreachable")

    def _store(self, response: Response) -> int:
        start = self.writer.tell()
        try:
            return self._write_exchange(response)
        except _WriteFailed:
            # A response whose request record failed would be a page the log does not know.
            self.writer._f.cut(start)  # type: ignore[attr-defined]
            raise

    def _write_exchange(self, response: Response) -> int:
        return self.writer.write_exchange(
            url=response.url,
            request=response.request,
            response=response.raw_head + (response.raw_body or b""),
            payload=response.payload,
            ip_address=response.ip,
            date=response.fetch_time,
            truncated=response.truncated,
        )

    def _process(self, url: str, depth: int) -> bool:
        """Fetch one URL (following redirects); log it; returns whether a page was requested."""
        entry: dict[str, Any] = {"url": url, "depth": depth, "status": None, "reason": None, "redirects": [],
                                 "attempts": 0}
        chain = [url]
        current = url
        requested = False
        response: Response | None = None
        for hop in range(self.cfg.max_redirects + 1):
            verdict = self._robots_verdict(current)
            if verdict is not None:
                return self._finish(entry, current, verdict, requested)
            try:
                response, attempts = self._fetch_with_retries(current)
            except FetchError as exc:
                entry["detail"] = exc.detail
                return self._finish(entry, current, exc.reason, True)
            requested = True
            entry["attempts"] += attempts
            location = response.headers.get("location")
            if not (300 <= response.status < 400 and location):
                break
            entry["redirects"].append({"url": current, "status": response.status,
                                       "warc_offset": self._store(response)})
            target = normalize_url(location, current)
            if target is None:
                scheme = urlsplit(urljoin(current, location.strip())).scheme.lower()
                reason = "unsupported_scheme" if scheme not in ("http", "https") else "bad_redirect"
                entry["detail"] = location[:200]
                return self._finish(entry, current, reason, True, response)
            if target in chain:
                return self._finish(entry, target, "redirect_loop", True, response)
            if hop == self.cfg.max_redirects:
                return self._finish(entry, target, "too_many_redirects", True, response)
            if self.cfg.same_host and _host(target) not in self.seed_hosts:
                return self._finish(entry, target, "off_host_redirect", True, response)
            if target in self.seen:
                return self._finish(entry, target, "redirect_to_seen", True, response)
            self.seen.add(target)
            chain.append(target)
            current = target
        assert response is not None
        content_type = response.content_type
        if response.raw_body is None:  # not downloaded: not HTML
            reason = "not_html" if 200 <= response.status < 300 else "http_error"
            return self._finish(entry, current, reason, True, response)
        body = response.body
        if not content_type and body is not None:
            content_type = "text/html" if sniff_html(body) else ""
        if content_type not in HTML_TYPES and response.truncated is None:
            reason = "not_html" if 200 <= response.status < 300 else "http_error"
            return self._finish(entry, current, reason, True, response)
        entry["warc_offset"] = self._store(response)
        if response.truncated:
            return self._finish(entry, current, "body_too_large", True, response)
        if not 200 <= response.status < 300:
            return self._finish(entry, current, "http_error", True, response)
        self.pages_stored += 1
        links = extract_links(body or b"", current, charset=html_charset(response.headers.get("content-type")),
                              limit=self.cfg.max_links_per_page)
        entry["links"] = len(links)
        for link in links:
            self.enqueue(link, depth + 1)
        return self._finish(entry, current, "ok", True, response)

    def _finish(self, entry: dict, final_url: str, reason: str, requested: bool,
                response: Response | None = None) -> bool:
        entry["final_url"] = final_url
        entry["reason"] = reason
        if response is not None:
            entry.update(
                status=response.status,
                content_type=response.content_type,
                bytes=len(response.body) if response.body is not None else None,
                ip=response.ip,
                fetch_time=response.fetch_time,
                elapsed=round(response.elapsed, 4),
            )
        self.outcomes[reason] += 1
        self.log.write(json.dumps(entry, sort_keys=True) + "\n")
        return requested


def crawl(
    seeds: Iterable[str],
    *,
    out_dir: str | os.PathLike,
    max_pages: int | None = None,
    same_host: bool | None = None,
    allow_private_hosts: bool | None = None,
    config: CrawlConfig | None = None,
    **options: Any,
) -> CrawlResult:
    """Crawl breadth-first from `seeds`; write `out_dir/crawl-00000.warc.gz` (request and
    response records, gzip member per record) and `out_dir/crawl_log.jsonl` (one line per URL).

    Settings come from `config` (default `CrawlConfig()`), overridden by the keyword arguments
    (`max_pages`, `same_host`, `allow_private_hosts` and any other `CrawlConfig` field, e.g.
    `delay=0.01`). Both files are written under temporary names and renamed at the end, so a
    half-written file never sits under its final name; temporary files of crawls that died are
    removed first. Ctrl-C stops the crawl and keeps what was fetched; so does a failed write (a
    full disk: `stopped="write_error"`, `error` says why), cutting both files back to their last
    whole record. Raises `OSError` (no temporary file left) when `out_dir` cannot be written at all.
    """
    overrides = {k: v for k, v in {"max_pages": max_pages, "same_host": same_host,
                                   "allow_private_hosts": allow_private_hosts}.items() if v is not None}
    unknown = set(options) - {f.name for f in dataclasses.fields(CrawlConfig)}
    if unknown:
        raise TypeError(f"crawl() got unknown options {sorted(unknown)}; see CrawlConfig")
    cfg = dataclasses.replace(config or CrawlConfig(), **overrides, **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    warc_path, log_path = out / WARC_NAME, out / LOG_NAME
    warc_temp = out / f".{WARC_NAME}.{os.getpid()}.tmp"
    log_temp = out / f".{LOG_NAME}.{os.getpid()}.tmp"
    seeds = list(seeds)
    normalized = [(seed, normalize_url(seed)) for seed in seeds]
    seed_hosts = {_host(url) for _, url in normalized if url}
    _remove_stale_temps(out)
    files: list[_WholeWrites] = []
    try:
        warc_file = _WholeWrites(warc_temp)
        files.append(warc_file)
        log = _WholeWrites(log_temp)
        files.append(log)
        writer = WarcWriter(warc_file)  # type: ignore[arg-type]
        crawler = _Crawler(cfg, writer, log, seed_hosts)
        error = None
        try:
            writer.write_warcinfo({
                "format": "WARC File Format 1.1",
                "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/",
                "robots": "obey",
                "http-header-user-agent": cfg.user_agent,
            })
            for raw, url in normalized:
                if url is None:
                    scheme = urlsplit(raw.strip()).scheme.lower()
                    reason = "unsupported_scheme" if scheme and scheme not in ("http", "https") else "bad_url"
                    crawler.outcomes[reason] += 1
                    log.write(json.dumps({"url": raw, "depth": 0, "status": None, "reason": reason}) + "\n")
                    continue
                crawler.enqueue(url, 0)
            stopped = crawler.run()
        except KeyboardInterrupt:
            stopped = "interrupted"
        except _WriteFailed as exc:
            stopped, error = "write_error", str(exc)
        for f in files:
            f.close()
        os.replace(warc_temp, warc_path)
        os.replace(log_temp, log_path)
    except OSError:
        for f in files:
            with contextlib.suppress(OSError):
                f.close()
        for temp in (warc_temp, log_temp):
            with contextlib.suppress(OSError):
                temp.unlink()
        raise
    return CrawlResult(warc_path=warc_path, log_path=log_path, pages_fetched=crawler.fetched,
                       pages_stored=crawler.pages_stored, outcomes=crawler.outcomes, stopped=stopped,
                       error=error)
