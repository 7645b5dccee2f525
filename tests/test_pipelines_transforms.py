"""M3W transforms on literal inputs: extraction + filters with dead letters, dedup (exact, near,
same URL, same image set), corpus-wide frequency filters, caption filters, shard assignment."""

from __future__ import annotations

from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from flamboyance.pipelines.common import DEAD_LETTER, num_shards_for, shard_of
from flamboyance.pipelines.config import M3WConfig
from flamboyance.pipelines.m3w import OUTCOME, DeduplicateDocuments, JudgePageFn, PageDocument
from flamboyance.pipelines.pairs import caption_filters, is_heldout, video_source
from flamboyance.preprocess.document import Document, ImageNode, TextNode, VideoNode
from flamboyance.preprocess.filters import FilterConfig
from flamboyance.preprocess.steps import run_filters
from hypothesis import given, settings
from hypothesis import strategies as st
from pipelines_fixtures import article_html, make_pipeline, page, prose, run

FILTERS = FilterConfig()


def test_extract_and_filter_with_dead_letters():
    good = page("http://a.example/good.html",
                article_html("Good", [prose(1), prose(2)], [("/img/one.jpg", "a red circle on white")]))
    no_image = page("http://a.example/text.html", article_html("Text", [prose(3), prose(4)], []), offset=10)
    empty = page("http://a.example/empty.html", b"   ", offset=20)
    p = make_pipeline()
    out = (p | beam.Create([good, no_image, empty])
           | beam.ParDo(JudgePageFn(filter_config=FILTERS)).with_outputs(DEAD_LETTER, OUTCOME, main="docs"))
    kept = out.docs
    assert_that(kept | beam.Map(lambda i: (i.doc.url, [n.url for n in i.doc.images], "extraction_seconds"
                                           in i.doc.metadata)),
                equal_to([("http://a.example/good.html", ["http://a.example/img/one.jpg"], False)]), label="Kept")
    assert_that(out[DEAD_LETTER] | beam.Map(lambda d: (d.stage, d.reason, d.ref)),
                equal_to([("extract", "empty", "test.warc.gz@20 http://a.example/empty.html")]), label="Dead")
    assert_that(out[OUTCOME] | beam.Map(lambda o: (o.url, o.status, o.reason, o.warc_filename, o.warc_offset)),
                equal_to([("http://a.example/text.html", "filtered", "doc_too_few_images", "test.warc.gz", 10),
                          ("http://a.example/empty.html", "failed_to_extract", "empty", "test.warc.gz", 20)]),
                label="Outcomes")
    counters = run(p, "m3w")
    assert counters == {"extract.documents": 2, "extract.empty": 1, "filter.doc_too_few_images": 1,
                        "funnel.pages": 3, "funnel.extracted": 2, "funnel.not_extracted.empty": 1,
                        "funnel.filtered.doc_too_few_images": 1}


def test_any_exception_of_one_page_is_counted_with_its_warc_location(monkeypatch):
    """A page whose extraction raises something other than `ExtractionError` (here a charset
    label that is not a text codec) is a counted, dead-lettered outcome; the next page goes on."""
    from flamboyance.pipelines import m3w

    real = m3w.page_document

    def exploding(page, config):
        if page.url.endswith("bad.html"):
            raise LookupError("'rot13' is not a text encoding")
        return real(page, config)

    monkeypatch.setattr(m3w, "page_document", exploding)
    good = page("http://a.example/good.html",
                article_html("Good", [prose(1), prose(2)], [("/img/one.jpg", "a red circle on white")]))
    bad = page("http://a.example/bad.html", b"<html>x</html>", offset=77)
    p = make_pipeline()
    out = (p | beam.Create([bad, good])
           | beam.ParDo(JudgePageFn(filter_config=FILTERS)).with_outputs(DEAD_LETTER, OUTCOME, main="docs"))
    assert_that(out.docs | beam.Map(lambda i: i.doc.url), equal_to(["http://a.example/good.html"]), label="Kept")
    assert_that(out[DEAD_LETTER] | beam.Map(lambda d: (d.stage, d.reason, d.ref, d.detail)),
                equal_to([("extract", "exception", "test.warc.gz@77 http://a.example/bad.html",
                           "LookupError: 'rot13' is not a text encoding")]), label="Dead")
    assert_that(out[OUTCOME] | beam.Map(lambda o: (o.status, o.reason, o.warc_offset)),
                equal_to([("failed_to_extract", "exception", 77)]), label="Outcome")
    counters = run(p, "m3w")
    assert counters["funnel.not_extracted.exception"] == 1 and counters["funnel.extracted"] == 1


