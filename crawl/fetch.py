"""One HTTP/1.1 exchange, with the guards a crawler needs.

A small HTTP client of our own (not `requests`): it resolves the host, connects to one
resolved address and checks the address actually connected to (`getpeername`) against the
SSRF policy, applies connect, read and total timeouts, caps the body, and keeps the raw bytes
of the request and of the response as transferred, which is what a WARC record stores.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from flamboyance.crawl.warc import HTML_TYPES, decode_http_body, mime_type, parse_http_head

__all__ = ["USER_AGENT", "FetchConfig", "FetchError", "Response", "fetch", "is_public_address"]

USER_AGENT = "flamboyance/0.1 (+https://github.com/flamboyance)"
_MAX_HEAD_BYTES = 64 << 10
_RECV = 1 << 16


class FetchError(Exception):
    """A fetch that failed; `reason` is a short key for logs and counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_public_address(ip: str) -> bool:
    """True for globally routable unicast addresses; False for loopback, private, link-local
    (169.254.169.254), shared, reserved, multicast and unspecified ones."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, kw_only=True)
class FetchConfig:
    """Limits of one HTTP exchange."""

    connect_timeout: float = 10.0
    """Seconds to establish the TCP (and TLS) connection."""
    read_timeout: float = 30.0
    """Seconds any single read may wait for bytes."""
    total_timeout: float = 60.0
    """Wall-clock seconds for the whole exchange (connect, request, head, body)."""
    max_body_bytes: int = 5 * 2**20
    """Body bytes kept; a longer body is cut there and marked truncated."""
    truncate_over_cap: bool = False
    """A body whose Content-Length exceeds `max_body_bytes` is read up to the cap (marked
    truncated) instead of failing with `body_too_large` (robots.txt: parse its first 500 KiB)."""
    user_agent: str = USER_AGENT
    """User-Agent header (names the project and a contact URL)."""
    allow_private_hosts: bool = False
    """Connect to loopback/private/link-local addresses too (tests, intranet crawls)."""
    address_allowed: Callable[[str, int], bool] | None = None
    """Overrides the address policy: called with the peer (ip, port) actually connected to."""

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FetchConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.max_body_bytes <= 0:
            raise ValueError(f"FetchConfig.max_body_bytes must be > 0, got {self.max_body_bytes}")

    def allows(self, ip: str, port: int) -> bool:
        if self.address_allowed is not None:
            return self.address_allowed(ip, port)
        return self.allow_private_hosts or is_public_address(ip)


@dataclass(kw_only=True)
class Response:
    """The outcome of one exchange. `raw_body` is the body as transferred (maybe chunked or
    gzipped, cut at the cap); `payload` has transfer-encoding removed; `body` is fully
    decoded. Bodies are None when not downloaded (see `fetch(want_body=...)`)."""

    url: str
    status: int
    headers: dict[str, str]
    request: bytes
    raw_head: bytes
    ip: str
    fetch_time: str
    raw_body: bytes | None = None
    payload: bytes | None = None
    body: bytes | None = None
    truncated: str | None = None
    elapsed: float = 0.0

    @property
    def content_type(self) -> str:
        return mime_type(self.headers.get("content-type"))


class _Connection:
    """Socket reads under a read timeout and an overall deadline; remembers raw bytes."""

    def __init__(self, sock: socket.socket, *, read_timeout: float, deadline: float) -> None:
        self.sock = sock
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.buffer = bytearray()
        self.eof = False

    def _recv(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("total_timeout")
        self.sock.settimeout(min(self.read_timeout, remaining))
        try:
            data = self.sock.recv(_RECV)
        except TimeoutError:
            if time.monotonic() >= self.deadline:
                raise FetchError("total_timeout") from None
            raise FetchError("read_timeout") from None
        except OSError as exc:
            raise FetchError("connection_error", str(exc)) from None
        if not data:
            self.eof = True
        self.buffer += data

    def read_until(self, marker: bytes, limit: int) -> bytes:
        while True:
            at = self.buffer.find(marker)
            if at >= 0:
                out = bytes(self.buffer[: at + len(marker)])
                del self.buffer[: at + len(marker)]
                return out
            if len(self.buffer) > limit:
                raise FetchError("bad_response", "header block too large")
            if self.eof:
                raise FetchError("bad_response", "connection closed before the end of the headers")
            self._recv()

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n and not self.eof:
            self._recv()
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def read_to_eof(self, limit: int) -> tuple[bytes, bool]:
        while not self.eof and len(self.buffer) <= limit:
            self._recv()
        cut = len(self.buffer) > limit
        out = bytes(self.buffer[:limit])
        self.buffer.clear()
        return out, cut


def _resolve(host: str, port: int, timeout: float) -> list:
    """getaddrinfo with a timeout (it has none of its own): the lookup runs in a daemon thread
    that is abandoned if it takes too long."""
    outcome: dict = {}

    def lookup() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            outcome["error"] = exc

    try:
        ipaddress.ip_address(host)
        lookup()  # a literal address resolves instantly
    except ValueError:
        thread = threading.Thread(target=lookup, daemon=True, name=f"dns-{host[:40]}")
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise FetchError("dns_timeout", host) from None
    if "error" in outcome:
        raise FetchError("dns_error", f"{host}: {outcome['error']}")
    return outcome["infos"]


def _connect(host: str, port: int, config: FetchConfig, deadline: float) -> tuple[socket.socket, str]:
    infos = _resolve(host, port, max(0.001, min(config.connect_timeout, deadline - time.monotonic())))
    candidates = [info for info in infos if config.allows(info[4][0], port)]
    if not candidates:
        addresses = ", ".join(sorted({info[4][0] for info in infos}))
        raise FetchError("refused_address", f"{host} resolves to {addresses}")
    last_error: FetchError | None = None
    for family, kind, proto, _, sockaddr in candidates:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("total_timeout")
        sock = socket.socket(family, kind, proto)
        sock.settimeout(min(config.connect_timeout, remaining))
        try:
            sock.connect(sockaddr)
        except TimeoutError:
            sock.close()
            last_error = FetchError("connect_timeout", f"{sockaddr[0]}:{port}")
            continue
        except OSError as exc:
            sock.close()
            last_error = FetchError("connect_error", f"{sockaddr[0]}:{port}: {exc}")
            continue
        peer_ip, peer_port = sock.getpeername()[:2]
        # The address actually connected to is what matters (DNS answers can change).
        if not config.allows(peer_ip, peer_port):
            sock.close()
            raise FetchError("refused_address", f"{host} connected to {peer_ip}")
        return sock, peer_ip
    assert last_error is not None
    raise last_error


def _request_bytes(url: str, host_header: str, user_agent: str) -> bytes:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.5\r\n"
        "Accept-Encoding: gzip, deflate\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")


def fetch(url: str, config: FetchConfig, *, want_body: Callable[[int, dict[str, str]], bool] | None = None) -> Response:
    """GET `url` once (no redirects, no retries). `want_body(status, headers)` decides after
    the head whether to download the body (default: HTML and redirects). Raises FetchError."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError("unsupported_scheme", url[:80])
    host = parts.hostname
    if not host:
        raise FetchError("bad_url", url[:200])
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise FetchError("bad_url", url[:200]) from None
    started = time.monotonic()
    deadline = started + config.total_timeout
    fetch_time = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sock, ip = _connect(host, port, config, deadline)
    try:
        if scheme == "https":
            try:
                sock.settimeout(max(0.001, min(config.connect_timeout, deadline - time.monotonic())))
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as exc:
                raise FetchError("tls_error", str(exc)) from None
        host_header = parts.netloc.rsplit("@", 1)[-1]
        request = _request_bytes(url, host_header, config.user_agent)
        try:
            sock.settimeout(max(0.001, min(config.read_timeout, deadline - time.monotonic())))
            sock.sendall(request)
        except TimeoutError:
            raise FetchError("read_timeout", "sending the request") from None
        except OSError as exc:
            raise FetchError("connection_error", str(exc)) from None
        conn = _Connection(sock, read_timeout=config.read_timeout, deadline=deadline)
        while True:  # skip interim 1xx responses
            raw_head = conn.read_until(b"\r\n\r\n", _MAX_HEAD_BYTES)
            try:
                status, headers = parse_http_head(raw_head[:-4])
            except ValueError as exc:
                raise FetchError("bad_response", str(exc)) from None
            if not 100 <= status < 200:
                break
        response = Response(url=url, status=status, headers=headers, request=request, raw_head=raw_head,
                            ip=ip, fetch_time=fetch_time)
        decide = want_body or _default_want_body
        if status in (204, 304) or not decide(status, headers):
            response.elapsed = time.monotonic() - started
            return response
        _read_body(conn, response, config)
        response.elapsed = time.monotonic() - started
        return response
    finally:
        sock.close()


