"""PII redaction for web text: e-mail addresses and public IP addresses.

- E-mail addresses become `[EMAIL]`.
- IPv4 and IPv6 addresses that are globally routable (`ipaddress.ip_address(x).is_global`) become
  `[IP]`. Private, loopback, link-local, unspecified, reserved and documentation ranges
  (10.0.0.0/8, 127.0.0.1, 169.254.x.x, ::1, fe80::/10, 192.0.2.0/24, ...) stay as they are: they
  identify nobody and are often the subject of technical text.
- Candidates that are not valid addresses (times like 12:30:45, versions like 1.2.3.400) stay.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from .document import Document, ImageNode, TextNode, VideoNode

EMAIL_PLACEHOLDER = "[EMAIL]"
IP_PLACEHOLDER = "[IP]"

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)(?![\w])")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)"
)


def _redact_ip(match: re.Match[str]) -> str:
    candidate = match.group(0)
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return candidate
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return IP_PLACEHOLDER if address.is_global else candidate


def redact_pii(text: str) -> str:
    """Replace e-mail addresses with `[EMAIL]` and public IPs with `[IP]` (see module docstring)."""
    text = _EMAIL_RE.sub(EMAIL_PLACEHOLDER, text)
    text = _IPV6_RE.sub(_redact_ip, text)
    return _IPV4_RE.sub(_redact_ip, text)


def redact_document(doc: Document) -> Document:
    """A copy of `doc` with `redact_pii` applied to every text node, image alt/caption and video caption."""
    nodes = []
    for node in doc.nodes:
        if isinstance(node, TextNode):
            node = dataclasses.replace(node, text=redact_pii(node.text))
        elif isinstance(node, ImageNode):
            node = dataclasses.replace(node, alt=redact_pii(node.alt), caption=redact_pii(node.caption))
        elif isinstance(node, VideoNode):
            node = dataclasses.replace(node, caption=redact_pii(node.caption))
        nodes.append(node)
    return Document(url=doc.url, nodes=nodes, title=redact_pii(doc.title), language=doc.language,
                    metadata=dict(doc.metadata), dropped_images=dict(doc.dropped_images))
