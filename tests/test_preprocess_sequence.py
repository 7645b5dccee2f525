"""M3W sequence text: exact strings for 0..3 images, image first, text first, consecutive images."""

from flamboyance.preprocess.document import Document, ImageNode, TextNode, VideoNode
from flamboyance.preprocess.sequence import (
    image_text_sequence,
    split_sequence,
    strip_special_tokens,
    to_sequence,
)
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN


def T(text, kind="paragraph"):
    return TextNode(text=text, kind=kind)


def I(name):  # noqa: E743
    return ImageNode(url=f"https://example.com/{name}.jpg")


def seq(*nodes):
    return to_sequence(Document(url="https://example.com/p", nodes=list(nodes)))


def test_zero_images():
    assert seq(T("Hello."), T("World.")) == "Hello.\nWorld.<EOC>"
    assert seq() == "<EOC>"


def test_one_image_text_first():
    assert seq(T("A cat."), I("a"), T("It sleeps.")) == "A cat.<image>It sleeps.<EOC>"


def test_two_images_reference_format():
    # REFERENCE.md: T0 <image> T1 <EOC> <image> T2 <EOC>
    assert seq(T("T0"), I("a"), T("T1"), I("b"), T("T2")) == "T0<image>T1<EOC><image>T2<EOC>"


def test_three_images_image_first():
    assert seq(I("a"), T("one"), I("b"), T("two"), T("more"), I("c"), T("three")) == \
        "<image>one<EOC><image>two\nmore<EOC><image>three<EOC>"


def test_consecutive_images_and_image_last():
    assert seq(T("Look:"), I("a"), I("b"), I("c")) == "Look:<image><EOC><image><EOC><image><EOC>"


def test_tokens_come_from_tokens_module():
    assert seq(I("a"), T("x")) == f"{IMAGE_TOKEN}x{EOC_TOKEN}"


def test_videos_skipped_blank_text_skipped_and_text_stripped():
    video = VideoNode(sources=("https://example.com/v.mp4",), caption="a video")
    assert seq(T("  Intro  "), video, T("   "), I("a"), T("Caption here.", kind="caption")) == \
        "Intro<image>Caption here.<EOC>"


def test_literal_tokens_in_page_text_are_removed():
    text = "Write <image> or <EOC> or <im<image>age> in HTML."
    assert strip_special_tokens(text) == "Write  or  or  in HTML."
    out = seq(T(text), I("a"))
    assert out.count(IMAGE_TOKEN) == 1 and out.count(EOC_TOKEN) == 1
    assert out == "Write  or  or  in HTML.<image><EOC>"


def test_image_text_sequence():
    assert image_text_sequence("a red circle") == "<image>a red circle<EOC>"
    assert image_text_sequence("  a <EOC>blue square ") == "<image>a blue square<EOC>"


def test_split_sequence_inverts_to_sequence():
    nodes = [T("T0"), I("a"), T("T1"), I("b"), I("c"), T("T2")]
    text = seq(*nodes)
    parts = split_sequence(text)
    assert parts == ["T0", None, "T1", None, None, "T2"]
    rebuilt = [T(p) if p is not None else I(str(k)) for k, p in enumerate(parts)]
    assert seq(*rebuilt) == text
    assert split_sequence("<image>caption<EOC>") == [None, "caption"]
