"""Fuzzing: random bytes, random charset labels and random HTML through `extract_document` (a
document or an `ExtractionError` with a known reason, nothing else), and a small Beam job over a
WARC of random pages in which every page ends as a document, a counted drop or a dead letter."""

from __future__ import annotations

import collections
import datetime
import io
import random

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from flamboyance.crawl import WarcWriter, read_warc
from flamboyance.crawl.warc import build_response_bytes
from flamboyance.pipelines.common import DEAD_LETTER, ReadWarcPages
from flamboyance.pipelines.m3w import OUTCOME, JudgePageFn, judge_page
from flamboyance.preprocess import ExtractConfig, ExtractionError, extract_document
from flamboyance.preprocess.filters import FilterConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipelines_fixtures import make_pipeline, prose, run

URL = "http://fuzz.example/page.html"
# Both sides of the Beam comparison without the time budget, which would make them depend on load.
UNBUDGETED = ExtractConfig(time_budget_s=None)
REASONS = {"empty", "too_large", "unparseable", "too_many_nodes", "time_budget", "no_main_content"}
LABELS = ["utf-8", "latin-1", "cp1252", "koi8-r", "shift_jis", "gb2312", "utf-16", "utf-16le", "utf-32",
          "iso-2022-jp", "base64", "hex", "zlib", "rot13", "bz2", "uu", "undefined", "punycode", "idna",
          "utf-7", "unicode_escape", "x\x00", "", "  ", "utf-8'\"><script>"]
TAGS = ["p", "div", "span", "a", "img", "table", "tr", "td", "ul", "li", "h1", "script", "style", "iframe",
        "figure", "figcaption", "video", "source", "picture", "br", "form", "noscript", "svg", "math", "body",
        "html", "head", "meta", "title", "base", "template", "textarea", "!--", "![CDATA["]
FUZZ = settings(max_examples=80, deadline=datetime.timedelta(seconds=10),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def outcome(html, headers=None) -> str:
    try:
        doc = extract_document(html, URL, headers=headers, config=ExtractConfig(max_bytes=1 << 20))
    except ExtractionError as exc:
        assert exc.reason in REASONS, exc
        return exc.reason
    assert doc.nodes, "a document is never empty"
    return "document"


label = st.sampled_from(LABELS) | st.text(max_size=20)
attribute = st.tuples(st.sampled_from(["src", "href", "class", "id", "charset", "content", "http-equiv",
                                       "srcset", "data-src", "style", "hidden", "lang", "x\x00y", "on\"x"]),
                      st.text(max_size=30) | label)
element = st.builds(
    lambda tag, attrs, text, close: (f"<{tag}" + "".join(f' {k}="{v}"' for k, v in attrs) + ">" + text
                                     + (f"</{tag}>" if close else "")),
    st.sampled_from(TAGS), st.lists(attribute, max_size=4), st.text(max_size=80), st.booleans())
html_text = st.lists(element | st.text(max_size=40), max_size=60).map("".join)


@FUZZ
@given(data=st.binary(max_size=4000), charset=label)
def test_random_bytes_with_random_charsets(data, charset):
    outcome(data, {"Content-Type": f"text/html; charset={charset}"})


@FUZZ
@given(html=html_text, charset=label, encoding=st.sampled_from(["utf-8", "utf-16", "cp1252", "koi8-r"]))
def test_random_html_with_random_declared_charsets(html, charset, encoding):
    page = f'<meta charset="{charset}">' + html
    outcome(page.encode(encoding, "replace"), {"content-type": f"text/html; charset={charset}"})
    outcome(page)


def random_page(rng: random.Random, n: int) -> tuple[bytes, dict[str, str]]:
    """Good articles and hostile pages, mixed."""
    kind = n % 6
    charset = rng.choice(LABELS)
    if kind == 0:
        body = f"<html><body><article><h1>Title {n}</h1><p>{prose(n)}</p><p>{prose(n + 1)}</p></article></body></html>"
        return body.encode(), {"Content-Type": "text/html; charset=utf-8"}
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))), {"Content-Type": f"text/html; charset={charset}"}
    if kind == 2:
        return f'<meta charset="{charset}"><p>{prose(n)}</p>'.encode(), {"Content-Type": "text/html"}
    if kind == 3:
        attrs = " ".join(f"a{i}=x" for i in range(rng.randrange(1000, 5000)))
        return f"<html><body><p {attrs}>{prose(n)}</p></body></html>".encode(), {"Content-Type": "text/html"}
    if kind == 4:
        depth = rng.randrange(200, 3000)
        return ("<div>" * depth + prose(n) + "</div>" * depth).encode(), {"Content-Type": "text/html"}
    return b"", {"Content-Type": "text/html"}


def test_beam_job_over_a_warc_of_random_pages_accounts_for_every_page(tmp_path):
    rng = random.Random(7)
    buffer = io.BytesIO()
    writer = WarcWriter(buffer)
    for n in range(30):
        body, headers = random_page(rng, n)
        response = build_response_bytes(200, "OK", {**headers, "Content-Length": str(len(body))}, body)
        writer.write_exchange(url=f"http://fuzz.example/{n}", request=b"GET / HTTP/1.1\r\n\r\n", response=response,
                              payload=body, date=f"2025-01-01T00:00:{n:02d}Z", response_id=f"<urn:uuid:{n}>")
    path = tmp_path / "random.warc.gz"
    path.write_bytes(buffer.getvalue())

    # The same judgement outside Beam: what every page should end as.
    filters = FilterConfig()
    expected: collections.Counter = collections.Counter()
    pages = list(read_warc(str(path)))
    for page in pages:
        item, _outcome, letter = judge_page(page, extract_config=UNBUDGETED, filters=filters,
                                            counters=collections.Counter())
        expected["document" if item else "dead_letter" if letter else "filtered"] += 1
    assert len(pages) == 30 and expected["document"] + expected["filtered"] >= 5 and expected["dead_letter"] >= 5

    pipeline = make_pipeline()
    judged = (pipeline
              | beam.Create([str(path)])
              | ReadWarcPages(namespace="fuzz")
              | beam.ParDo(JudgePageFn(filter_config=filters, namespace="fuzz", extract_config=UNBUDGETED)).with_outputs(DEAD_LETTER, OUTCOME, main="docs"))
    assert_that(judged.docs | "CountDocs" >> beam.combiners.Count.Globally(), equal_to([expected["document"]]),
                label="Documents")
    assert_that(judged[DEAD_LETTER] | "CountLetters" >> beam.combiners.Count.Globally(),
                equal_to([expected["dead_letter"]]), label="DeadLetters")
    counters = run(pipeline, "fuzz")
    assert counters["warc.pages"] == 30
    extracted = counters.get("extract.documents", 0)
    rejected = sum(v for k, v in counters.items() if k.startswith("extract.") and k != "extract.documents")
    assert extracted + rejected == 30  # every page: a document or a counted extraction reason
    assert rejected == expected["dead_letter"]
    assert extracted == expected["document"] + expected["filtered"]
