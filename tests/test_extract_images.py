"""Image and video nodes: lazy attributes, srcset, <picture>, <base href>, figures, noscript, video."""

from __future__ import annotations

from flamboyance.preprocess import extract_document
from flamboyance.preprocess.document import ImageNode, TextNode, VideoNode
from flamboyance.preprocess.extract import _largest

PAGE_URL = "https://news.example.com/2026/story/index.html"
PIXEL = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="
TEXT = ("A paragraph of real article text, with commas, clauses, and enough words to be scored as the main "
        "content of this page.")


def images(body: str, head: str = "") -> list[ImageNode]:
    html = f"<html><head><title>T</title>{head}</head><body><article><p>{TEXT}</p>{body}<p>{TEXT}</p></article></body></html>"
    return extract_document(html, PAGE_URL).images


def test_plain_img_resolved_against_page_url_with_declared_size():
    assert images('<img src="../pics/a.jpg" alt=" A  cat " width="640px" height="480">') == [
        ImageNode(url="https://news.example.com/2026/pics/a.jpg", alt="A cat", width=640, height=480)]


def test_lazy_attributes_replace_placeholders():
    body = (f'<img src="{PIXEL}" data-src="/lazy/1.jpg">'
            '<img data-original="/lazy/2.jpg">'
            '<img src="/static/blank.gif" data-lazy-src="/lazy/3.jpg">'
            '<img class="lazyload" src="/thumbs/4-small.jpg" data-src="/lazy/4.jpg">'
            '<img src="/keep/5.jpg" data-src="/not-used/5.jpg">'
            '<img src="/keep/6.jpg" data-hi-res-src="/big/6.jpg">')
    assert [i.url for i in images(body)] == [
        "https://news.example.com/lazy/1.jpg", "https://news.example.com/lazy/2.jpg",
        "https://news.example.com/lazy/3.jpg", "https://news.example.com/lazy/4.jpg",
        "https://news.example.com/keep/5.jpg", "https://news.example.com/big/6.jpg"]


def test_unknown_lazy_attribute_holding_an_image_url():
    assert [i.url for i in images(f'<img src="{PIXEL}" data-foo-bar="/x/7.png">')] == [
        "https://news.example.com/x/7.png"]


def test_srcset_takes_the_largest_candidate():
    body = ('<img srcset="/s/a-320.jpg 320w, /s/a-1280.jpg 1280w, /s/a-640.jpg 640w">'
            f'<img src="{PIXEL}" data-srcset="/s/b-1x.jpg 1x, /s/b-2x.jpg 2x">')
    assert [i.url for i in images(body)] == ["https://news.example.com/s/a-1280.jpg",
                                              "https://news.example.com/s/b-2x.jpg"]


def test_srcset_parser_keeps_commas_inside_urls():
    srcset = ("https://cdn.example/c_fill,w_80/a.jpg 80w, https://cdn.example/c_fit,w_800/a.jpg 800w,"
              "https://cdn.example/c_fit,w_320/a.jpg 320w")
    assert _largest(srcset) == "https://cdn.example/c_fit,w_800/a.jpg"
    assert _largest("/only.jpg") == "/only.jpg"
    assert _largest("") is None


def test_picture_sources_used_when_img_has_no_url():
    body = ('<picture><source srcset="/p/wide-800.webp 800w, /p/wide-1600.webp 1600w" media="(min-width: 600px)">'
            '<source srcset="/p/narrow.webp"><img alt="A picture"></picture>'
            '<picture><source srcset="/p/other.webp 2x"><img src="/p/fallback.jpg" alt="Fallback"></picture>')
    assert images(body) == [
        ImageNode(url="https://news.example.com/p/wide-1600.webp", alt="A picture"),
        ImageNode(url="https://news.example.com/p/fallback.jpg", alt="Fallback")]


def test_base_href_is_honoured_relative_and_absolute():
    assert [i.url for i in images('<img src="a.jpg"><img src="/b.jpg">', head='<base href="/media/">')] == [
        "https://news.example.com/media/a.jpg", "https://news.example.com/b.jpg"]
    assert [i.url for i in images('<img src="a.jpg">', head='<base href="https://cdn.example.net/x/">')] == [
        "https://cdn.example.net/x/a.jpg"]


def test_figure_caption_is_attached_to_its_image():
    body = ('<figure><img src="/f/1.jpg" alt="One"><figcaption> The first   figure.</figcaption></figure>'
            '<figure><div><img src="/f/2.jpg"></div><figcaption>Second <em>figure</em>.</figcaption></figure>')
    assert images(body) == [
        ImageNode(url="https://news.example.com/f/1.jpg", alt="One", caption="The first figure."),
        ImageNode(url="https://news.example.com/f/2.jpg", caption="Second figure.")]


