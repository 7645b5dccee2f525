"""crawl: getting web pages. An HTTP crawler (robots.txt, politeness, size and SSRF guards)
that writes WARC, readers for WARC archives such as Common Crawl over any fsspec URL, and a
deterministic synthetic sample website for the demo and tests. Knows nothing of tensors."""

from flamboyance.crawl.warc import PageRecord, WarcWriter, read_warc

__all__ = ["PageRecord", "WarcWriter", "read_warc"]
