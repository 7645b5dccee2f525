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


def bound_attributes(html: Markup, max_attributes: int, *, empty_scripts: bool = False) -> tuple[Markup, int]:
    """`html` (str, or bytes in an ASCII-compatible encoding) with every start tag cut to its
    first `max_attributes` attributes; returns (html, attributes dropped).

    With `empty_scripts`, the same pass also empties every `<script>` and `<style>` element (their
    raw text, about half of a typical page, is never shown, and the parser would copy it),
    where the tokenizer's end is plain: an end tag is found and the script has no `<!--` (which
    starts the script-data escape states)."""
    for_bytes = isinstance(html, bytes)
    scan, attribute = _patterns(max_attributes, for_bytes, empty_scripts)
    cuts: list[tuple[int, int]] = []
    dropped = 0
    pos, size = 0, len(html)
    while pos <= size:
        match = scan.search(html, pos)
        if match is None or match.group("attrs") is None:
            break  # the end of the page
        pos = match.end()
        attrs = match.group("attrs")
        # Every attribute is at least one character long: a short run cannot hold too many.
        ends = [m.end() for m in attribute.finditer(attrs)] if len(attrs) > max_attributes else []
        if len(ends) > max_attributes:
            keep = ends[max_attributes - 1] if max_attributes else 0
            cuts.append((match.start("attrs") + keep, match.end("attrs")))
            dropped += len(ends) - max_attributes
        name = match.group("name").lower()
        if for_bytes:
            name = name.decode("latin-1")
        if not empty_scripts or name not in _EMPTIED:
            continue
        # A script or style start tag (a long one too): its text runs to its end tag.
        rest = _REST_OF_TAG[for_bytes].match(html, pos)
        if rest is None:
            continue  # a start tag cut off by the end of the page
        plain, escaped = _RAW_TEXT_RUN[for_bytes, name]
        end = plain.match(html, rest.end()).end()
        if html.startswith(_ESCAPE[for_bytes], end):
            end = escaped.match(html, end).end()  # kept as it is
        elif end > rest.end() and end < size:
            cuts.append((rest.end(), end))
        if end == size:
            break  # no end tag: the rest of the page is the element's text
        pos = end
    if not cuts:
        return html, 0
    parts, last = [], 0
    for start, end in cuts:
        parts.append(html[last:start])
        last = end
    parts.append(html[last:])
    return html[:0].join(parts), dropped


# Raw-text elements `empty_scripts` empties, and how their text ends.
_EMPTIED = ("script", "style")
_REST_OF_TAG = {False: re.compile(rf"[{_WS}/]*+>"), True: re.compile(rf"[{_WS}/]*+>".encode())}
# An element's raw text: everything up to its end tag (`</script` then whitespace, `/` or `>`),
# plain (stopping at a `<!--` too) and as a whole.
_RAW_TEXT_RUN = {(for_bytes, name): tuple(re.compile(p.encode() if for_bytes else p) for p in patterns)
                 for for_bytes in (False, True) for name in _EMPTIED
                 for patterns in ((rf"(?:[^<]++|<(?!/(?i:{name})[{_WS}/>]|!--))*+",
                                   rf"(?:[^<]++|<(?!/(?i:{name})[{_WS}/>]))*+"),)}
_ESCAPE = {False: "<!--", True: b"<!--"}


@functools.lru_cache(maxsize=8)
def _patterns(max_attributes: int, for_bytes: bool, empty_scripts: bool = False) -> tuple[re.Pattern, re.Pattern]:
    """(scan, one attribute). Every match of the first skips ordinary markup and text
    (possessively: no backtracking, so linear) and ends at a start tag with more than
    `max_attributes` attributes, or (with `empty_scripts`) at any script or style start tag
    (groups `name`, `attrs`), or at the end of the page (`attrs` None)."""
    attrs = f"(?:{_ATTRIBUTE_SRC}){{0,{max_attributes}}}+[{_WS}/]*+"
    raw_texts = [raw for raw in _RAW_TEXT if not (empty_scripts and raw in _EMPTIED)]
    stop = f"(?!(?:{'|'.join(_EMPTIED)})[{_WS}/>])" if empty_scripts else ""
    skip = (r"(?:[^<]++"
            r"|<!--.*?(?:-->|\Z)"
            r"|<[!?/][^>]*+>?"
            + "".join(rf"|<{raw}(?=[{_WS}/>]){attrs}(?:>(?:[^<]++|<(?!/{raw}[{_WS}/>]))*+|\Z)" for raw in raw_texts)
            + rf"|<{stop}[A-Za-z][^{_WS}/>]*+{attrs}(?:>|\Z)"
            r"|<(?![A-Za-z!?/])"
            r")*+")
    long_tag = rf"<(?P<name>[A-Za-z][^{_WS}/>]*+)(?P<attrs>(?:{_ATTRIBUTE_SRC})*+)"
    sources = (f"{skip}(?:{long_tag}|\\Z)", _ATTRIBUTE_SRC)
    if for_bytes:
        return re.compile(sources[0].encode(), re.I | re.S), re.compile(sources[1].encode())
    return re.compile(sources[0], re.I | re.S), re.compile(sources[1])