def test_noscript_image_replaces_its_placeholder():
    body = (f'<div class="image-wrap"><img src="{PIXEL}" class="js-img"></div>'
            '<noscript><img src="/real/photo.jpg" alt="Real"></noscript>')
    assert images(body) == [ImageNode(url="https://news.example.com/real/photo.jpg", alt="Real")]


def test_unusable_images_are_skipped_and_duplicates_kept_once():
    body = (f'<img src="{PIXEL}"><img src="javascript:void(0)"><img>'
            '<img src="/t/pixel.gif" width="1" height="1">'
            '<img src="/d/1.jpg"><img src="https://news.example.com/d/1.jpg">'
            '<img class="author-avatar" src="/people/jane.jpg">')
    assert [i.url for i in images(body)] == ["https://news.example.com/d/1.jpg"]


def test_images_interleave_with_text_in_page_order():
    html = ("<html><body><article>"
            f"<p>{TEXT} One.</p><img src='/o/1.jpg'><p>{TEXT} Two.</p>"
            f"<p>{TEXT} Three. <img src='/o/2.jpg'> After the inline image.</p>"
            "</article></body></html>")
    nodes = extract_document(html, PAGE_URL).nodes
    assert nodes == [
        TextNode(text=f"{TEXT} One."), ImageNode(url="https://news.example.com/o/1.jpg"),
        TextNode(text=f"{TEXT} Two."), TextNode(text=f"{TEXT} Three."),
        ImageNode(url="https://news.example.com/o/2.jpg"), TextNode(text="After the inline image.")]


def test_video_sources_and_poster():
    body = ('<figure><video poster="/v/poster.jpg" width="1280" height="720">'
            '<source src="/v/clip.webm" type="video/webm"><source src="/v/clip.mp4" type="video/mp4">'
            '</video><figcaption>A red circle rolls by.</figcaption></figure>'
            '<video src="https://media.example.org/other.mp4"></video>')
    html = f"<html><body><article><p>{TEXT}</p>{body}<p>{TEXT}</p></article></body></html>"
    doc = extract_document(html, PAGE_URL)
    assert doc.videos == [
        VideoNode(sources=("https://news.example.com/v/clip.webm", "https://news.example.com/v/clip.mp4"),
                  poster="https://news.example.com/v/poster.jpg", caption="A red circle rolls by.",
                  width=1280, height=720),
        VideoNode(sources=("https://media.example.org/other.mp4",))]
    videos = doc.to_dict()["general_metadata"]["videos"]
    assert [v["position"] for v in videos] == [1, 1]
    assert videos[0]["sources"] == ["https://news.example.com/v/clip.webm", "https://news.example.com/v/clip.mp4"]


def test_poster_repeated_as_src_is_not_a_video_source():
    body = ('<video poster="/v/still.jpg" src="/v/still.jpg" data-src="/v/clip.mp4"></video>'
            '<video data-poster="/v/p2.jpg" src="/v/p2.jpg"></video>')
    html = f"<html><body><article><p>{TEXT}</p>{body}<p>{TEXT}</p></article></body></html>"
    assert extract_document(html, PAGE_URL).videos == [
        VideoNode(sources=("https://news.example.com/v/clip.mp4",), poster="https://news.example.com/v/still.jpg")]


def test_image_only_page_is_a_document():
    html = "<html><body><div><img src='/only/one.png' alt='Only'></div></body></html>"
    assert extract_document(html, PAGE_URL).nodes == [ImageNode(url="https://news.example.com/only/one.png",
                                                                 alt="Only")]


def test_picture_without_img_shows_nothing():
    body = '<picture><source srcset="/p/only-source.webp 800w"></picture><img src="/p/real.jpg">'
    assert [i.url for i in images(body)] == ["https://news.example.com/p/real.jpg"]


def test_article_header_keeps_its_lead_picture_but_not_its_text():
    html = ("<html><head><title>Harbour lanterns</title></head><body>"
            "<header class='masthead'><img src='/site/banner.jpg'><p>Site tagline that is not content.</p></header>"
            "<article><header><h1>Harbour lanterns</h1><p class='dek'>A standfirst summarising the story.</p>"
            "<figure><img src='/lead.jpg' alt='Lead'><figcaption>The lead picture.</figcaption></figure></header>"
            f"<p>{TEXT}</p><p>{TEXT} Again.</p></article></body></html>")
    assert extract_document(html, PAGE_URL).nodes == [
        ImageNode(url="https://news.example.com/lead.jpg", alt="Lead", caption="The lead picture."),
        TextNode(text=TEXT), TextNode(text=TEXT + " Again.")]


