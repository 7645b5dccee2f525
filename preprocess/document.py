"""The interleaved document: one web page's main content as ordered text, image and video nodes.

`Document.to_dict()` gives the OBELICS layout: parallel lists `texts` and `images` where exactly
one of `texts[i]`, `images[i]` is set, a per-node `metadata` list, and `general_metadata`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TextKind = Literal["paragraph", "heading", "list_item", "caption", "quote", "preformatted", "table"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextNode:
    """A block of main-content text (already whitespace- and Unicode-normalised)."""

    text: str
    kind: TextKind = "paragraph"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageNode:
    """An image in page order. `url` is absolute; width/height are the declared ones, if any."""

    url: str
    alt: str = ""
    caption: str = ""
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoNode:
    """A <video> in page order: absolute source URLs (best first), poster and caption."""

    sources: tuple[str, ...]
    poster: str | None = None
    caption: str = ""
    width: int | None = None
    height: int | None = None


Node = TextNode | ImageNode | VideoNode


@dataclass(slots=True, kw_only=True)
class Document:
    """One page's main content. `nodes` keep page order; `metadata` is page-level.

    `dropped_images`: images of the page that extraction left out, counted by reason
    (`flamboyance.preprocess.extract.IMAGE_DROP_REASONS`), so a pipeline can count them; serialised
    as `general_metadata["dropped_images"]` when not empty."""

    url: str
    nodes: list[Node] = field(default_factory=list)
    title: str = ""
    language: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    dropped_images: dict[str, int] = field(default_factory=dict)

    @property
    def texts(self) -> list[TextNode]:
        return [n for n in self.nodes if isinstance(n, TextNode)]

    @property
    def images(self) -> list[ImageNode]:
        return [n for n in self.nodes if isinstance(n, ImageNode)]

    @property
    def videos(self) -> list[VideoNode]:
        return [n for n in self.nodes if isinstance(n, VideoNode)]

    def text(self, sep: str = "\n\n") -> str:
        """All text blocks joined (for filters, language id and dedup)."""
        return sep.join(n.text for n in self.nodes if isinstance(n, TextNode))

    def to_dict(self) -> dict[str, Any]:
        """OBELICS layout: {"url", "texts", "images", "metadata", "general_metadata"}.

        Videos are not OBELICS nodes; they are listed in general_metadata["videos"] with the
        index of the node position they stood at.
        """
        texts: list[str | None] = []
        images: list[str | None] = []
        metadata: list[dict[str, Any] | None] = []
        videos: list[dict[str, Any]] = []
        for node in self.nodes:
            if isinstance(node, TextNode):
                texts.append(node.text)
                images.append(None)
                metadata.append({"kind": node.kind})
            elif isinstance(node, ImageNode):
                texts.append(None)
                images.append(node.url)
                metadata.append({"alt": node.alt, "caption": node.caption,
                                 "width": node.width, "height": node.height})
            else:
                video = asdict(node)
                video["sources"] = list(node.sources)
                video["position"] = len(texts)
                videos.append(video)
        general = {"url": self.url, "title": self.title, "language": self.language,
                   "videos": videos, **self.metadata}
        if self.dropped_images:
            general["dropped_images"] = dict(sorted(self.dropped_images.items()))
        return {"url": self.url, "texts": texts, "images": images, "metadata": metadata,
                "general_metadata": general}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Document:
        """Inverse of `to_dict` (round-trips nodes, videos and page metadata)."""
        general = dict(data.get("general_metadata") or {})
        videos = sorted(general.pop("videos", []) or [], key=lambda v: v["position"])
        url = data.get("url") or general.get("url", "")
        general.pop("url", None)
        title = general.pop("title", "") or ""
        language = general.pop("language", None)
        dropped_images = {str(k): int(v) for k, v in (general.pop("dropped_images", None) or {}).items()}
        nodes: list[Node] = []
        metas = data.get("metadata") or [None] * len(data["texts"])
        vi = 0
        for i, (text, image, meta) in enumerate(zip(data["texts"], data["images"], metas)):
            while vi < len(videos) and videos[vi]["position"] <= i:
                nodes.append(_video_from(videos[vi]))
                vi += 1
            if text is not None:
                nodes.append(TextNode(text=text, kind=(meta or {}).get("kind", "paragraph")))
            elif image is not None:
                meta = meta or {}
                nodes.append(ImageNode(url=image, alt=meta.get("alt", ""), caption=meta.get("caption", ""),
                                       width=meta.get("width"), height=meta.get("height")))
        for video in videos[vi:]:
            nodes.append(_video_from(video))
        return cls(url=url, nodes=nodes, title=title, language=language, metadata=general,
                   dropped_images=dropped_images)


def _video_from(video: dict[str, Any]) -> VideoNode:
    return VideoNode(sources=tuple(video["sources"]), poster=video.get("poster"),
                     caption=video.get("caption", ""), width=video.get("width"), height=video.get("height"))
