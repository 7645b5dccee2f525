"""The synthetic sample web: ground truth, HTTP behaviour, media, text quality, and a full
crawl of it read back from the WARC."""

from __future__ import annotations

import collections
import io
import itertools
import re
import socket
import urllib.error
import urllib.request

import av
import numpy as np
import pytest
from flamboyance.cli import main as cli_main
from flamboyance.crawl import crawl, read_warc
from flamboyance.crawl.sample_media import COLOURS, SHAPES
from flamboyance.crawl.sample_text import distinct_names, is_held_out_name, made_up_name
from flamboyance.crawl.sample_web import SampleWeb, serve_sample_web
from PIL import Image

# A common English stop-word list (NLTK's), to check the prose the way document filters do.
STOP_WORDS = frozenset(
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers "
    "herself it its itself they them their theirs themselves what which who whom this that these those am is "
    "are was were be been being have has had having do does did doing a an the and but if or because as until "
    "while of at by for with about against between into through during before after above below to from up "
    "down in out on off over under again further then once here there when where why how all any both each "
    "few more most other some such no nor not only own same so than too very s t can will just don should now".split()
)


@pytest.fixture(scope="module")
def web() -> SampleWeb:
    return SampleWeb(seed=0, num_pages=300)


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def article_text(page: bytes) -> str:
    match = re.search(rb'<div class="entry-content">(.*?)</div>', page, re.S)
    assert match is not None
    return re.sub(r"<[^>]+>", " ", match.group(1).decode())


def test_truth_describes_the_site(web):
    truth = web.truth()
    assert len(truth.articles) == 300
    assert len(truth.pages) == 1 + 12 + 300 + len(truth.near_duplicates) + len(truth.exact_duplicates) + 5
    assert set(truth.crawlable) | set(truth.disallowed) == set(truth.pages)
    assert truth.disallowed and all(p.startswith("/private/") for p in truth.disallowed)
    assert len(truth.near_duplicates) == 4 and len(truth.exact_duplicates) == 1
    assert truth.logo == "/static/logo.png"
    captions = [img.caption for imgs in truth.images.values() for img in imgs]
    assert len({c.split()[2] for c in captions}) >= 8  # colour words ("a small RED circle ...")
    assert len({c.split()[3] for c in captions}) >= 4  # shape words
    assert all(c.split()[2] in COLOURS and c.split()[3] in SHAPES for c in captions)
    assert len(truth.videos) == 30
    noai_pages = [p for p, imgs in truth.images.items() if any(i.noai for i in imgs)]
    assert 0 < len(noai_pages) < len(truth.articles) / 10  # a few pages opt their images out
    assert set(truth.noai_images) == {u for imgs in truth.images.values() for i in imgs if i.noai for u in i.srcset}
    # image URLs are per page (a duplicate page repeats its original's images), the logo is shared
    owners = collections.defaultdict(set)
    for page, imgs in truth.images.items():
        for img in imgs:
            owners[img.url].add(page.replace("/archive/", "/articles/").replace("/mirror/", "/articles/"))
    assert all(len(pages) == 1 for pages in owners.values())
    assert truth.logo not in owners


def test_server_http_behaviour(web):
    truth = web.truth()
    page_with_noai = next(p for p, imgs in truth.images.items() if imgs[0].noai)
    with serve_sample_web(web) as base:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", base)
        root = base.rstrip("/")
        status, headers, robots = get(root + "/robots.txt")
        assert (status, robots.decode()) == (200, truth.robots_txt)
        assert "Disallow: /private/" in truth.robots_txt
        status, headers, body = get(root + truth.articles[0])
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert int(headers["content-length"]) == len(body)
        for marker in (b'class="cookie-banner', b'class="site-header"', b'class="main-nav', b"<footer",
                       b"<aside", b'class="ad-slot', b'src="/static/logo.png"', b"<figcaption>", b"srcset="):
            assert marker in body, marker
        status, headers, empty = get(root + truth.articles[0], method="HEAD")
        assert (status, empty, int(headers["content-length"])) == (200, b"", len(body))
        assert get(root + "/no/such/page.html")[0] == 404
        assert get(root + "/images/9999-1.png")[0] == 404
        status, headers, logo = get(root + truth.logo)
        assert (status, headers["content-type"]) == (200, "image/png")
        noai_image = truth.images[page_with_noai][0].url
        assert get(root + noai_image)[1]["x-robots-tag"] == "noai"
        plain_image = truth.images[truth.articles[0]][0].url
        assert "x-robots-tag" not in get(root + plain_image)[1]
        port = int(base.rsplit(":", 1)[1].rstrip("/"))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # stopped on exit