def _default_want_body(status: int, headers: dict[str, str]) -> bool:
    if 300 <= status < 400:
        return True
    content_type = mime_type(headers.get("content-type"))
    return not content_type or content_type in HTML_TYPES


def _read_body(conn: _Connection, response: Response, config: FetchConfig) -> None:
    headers = response.headers
    cap = config.max_body_bytes
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw, payload, cut = _read_chunked(conn, cap)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"].split(",")[0])
        except ValueError:
            raise FetchError("bad_response", f"Content-Length {headers['content-length']!r}") from None
        if length > cap and not config.truncate_over_cap:
            raise FetchError("body_too_large", f"Content-Length {length} > {cap}")
        wanted = min(length, cap)
        raw = conn.read_exact(wanted)
        if len(raw) < wanted:
            raise FetchError("connection_error", f"body ended after {len(raw)} of {length} bytes")
        payload, cut = raw, length > cap
    else:
        raw, cut = conn.read_to_eof(cap)
        payload = raw
    response.raw_body = raw
    response.payload = payload
    if cut:
        response.truncated = "length"
        return
    try:
        response.body = decode_http_body(payload, {"content-encoding": headers.get("content-encoding", "")},
                                         max_bytes=cap)
    except ValueError as exc:
        if str(exc) == "body_too_large":
            response.truncated = "length"
            return
        raise FetchError(str(exc)) from None


def _read_chunked(conn: _Connection, cap: int) -> tuple[bytes, bytes, bool]:
    raw = bytearray()
    payload = bytearray()
    while True:
        line = conn.read_until(b"\n", 1024)
        raw += line
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise FetchError("bad_response", f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            while True:  # trailer fields, then the blank line
                trailer = conn.read_until(b"\n", _MAX_HEAD_BYTES)
                raw += trailer
                if not trailer.strip():
                    return bytes(raw), bytes(payload), False
        if len(payload) + size > cap:
            take = cap - len(payload)
            data = conn.read_exact(take)
            raw += data
            payload += data
            return bytes(raw), bytes(payload), True
        data = conn.read_exact(size)
        if len(data) < size:
            raise FetchError("connection_error", "connection closed inside a chunk")
        raw += data
        payload += data
        raw += conn.read_until(b"\n", 16)
