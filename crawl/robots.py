"""robots.txt rules per origin (RFC 9309), parsed by protego.

2xx: the rules (first 500 KiB); 4xx (404 and friends) or more than five redirects: allow all;
5xx, network errors and refused addresses: disallow all. Cached per origin with a TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from protego import Protego

__all__ = ["ROBOTS_MAX_BYTES", "RobotsRules", "RobotsCache"]

ROBOTS_MAX_BYTES = 500 << 10


@dataclass(frozen=True)
class RobotsRules:
    """The verdict for one origin: `mode` is "rules", "allow_all" or "disallow_all"."""

    mode: str
    parser: Protego | None = None
    status: int | None = None
    reason: str = ""

    def allowed(self, url: str, user_agent: str) -> bool:
        if self.mode == "allow_all":
            return True
        if self.mode == "disallow_all" or self.parser is None:
            return False
        return self.parser.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(user_agent)
        return float(delay) if delay is not None else None

    @classmethod
    def from_response(cls, status: int | None, body: bytes | None, *, reason: str = "") -> RobotsRules:
        """Rules from a final robots.txt fetch outcome (status None = unreachable)."""
        if status is None or status >= 500:
            return cls("disallow_all", status=status, reason=reason or "robots_unavailable")
        if 200 <= status < 300:
            text = (body or b"")[:ROBOTS_MAX_BYTES].decode("utf-8", "replace")
            return cls("rules", Protego.parse(text), status=status)
        return cls("allow_all", status=status)  # 3xx past the redirect limit, 4xx


class RobotsCache:
    """Rules per origin, fetched on first use through `fetch_rules(origin) -> RobotsRules`,
    kept `ttl` seconds, at most `max_entries` origins (least recently used evicted)."""

    def __init__(self, fetch_rules: Callable[[str], RobotsRules], *, ttl: float = 24 * 3600,
                 max_entries: int = 10_000) -> None:
        self._fetch_rules = fetch_rules
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, RobotsRules]] = OrderedDict()

    def __contains__(self, origin: str) -> bool:
        entry = self._entries.get(origin)
        return entry is not None and time.monotonic() - entry[0] < self._ttl

    def get(self, origin: str) -> RobotsRules:
        if origin in self:
            self._entries.move_to_end(origin)
            return self._entries[origin][1]
        rules = self._fetch_rules(origin)
        self._entries[origin] = (time.monotonic(), rules)
        self._entries.move_to_end(origin)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return rules