def _item(key: str, url: str, text_seed: int, images: list[str], fetch_time: str, *, edit: str = "") -> PageDocument:
    nodes = [TextNode(text=prose(text_seed, 8) + edit)] + [ImageNode(url=u) for u in images]
    return PageDocument(key=key, fetch_time=fetch_time, doc=Document(url=url, nodes=nodes))


def test_dedup_keeps_newest_capture():
    items = [
        _item("exact_old", "http://a.example/1", 1, ["http://a.example/i1.jpg"], "2024-01-01T00:00:00Z"),
        _item("exact_new", "http://a.example/1-copy", 1, ["http://a.example/i1.jpg"], "2024-03-01T00:00:00Z"),
        _item("near_old", "http://a.example/2", 2, ["http://a.example/i2.jpg"], "2024-01-01T00:00:00Z"),
        _item("near_new", "http://a.example/2-archive", 2, ["http://a.example/i2b.jpg"], "2024-02-01T00:00:00Z",
              edit=" Updated in spring."),
        _item("url_old", "http://a.example/3?utm_source=x", 3, ["http://a.example/i3.jpg"], "2024-01-01T00:00:00Z"),
        _item("url_new", "http://a.example/3", 4, ["http://a.example/i4.jpg"], "2024-05-01T00:00:00.5Z"),
        _item("imgs_old", "http://a.example/5", 5, ["http://a.example/i5.jpg", "http://a.example/i6.jpg"],
              "2024-01-01T00:00:00Z"),
        _item("imgs_new", "http://a.example/6", 6, ["http://a.example/i6.jpg", "http://a.example/i5.jpg"],
              "2024-01-02T00:00:00Z"),
        _item("alone", "http://a.example/7", 7, ["http://a.example/i7.jpg"], "2024-01-01T00:00:00Z"),
    ]
    p = make_pipeline()
    kept = p | beam.Create(items) | DeduplicateDocuments(config=M3WConfig())
    assert_that(kept | beam.Map(lambda i: i.key),
                equal_to(["exact_new", "near_new", "url_new", "imgs_new", "alone"]))
    counters = run(p, "m3w")
    dedup = {"exact": 1, "near_duplicate": 1, "same_url": 1, "same_image_set": 1}
    comparisons = counters.pop("work.near_dedup_comparisons")
    assert counters == {**{f"dedup.{k}": v for k, v in dedup.items()},
                        **{f"funnel.deduplicated.{k}": v for k, v in dedup.items()},
                        "documents.after_dedup": 5, "funnel.to_download": 5}
    # near_old and near_new share a few of the 14 bands (so one representative: one comparison);
    # no other pair shares one
    assert comparisons == 1


def test_corpus_frequency_filter_drops_shared_images_and_domain_boilerplate():
    shared_image = "http://cdn.example/media/shared.jpg"
    boiler = "Subscribe to our weekly letter and read every story from the quiet village of the river today."
    items = []
    for i in range(12):  # 12 documents on a.example share one image (> 10 documents)
        texts = [TextNode(text=prose(100 + i))] + ([TextNode(text=boiler)] if i < 3 else [])
        nodes = [*texts, ImageNode(url=f"http://a.example/own-{i}.jpg"), ImageNode(url=shared_image)]
        items.append(PageDocument(key=f"a{i:02d}", fetch_time="2024-01-01T00:00:00Z",
                                  doc=Document(url=f"http://a.example/{i}", nodes=nodes)))
    for i in range(2):  # the same paragraph on only two documents of b.example is not boilerplate
        nodes = [TextNode(text=prose(200 + i)), TextNode(text=boiler), ImageNode(url=f"http://b.example/{i}.jpg")]
        items.append(PageDocument(key=f"b{i:02d}", fetch_time="2024-01-01T00:00:00Z",
                                  doc=Document(url=f"http://www.b.example/{i}", nodes=nodes)))
    p = make_pipeline()
    kept = p | beam.Create(items) | DeduplicateDocuments(config=M3WConfig())

    def summary(item: PageDocument) -> tuple[str, tuple[str, ...], bool]:
        return item.key, tuple(n.url for n in item.doc.images), any(n.text == boiler for n in item.doc.texts)

    expected = [(f"a{i:02d}", (f"http://a.example/own-{i}.jpg",), False) for i in range(12)]
    expected += [(f"b{i:02d}", (f"http://b.example/{i}.jpg",), True) for i in range(2)]
    assert_that(kept | beam.Map(summary), equal_to(expected))
    counters = run(p, "m3w")
    assert counters == {"frequency.frequent_image_urls": 1, "frequency.boilerplate_paragraphs": 1,
                        "filter.image_frequent_url": 12, "filter.paragraph_boilerplate": 3,
                        "documents.after_dedup": 14, "funnel.to_download": 14}


