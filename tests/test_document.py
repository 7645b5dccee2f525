"""The Document type: OBELICS layout and its inverse."""

from flamboyance.preprocess.document import Document, ImageNode, TextNode, VideoNode


def _doc() -> Document:
    return Document(url="https://e.org/a", title="T", language="en", metadata={"warc_offset": 7},
                    nodes=[TextNode(text="Heading", kind="heading"),
                           ImageNode(url="https://e.org/1.png", alt="a red circle", width=200, height=100),
                           VideoNode(sources=("https://e.org/v.mp4",), poster="https://e.org/p.jpg", caption="c"),
                           TextNode(text="Body text.")])


def test_to_dict_is_obelics_layout():
    d = _doc().to_dict()
    assert d["texts"] == ["Heading", None, "Body text."]
    assert d["images"] == [None, "https://e.org/1.png", None]
    assert d["metadata"][1] == {"alt": "a red circle", "caption": "", "width": 200, "height": 100}
    assert d["general_metadata"]["videos"][0]["position"] == 2
    assert d["general_metadata"]["warc_offset"] == 7
    assert all((t is None) != (i is None) for t, i in zip(d["texts"], d["images"]))


def test_from_dict_round_trips_nodes_kinds_and_metadata():
    doc = _doc()
    back = Document.from_dict(doc.to_dict())
    assert back.nodes == doc.nodes
    assert (back.url, back.title, back.language, back.metadata) == (doc.url, "T", "en", {"warc_offset": 7})