def test_amp_img_is_an_image():
    assert images('<amp-img src="/amp/1.jpg" width="800" height="450" layout="responsive"></amp-img>') == [
        ImageNode(url="https://news.example.com/amp/1.jpg", width=800, height=450)]


def test_srcset_only_images_can_be_left_out():
    import dataclasses

    from flamboyance.preprocess.extract import DEFAULT_CONFIG

    html = (f"<html><body><article><p>{TEXT}</p><img srcset='/s/1-320.jpg 320w, /s/1-640.jpg 640w'>"
            f"<img src='/s/2.jpg' srcset='/s/2-big.jpg 2x'><img src='/blank.gif'><p>{TEXT}</p></article></body></html>")
    config = dataclasses.replace(DEFAULT_CONFIG, srcset_only_images=False)
    assert [i.url for i in extract_document(html, PAGE_URL, config=config).images] == [
        "https://news.example.com/s/2.jpg"]
    assert [i.url for i in extract_document(html, PAGE_URL).images] == [
        "https://news.example.com/s/1-640.jpg", "https://news.example.com/s/2.jpg"]


# ---------------------------------------------------------------- trailing runs, dropped images counted

def _story(tail: str) -> str:
    return f"<html><head><title>T</title></head><body><article><p>{TEXT}</p><p>{TEXT} More.</p>{tail}</article></body></html>"


def test_trailing_run_of_teaser_images_is_trimmed_and_counted():
    tail = "".join(f'<p><a href="/story-{i}"><img src="/t/{i}.jpg"></a></p>' for i in range(3))
    doc = extract_document(_story(tail), PAGE_URL)
    assert doc.images == [] and doc.nodes[-1] == TextNode(text=TEXT + " More.")
    assert doc.dropped_images == {"trailing_image_run": 3}


def test_trailing_gallery_and_single_teaser_are_kept():
    gallery = "".join(f'<p><a href="/g/{i}.jpg"><img src="/g/{i}s.jpg"></a></p>' for i in range(2))
    assert [i.url for i in extract_document(_story(gallery), PAGE_URL).images] == \
        ["https://news.example.com/g/0s.jpg", "https://news.example.com/g/1s.jpg"]
    single = '<p><a href="/story-9"><img src="/t/9.jpg"></a></p>'
    doc = extract_document(_story(single), PAGE_URL)
    assert [i.url for i in doc.images] == ["https://news.example.com/t/9.jpg"] and doc.dropped_images == {}
    captioned = "".join(f'<figure><a href="/s/{i}"><img src="/c/{i}.jpg"></a><figcaption>Photo {i} of the '
                        f'harbour</figcaption></figure>' for i in range(2))
    assert len(extract_document(_story(captioned), PAGE_URL).images) == 2


def test_images_left_out_are_counted_by_reason_and_serialised():
    from flamboyance.preprocess.document import Document
    from flamboyance.preprocess.extract import IMAGE_DROP_REASONS, ExtractConfig
    html = ("<html><head><title>T</title></head><body>"
            "<nav><a href='/'><img src='/nav/home.jpg'></a><a href='/x'>Home</a></nav>"
            f"<article><p>{TEXT}</p>"
            f'<img src="{PIXEL}"><img src="/t/p.gif" width="1" height="1">'
            '<img src="/d/1.jpg"><img src="/d/1.jpg"><img class="emoji" src="/e/smile.jpg">'
            f'<img src="/d/2.jpg"><img src="/d/3.jpg"><p>{TEXT} End.</p></article></body></html>')
    doc = extract_document(html, PAGE_URL, config=ExtractConfig(max_images=2))
    assert [i.url for i in doc.images] == ["https://news.example.com/d/1.jpg", "https://news.example.com/d/2.jpg"]
    assert doc.dropped_images == {"no_source": 1, "tracking_pixel": 1, "duplicate": 1, "furniture": 1,
                                  "too_many_images": 1, "not_main_content": 1}
    assert set(doc.dropped_images) <= set(IMAGE_DROP_REASONS)
    data = doc.to_dict()
    assert data["general_metadata"]["dropped_images"] == dict(sorted(doc.dropped_images.items()))
    assert Document.from_dict(data) == doc