def test_caption_filters_reasons():
    steps = caption_filters()
    cases = {"a red circle on a white background": None, "IMG_1234.jpg": "caption_boilerplate",
             "https://example.com/a.png": "caption_boilerplate", "photo": "caption_boilerplate",
             "DSC_0042": "caption_boilerplate", "circle": "caption_too_few_words",
             " ".join(["word"] * 65): "caption_too_many_words"}
    assert {c: run_filters(steps, c) for c in cases} == cases


def test_video_source_skips_the_poster():
    node = VideoNode(sources=("http://a/p.jpg", "http://a/v.mp4"), poster="http://a/p.jpg", caption="x")
    assert video_source(node) == "http://a/v.mp4"
    assert video_source(VideoNode(sources=("http://a/v.webm",), poster=None)) == "http://a/v.webm"


def test_shard_assignment_and_split_are_stable_partitions():
    keys = [f"key{i:04d}" for i in range(1000)]
    n = num_shards_for(len(keys), 64)
    assert n == 16
    per_shard = Counter(shard_of(k, n) for k in keys)
    assert sorted(per_shard) == list(range(16)) and sum(per_shard.values()) == 1000
    assert all(30 <= c <= 100 for c in per_shard.values())
    heldout = [k for k in keys if is_heldout(k, 0.1)]
    assert 60 <= len(heldout) <= 140
    assert heldout == [k for k in keys if is_heldout(k, 0.1)]  # pure function of the key
    assert not any(is_heldout(k, 0.0) for k in keys)
    assert M3WConfig().filters == FILTERS


def test_assign_shards_skips_complete_shards_and_refuses_another_plan(tmp_path):
    from flamboyance.pipelines.common import AssignShards
    from flamboyance.shards import write_shard

    keys = [f"k{i:02d}" for i in range(10)]
    output = str(tmp_path / "out")
    done_key = keys[0]
    done = shard_of(done_key, num_shards_for(10, 3))
    # a complete shard from an earlier run: its samples are skipped, the others are assigned
    write_shard(output, kind="image_text", shard_index=done, samples=[])
    p = make_pipeline()
    assigned, pending, _ = (p | beam.Create([(k, k) for k in keys])
                            | AssignShards(output=output, samples_per_shard=3, namespace="t"))
    expected = [(shard_of(k, 4), k) for k in keys if shard_of(k, 4) != done]
    assert_that(assigned, equal_to(expected), label="Assigned")
    assert_that(pending, equal_to([i for i in range(4) if i != done]), label="Pending")
    skipped = 10 - len(expected)
    assert run(p, "t") == {"shard.skipped_samples": skipped, "funnel.already_written": skipped}
    # the same output with another shard size would mix two assignments: refused
    p = make_pipeline()
    _ = p | beam.Create([(k, k) for k in keys]) | AssignShards(output=output, samples_per_shard=5, namespace="t")
    with pytest.raises(Exception, match="another input or shard size"):
        run(p, "t")


@settings(max_examples=60, deadline=None)
@given(keys=st.sets(st.text(alphabet="abcdef0123456789", min_size=1, max_size=12), max_size=200),
       per_shard=st.integers(min_value=1, max_value=50), fraction=st.floats(min_value=0.0, max_value=0.9))
def test_shard_and_split_assignment_cover_every_key_once(keys, per_shard, fraction):
    n = num_shards_for(len(keys), per_shard)
    shards: dict[int, list[str]] = {}
    for key in sorted(keys):
        shards.setdefault(shard_of(key, n), []).append(key)
    assert all(0 <= index < n for index in shards)
    assert sorted(k for members in shards.values() for k in members) == sorted(keys)
    heldout = {k for k in keys if is_heldout(k, fraction)}
    train = {k for k in keys if not is_heldout(k, fraction)}
    assert heldout | train == keys and not heldout & train


