"""URL normalisation and link extraction for the crawler."""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import lxml.etree
import lxml.html
from flamboyance.crawl.markup import bound_attributes

__all__ = ["extract_links", "normalize_url", "origin", "html_charset"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# characters left alone when re-quoting a path or query (RFC 3986 reserved + unreserved + %)
_SAFE_PATH = "/:@!$&'()*+,;=-._~%"
_SAFE_QUERY = _SAFE_PATH + "?"
_MAX_URL_LENGTH = 2048
# Start tags are cut to this many attributes before lxml parses a page (libxml2 is quadratic in
# attributes per element; a link needs two).
_MAX_ATTRIBUTES = 1000


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Absolute, canonical http(s) URL, or None when `url` is not a crawlable http(s) URL.

    Resolves against `base`, lower-cases scheme and host, drops default ports, userinfo and the
    fragment, resolves dot segments, percent-encodes unsafe characters and gives an empty path
    as `/`.
    """
    url = url.strip()
    if base is not None:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path or "/"
    if "/." in path:  # resolve dot segments (urljoin implements RFC 3986 5.2.4)
        path = urlsplit(urljoin("http://h/", path)).path
    path = quote(path, safe=_SAFE_PATH)
    query = quote(parts.query, safe=_SAFE_QUERY)
    normalized = urlunsplit((scheme, netloc, path, query, ""))
    return normalized if len(normalized) <= _MAX_URL_LENGTH else None


def origin(url: str) -> str:
    """`scheme://host[:port]` of a normalised URL (robots.txt scope)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def html_charset(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header, if any."""
    match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    return match.group(1).lower() if match else None


def extract_links(body: bytes, base_url: str, *, charset: str | None = None, limit: int = 1000) -> list[str]:
    """Normalised http(s) links (`<a href>`, `<area href>`) of an HTML page, in page order,
    without duplicates and without `rel="nofollow"` links; honours `<base href>`. At most
    `limit` links."""
    if not body.strip():
        return []
    body, _ = bound_attributes(body, _MAX_ATTRIBUTES)
    try:
        parser = lxml.html.HTMLParser(encoding=charset, huge_tree=True) if charset else lxml.html.HTMLParser(
            huge_tree=True
        )
        root = lxml.html.document_fromstring(body, parser=parser)
    except (lxml.etree.ParserError, ValueError, LookupError):
        try:  # unknown charset name: let lxml sniff
            root = lxml.html.document_fromstring(body, parser=lxml.html.HTMLParser(huge_tree=True))
        except (lxml.etree.ParserError, ValueError):
            return []
    base = base_url
    for element in root.iter("base"):
        href = element.get("href")
        if href:
            base = normalize_url(href, base_url) or base_url
        break
    links: list[str] = []
    seen: set[str] = set()
    for element in root.iter("a", "area"):
        href = element.get("href")
        if not href or "nofollow" in (element.get("rel") or "").lower().split():
            continue
        url = normalize_url(href, base)
        if url is not None and url not in seen:
            seen.add(url)
            links.append(url)
            if len(links) >= limit:
                break
    return links