def test_images_show_what_captions_say(web):
    truth = web.truth()
    checked = 0
    for page in truth.articles[:12]:
        for img in truth.images[page]:
            _, headers, data = web.response(img.url)
            image = Image.open(io.BytesIO(data))
            image.load()
            assert image.format == ("PNG" if img.url.endswith(".png") else "JPEG")
            assert headers["Content-Type"] == f"image/{image.format.lower()}"
            assert image.size in ((224, 224), (256, 192))
            assert min(image.size) >= 150 and max(image.size) / min(image.size) <= 2
            big = Image.open(io.BytesIO(web.response(img.srcset[1])[2]))
            assert big.size == (image.size[0] * 2, image.size[1] * 2)
            _, size, colour, shape, *_ = img.caption.split()
            pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
            near = np.abs(pixels - np.array(COLOURS[colour])).sum(axis=2) < 60
            assert near.mean() > (0.02 if size == "small" else 0.08), img.caption
            checked += 1
    assert checked >= 12


def test_video_is_an_mp4_of_the_captioned_colour(web):
    truth = web.truth()
    page, (video,) = next(iter(truth.videos.items()))
    _, headers, data = web.response(video.url)
    assert headers["Content-Type"] == "video/mp4"
    colour = video.caption.split()[1]
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert 3 <= duration <= 10
    assert frames[0].shape == (128, 128, 3)
    near = [(np.abs(f.astype(np.int32) - np.array(COLOURS[colour])).sum(axis=2) < 90).mean() for f in frames]
    assert min(near) > 0.02
    # the shape moves
    assert np.abs(frames[0].astype(int) - frames[len(frames) // 2].astype(int)).mean() > 1.0
    assert web.response(video.poster)[1]["Content-Type"] == "image/jpeg"


def test_prose_passes_document_filters_and_pages_are_not_near_duplicates(web):
    truth = web.truth()
    texts = [article_text(web.response(p)[2]) for p in truth.articles[:80]]
    shingles = []
    for text in texts:
        tokens = words(text)
        assert 10 <= len(tokens) <= 2000
        assert sum(t in STOP_WORDS for t in tokens) / len(tokens) >= 0.35
        grams = [tuple(tokens[i : i + 5]) for i in range(len(tokens) - 4)]
        counts = collections.Counter(grams)
        assert sum(c for c in counts.values() if c > 1) / len(grams) <= 0.2  # repeated 5-grams
        shingles.append(set(grams))
    worst = max(len(a & b) / len(a | b) for a, b in itertools.combinations(shingles, 2))
    assert worst < 0.3
    for original, copy in truth.near_duplicates:
        a, b = web.response(original)[2], web.response(copy)[2]
        assert a != b
        sa, sb = (set(zip(*(words(article_text(x))[i:] for i in range(5)))) for x in (a, b))
        assert len(sa & sb) / len(sa | sb) > 0.9
    for original, copy in truth.exact_duplicates:
        assert web.response(original)[2] == web.response(copy)[2]


def test_deterministic_per_seed(tmp_path):
    a, b, c = SampleWeb(seed=3, num_pages=20), SampleWeb(seed=3, num_pages=20), SampleWeb(seed=4, num_pages=20)
    assert a.truth() == b.truth()
    path = a.truth().articles[5]
    assert a.response(path) == b.response(path)
    image = a.truth().images[path][0].url
    assert a.response(image) == b.response(image)
    assert a.truth().articles != c.truth().articles
    a.write_warc(tmp_path / "a.warc.gz")
    b.write_warc(tmp_path / "b.warc.gz")
    assert (tmp_path / "a.warc.gz").read_bytes() == (tmp_path / "b.warc.gz").read_bytes()
    records = list(read_warc(str(tmp_path / "a.warc.gz")))
    assert [r.url for r in records] == sorted(a.truth("http://127.0.0.1:8000").crawlable)
    assert records[3].body == a.response(records[3].url.removeprefix("http://127.0.0.1:8000"))[2]


def test_crawl_finds_exactly_the_allowed_pages(web, tmp_path):
    with serve_sample_web(web) as base:
        result = crawl([base], out_dir=tmp_path, same_host=True, allow_private_hosts=True, delay=0.0)
    truth = web.truth(base)
    skipped = collections.Counter()
    records = list(read_warc(str(result.warc_path), skipped=skipped))
    assert sorted(r.url for r in records) == sorted(truth.crawlable)
    assert not set(r.url for r in records) & set(truth.disallowed)
    assert result.outcomes == collections.Counter({"ok": len(truth.crawlable), "robots_disallowed": len(truth.disallowed)})
    assert skipped == collections.Counter({"not_response": 1 + len(truth.crawlable)})  # warcinfo + requests
    by_url = {r.url: r for r in records}
    for url in truth.crawlable[:20]:
        assert by_url[url].body == web.response(url.removeprefix(base.rstrip("/")))[2]


def test_cli_sample_web_warc_and_crawl(web, tmp_path, capsys):
    assert cli_main(["sample-web", "warc", str(tmp_path / "site.warc.gz"), "--pages", "8"]) == 0
    assert len(list(read_warc(str(tmp_path / "site.warc.gz")))) == len(SampleWeb(num_pages=8).truth().crawlable)
    small = SampleWeb(seed=1, num_pages=10)
    with serve_sample_web(small) as base:
        seeds = tmp_path / "seeds.txt"
        seeds.write_text(f"# seeds\n{base}\n")
        code = cli_main(["crawl", str(seeds), "--out", str(tmp_path / "out"), "--same-host", "--allow-private-hosts",
                         "--delay", "0", "--max-pages", "5"])
    assert code == 0
    assert '"pages_fetched": 5' in capsys.readouterr().out
    assert len(list(read_warc(str(tmp_path / "out" / "crawl-00000.warc.gz")))) == 5


def test_naming_stories_bind_names_per_page(tmp_path):
    web = SampleWeb(seed=0, num_pages=20, num_naming_pages=12)
    truth = web.truth()
    plain = SampleWeb(seed=0, num_pages=20).truth()
    assert len(truth.naming) == 12 and not plain.naming
    assert set(truth.crawlable) - set(plain.crawlable) >= set(truth.naming)  # listed, crawlable pages
    assert all(p.startswith("/stories/") for p in truth.naming)
    object_names = collections.defaultdict(set)
    all_names = set()
    for page, story in truth.naming.items():
        html_text = web.response(page)[2].decode()
        text = article_text(web.response(page)[2])
        counts = collections.Counter(name for _, name in story.images)
        assert 2 <= len(story.names) <= 3 and set(counts) == set(story.names)
        assert min(counts.values()) >= 2 and 8 <= len(story.images) <= 10  # bursty: every object repeats
        assert len({n[0] for n in story.names}) == len(story.names)  # names differ in their first letter
        assert len(set(story.names.values())) == len(story.names)
        assert [i.url for i in truth.images[page]] == [u for u, _ in story.images]
        # each image is followed by the sentence naming its object, and shows that object's colour
        for (url, name), image in zip(story.images, truth.images[page]):
            assert re.search(re.escape(f'src="{url}"') + r"[^>]*></p>\s*<p>This is the " + name + "[,.]", html_text)
            colour, shape = story.names[name].split()
            assert image.caption == f"a large {colour} {shape} on a {image.caption.split()[-2]} background"
            pixels = np.asarray(Image.open(io.BytesIO(web.response(url)[2])).convert("RGB"), dtype=np.int32)
            assert pixels.shape == (160, 160, 3)
            assert (np.abs(pixels - np.array(COLOURS[colour])).sum(axis=2) < 60).mean() > 0.08
        for name, obj in story.names.items():
            object_names[obj].add(name)
            assert not is_held_out_name(name)
        all_names |= set(story.names)
        # the page passes the document filters' statistics
        tokens = words(text)
        assert sum(t in STOP_WORDS for t in tokens) / len(tokens) >= 0.35
        grams = [tuple(tokens[i : i + 5]) for i in range(len(tokens) - 4)]
        assert sum(c for c in collections.Counter(grams).values() if c > 1) / len(grams) <= 0.2
    assert len(all_names) >= 2 * 12  # meanings change from page to page
    assert max(len(v) for v in object_names.values()) >= 2  # an object goes by different names
    web.write_warc(tmp_path / "site.warc.gz")
    assert {r.url for r in read_warc(str(tmp_path / "site.warc.gz"))} >= {"http://127.0.0.1:8000" + p
                                                                          for p in truth.naming}


def test_made_up_names_split_train_and_held_out():
    import random

    rng = random.Random(0)
    train = {made_up_name(rng) for _ in range(300)}
    held = {made_up_name(rng, held_out=True) for _ in range(300)}
    assert not train & held and len(train) > 200 and len(held) > 200
    assert all(is_held_out_name(n) for n in held) and not any(is_held_out_name(n) for n in train)
    names = distinct_names(rng, 3, held_out=True)
    assert len({n[0] for n in names}) == 3 and all(re.fullmatch(r"[a-z]{5,7}", n) for n in names)
    with pytest.raises(ValueError):
        distinct_names(rng, 40)