def test_connected_components_label_propagation_is_bounded_and_counts_unconverged_nodes():
    from flamboyance.pipelines.m3w import ConnectedComponents

    chain = [((f"n{i}", 0.0), (f"n{i + 1}", 0.0)) for i in range(5)]  # n0 - n1 - ... - n5
    star = [((f"s{i}", 0.0), ("s0", 0.0)) for i in range(1, 4)]
    p = make_pipeline()
    labels = p | beam.Create(chain + star) | ConnectedComponents(rounds=6, namespace="t")
    assert_that(labels | beam.MapTuple(lambda node, label: (node[0], label[0])),
                equal_to([(f"n{i}", "n0") for i in range(6)] + [(f"s{i}", "s0") for i in range(4)]))
    assert "dedup.near_unconverged" not in run(p, "t")
    # two rounds carry n0's label two hops: the rest of the chain is still changing, and counted
    p = make_pipeline()
    labels = p | beam.Create(chain) | ConnectedComponents(rounds=2, namespace="t")
    assert_that(labels | beam.MapTuple(lambda node, label: (node[0], label[0])),
                equal_to([("n0", "n0"), ("n1", "n0"), ("n2", "n0"), ("n3", "n1"), ("n4", "n2"), ("n5", "n3")]))
    assert run(p, "t")["dedup.near_unconverged"] == 4  # n2..n5 took a new label in the last round


def test_near_dedup_of_a_templated_site_is_linear_and_keeps_the_newest():
    """Thirty near-copies of one page: one comparison per member (with its smallest
    representative: the others join through it), one kept (the newest), every other one dropped
    naming it."""
    from flamboyance.pipelines.m3w import DROPPED, Deduplicate, dedup_info

    base = prose(7, 12)
    items = [PageDocument(key=f"k{i:02d}", fetch_time=f"2024-01-{i + 1:02d}T00:00:00Z",
                          doc=Document(url=f"http://t.example/{i}",
                                       nodes=[TextNode(text=f"{base} Page {i}."), ImageNode(url=f"http://t/{i}.jpg")]))
             for i in range(30)]
    config = M3WConfig()
    p = make_pipeline()
    survivors, drops = (p | beam.Create(items)
                        | beam.Map(dedup_info, bands=config.minhash_bands, rows=config.minhash_rows)
                        | Deduplicate(config=config, namespace="m3w"))
    assert_that(survivors | beam.Map(lambda info: info.key), equal_to(["k29"]), label="Kept")
    assert_that(drops | beam.Map(lambda d: (d.kind, d.kept)), equal_to([("near_duplicate", "k29")] * 29),
                label="Dropped")
    counters = run(p, "m3w")
    assert DROPPED == "dropped" and counters["dedup.near_duplicate"] == 29
    assert counters["work.near_dedup_comparisons"] == 29


def test_near_dedup_checks_a_later_representative_only_when_it_could_join_two_components():
    """Literal band buckets and signatures. d's smallest representative a is not its duplicate,
    b is: d is compared with both (2). r is verified against its smallest representative p, and
    so is its other representative q: r - q would join nothing new and is not compared (2, not 3)."""
    from flamboyance.pipelines.m3w_dedup import DedupInfo, NearDedup

    def info(key: str, stamp: float, bands: list[bytes], signature: list[int]) -> DedupInfo:
        return DedupInfo(key=key, stamp=stamp, content_hash=key.encode(), url_key=key.encode(), image_set_key=b"",
                         band_keys=b"".join(band.ljust(8, b"_") for band in bands),
                         signature=np.array(signature, dtype=np.uint16).tobytes())

    same, other = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 60, 70, 80, 90, 100]  # Jaccard 0.5
    infos = [info("a", 1.0, [b"ad", b"a1", b"a2"], other), info("b", 2.0, [b"b0", b"bd", b"b2"], same),
             info("d", 3.0, [b"ad", b"bd", b"d2"], same),
             info("p", 9.0, [b"pr", b"p1", b"pq"], same), info("q", 1.0, [b"q0", b"qr", b"pq"], same),
             info("r", 1.0, [b"pr", b"qr", b"r2"], same)]
    p = make_pipeline()
    survivors, drops = p | beam.Create(infos) | NearDedup(threshold=0.7, rounds=4, namespace="t")
    assert_that(survivors | beam.Map(lambda i: i.key), equal_to(["a", "d", "p"]), label="Kept")
    assert_that(drops | beam.Map(lambda d: (d.key, d.kept)), equal_to([("b", "d"), ("q", "p"), ("r", "p")]),
                label="Dropped")
    assert run(p, "t")["work.near_dedup_comparisons"] == 2 + 2


