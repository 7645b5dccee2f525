"""crawl/markup.py: the linear pre-parse pass (attribute bound, script and style emptying)."""

from __future__ import annotations

import pytest
from flamboyance.crawl.markup import bound_attributes


@pytest.mark.parametrize("as_bytes", [False, True])
def test_scripts_and_styles_are_emptied_only_when_asked(as_bytes: bool) -> None:
    page = ("<html><head><style>p { color: red }</style><SCRIPT type='x'>var a = '<p>';</SCRIPT >"
            "<script>if (a </scripts> b) {}</script></head><body><p>kept</p></body></html>")
    markup = page.encode() if as_bytes else page
    assert bound_attributes(markup, 10) == (markup, 0)
    emptied, dropped = bound_attributes(markup, 10, empty_scripts=True)
    expected = ("<html><head><style></style><SCRIPT type='x'></SCRIPT ><script></script></head>"
                "<body><p>kept</p></body></html>")
    assert dropped == 0 and emptied == (expected.encode() if as_bytes else expected)


def test_escaped_unterminated_and_quoted_scripts_are_kept() -> None:
    # `<!--` starts the tokenizer's script-data escape states: such a script is left alone.
    escaped = "<script><!-- document.write('<script></script>') --></script><p a=1 b=2 c=3>x</p>"
    assert bound_attributes(escaped, 2, empty_scripts=True) == (
        "<script><!-- document.write('<script></script>') --></script><p a=1 b=2>x</p>", 1)
    # No end tag: the rest of the page is script text, kept (and no tag in it is cut).
    unterminated = "<p>a</p><script>var x = 1; <p a=1 b=2 c=3>"
    assert bound_attributes(unterminated, 2, empty_scripts=True) == (unterminated, 0)
    # A `<script` inside an attribute value or a comment starts nothing.
    quoted = "<a title='<script>'>x</a><!-- <style> --><p>y</p><style>z</style>"
    assert bound_attributes(quoted, 5, empty_scripts=True) == (
        "<a title='<script>'>x</a><!-- <style> --><p>y</p><style></style>", 0)


def test_a_script_start_tag_over_the_bound_is_cut_and_emptied() -> None:
    attrs = " ".join(f"a{i}=1" for i in range(50))
    page = f"<script {attrs}>var x = '<b c=1 d=2>';</script><b c=1 d=2 e=3>t</b>"
    cut, dropped = bound_attributes(page, 3, empty_scripts=True)
    assert cut == "<script a0=1 a1=1 a2=1></script><b c=1 d=2 e=3>t</b>" and dropped == 47
