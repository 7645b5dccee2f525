"""crawl: getting web pages. An HTTP crawler (robots.txt, politeness, size and SSRF guards)
that writes WARC, readers for WARC archives such as Common Crawl over any fsspec URL, and a
deterministic synthetic sample website for the demo and tests. Knows nothing of tensors."""

from flamboyance.crawl.crawler import CrawlConfig, CrawlResult, crawl
from flamboyance.crawl.fetch import USER_AGENT, FetchConfig, FetchError, fetch, is_public_address
from flamboyance.crawl.urls import extract_links, normalize_url
from flamboyance.crawl.warc import PageRecord, WarcWriter, read_warc

__all__ = [
    "USER_AGENT",
    "CrawlConfig",
    "CrawlResult",
    "FetchConfig",
    "FetchError",
    "PageRecord",
    "WarcWriter",
    "crawl",
    "extract_links",
    "fetch",
    "is_public_address",
    "normalize_url",
    "read_warc",
]