def test_dead_letters_are_written_in_buckets_of_bounded_size(tmp_path):
    import json

    from flamboyance.pipelines.common import DeadLetter, WriteDeadLetters

    letters = [DeadLetter(stage="image", reason="http_404", ref=f"http://x/{i}") for i in range(5)]
    letters.append(DeadLetter(stage="extract", reason="empty", ref="w@1 http://x/"))
    p = make_pipeline()
    _ = p | beam.Create(letters) | WriteDeadLetters(str(tmp_path), namespace="t", per_file=2)
    run(p, "t")
    root = tmp_path / "dead_letter"
    names = sorted(path.name for path in root.iterdir())
    assert names == ["extract.jsonl", "image-00000-of-00003.jsonl", "image-00001-of-00003.jsonl",
                     "image-00002-of-00003.jsonl"]
    lines = [line for name in names[1:] for line in (root / name).read_text().splitlines()]
    assert sorted(json.loads(line)["ref"] for line in lines) == [f"http://x/{i}" for i in range(5)]
    for name in names:
        text = (root / name).read_text().splitlines()
        assert text == sorted(text)


def test_funnel_checks_each_step_and_names_the_top_drops():
    from flamboyance.pipelines.common import funnel_of, top_drops

    counters = {"funnel.pages": 10, "funnel.not_extracted.empty": 2, "funnel.extracted": 8,
                "funnel.filtered.doc_too_few_images": 5, "funnel.deduplicated.exact": 1, "funnel.to_download": 2,
                "funnel.not_downloaded.too_few_images": 2, "funnel.downloaded": 0}
    funnel = funnel_of(counters)
    assert all(funnel["checks"].values()) and len(funnel["checks"]) == 4
    assert top_drops(funnel, 2) == [("filtered.doc_too_few_images", 5), ("not_downloaded.too_few_images", 2)]
    # a page counted nowhere breaks the first equation; a job without downloads has no download checks
    broken = funnel_of({**counters, "funnel.pages": 11})
    assert broken["checks"]["pages = extracted + not_extracted"] is False
    no_downloads = funnel_of({k: v for k, v in counters.items() if "download" not in k or k == "funnel.to_download"})
    assert list(no_downloads["checks"]) == ["pages = extracted + not_extracted",
                                            "extracted = filtered + deduplicated + failed + to_download"]
    # a job that counts its lineage rows (the pair jobs) checks that every drop has one
    rows_check = "rows = not_extracted + filtered + deduplicated + failed + not_downloaded"
    with_rows = funnel_of({**counters, "funnel.rows": 10})
    assert with_rows["rows"] == 10 and with_rows["checks"][rows_check] and len(with_rows["checks"]) == 5
    assert funnel_of({**counters, "funnel.rows": 9})["checks"][rows_check] is False


def test_page_pairs_survive_a_page_whose_extraction_raises(monkeypatch):
    from flamboyance.pipelines.pairs import _PagePairsFn
    from flamboyance.preprocess import extract

    real = extract.extract_document

    def exploding(body, url, **kwargs):
        if url.endswith("bad.html"):
            raise ValueError("embedded null character in charset label")
        return real(body, url, **kwargs)

    monkeypatch.setattr(extract, "extract_document", exploding)
    good = page("http://a.example/good.html",
                article_html("Good", [prose(1), prose(2)], [("/img/one.jpg", "a red circle on a white background")]))
    bad = page("http://a.example/bad.html", b"<html><p>x</p></html>", offset=42)
    p = make_pipeline()
    out = (p | beam.Create([bad, good])
           | beam.ParDo(_PagePairsFn(namespace="t", kind="image", filters=FILTERS, use_alt_text=True))
           .with_outputs(DEAD_LETTER, main="pairs"))
    assert_that(out.pairs | beam.Map(lambda pair: pair.url), equal_to(["http://a.example/img/one.jpg"]), label="Pairs")
    assert_that(out[DEAD_LETTER] | beam.Map(lambda d: (d.reason, d.ref)),
                equal_to([("exception", "test.warc.gz@42 http://a.example/bad.html")]), label="Dead")
    counters = run(p, "t")
    assert counters["funnel.not_extracted.exception"] == 1 and counters["funnel.pairs"] == 1
