"""Linear, pre-parse bounds on hostile HTML, for every place that hands a page to libxml2 (the
crawler's link extraction, preprocess's extraction).

libxml2 compares each attribute of an element with all earlier ones, so one start tag with 100k
attributes costs minutes; real pages stay under ~50 per element. `bound_attributes` cuts every
start tag to its first `max_attributes` attributes in one regex pass, in C but for the rare tags
over the limit.
"""

from __future__ import annotations

import functools
import re
from typing import TypeVar

__all__ = ["bound_attributes"]

Markup = TypeVar("Markup", str, bytes)

# The HTML tokenizer's whitespace (ASCII only: U+00A0 is part of a name or value there).
_WS = r"\t\n\f\r "
# One attribute as the HTML5 tokenizer reads it, with the separator before it: a name (anything
# up to whitespace, `/`, `>` or `=`; `=` may start it), then `=` and a double-quoted,
# single-quoted or unquoted value. A quoted value starts only right after `=` (and blanks), as
# in the tokenizer, so a `>` inside one does not end the tag.
_ATTRIBUTE_SRC = (rf"""[{_WS}/]*+[^{_WS}/>][^{_WS}/>=]*+"""
                  rf"""(?:[{_WS}]*+=[{_WS}]*+(?:"[^"]*+"?|'[^']*+'?|[^{_WS}>]*+))?+""")
# Elements whose content is text, not markup: a `<p` inside a script string is no tag.
_RAW_TEXT = ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes")


def bound_attributes(html: Markup, max_attributes: int) -> tuple[Markup, int]:
    """`html` (str, or bytes in an ASCII-compatible encoding) with every start tag cut to its
    first `max_attributes` attributes; returns (html, attributes dropped)."""
    long_tags, attribute = _patterns(max_attributes, isinstance(html, bytes))
    cuts: list[tuple[int, int]] = []
    dropped = 0
    for match in long_tags.finditer(html):
        if match.group("attrs") is None:
            continue  # the end of the page
        ends = [m.end() for m in attribute.finditer(match.group("attrs"))]
        keep = ends[max_attributes - 1] if max_attributes else 0
        cuts.append((match.start("attrs") + keep, match.end("attrs")))
        dropped += len(ends) - max_attributes
    if not cuts:
        return html, 0
    parts, last = [], 0
    for start, end in cuts:
        parts.append(html[last:start])
        last = end
    parts.append(html[last:])
    return html[:0].join(parts), dropped


@functools.lru_cache(maxsize=8)
def _patterns(max_attributes: int, for_bytes: bool) -> tuple[re.Pattern, re.Pattern]:
    """(long tags, one attribute). Every match of the first skips ordinary markup and text
    (possessively: no backtracking, so linear) and ends at a start tag with more than
    `max_attributes` attributes (groups `name`, `attrs`) or at the end of the page (`attrs` None)."""
    attrs = f"(?:{_ATTRIBUTE_SRC}){{0,{max_attributes}}}+[{_WS}/]*+"
    skip = (r"(?:[^<]++"
            r"|<!--.*?(?:-->|\Z)"
            r"|<[!?/][^>]*+>?"
            + "".join(rf"|<{raw}(?=[{_WS}/>]){attrs}(?:>(?:[^<]++|<(?!/{raw}[{_WS}/>]))*+|\Z)" for raw in _RAW_TEXT)
            + rf"|<[A-Za-z][^{_WS}/>]*+{attrs}(?:>|\Z)"
            r"|<(?![A-Za-z!?/])"
            r")*+")
    long_tag = rf"<(?P<name>[A-Za-z][^{_WS}/>]*+)(?P<attrs>(?:{_ATTRIBUTE_SRC})*+)"
    sources = (f"{skip}(?:{long_tag}|\\Z)", _ATTRIBUTE_SRC)
    if for_bytes:
        return re.compile(sources[0].encode(), re.I | re.S), re.compile(sources[1].encode())
    return re.compile(sources[0], re.I | re.S), re.compile(sources[1])
