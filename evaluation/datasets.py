"""Evaluation data from local files, as one record type.

- COCO-captions JSON (`images` + `annotations`) and an image folder -> captioning;
- VQAv2 questions JSON + annotations JSON and an image folder -> vqa;
- ImageNet-style class folders (`root/<class>/<image>`) -> classification;
- our image_text shards (read through `flamboyance.shards.open_dataset`) -> captioning.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flamboyance.shards.identity import image_bytes_key, image_url_key
from PIL import Image

__all__ = [
    "EvalDataset",
    "EvalExample",
    "IMAGE_SUFFIXES",
    "load_coco_captions",
    "load_image_folder",
    "load_image_text_shards",
    "load_vqav2",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

ImageRef = str | bytes | Image.Image
"""A path to an image file, its encoded bytes, or an already decoded image."""


@dataclass(frozen=True, kw_only=True)
class EvalExample:
    """One evaluation example (query or support)."""

    key: str
    """Unique id within its dataset (COCO image id, VQA question id, file path, shard key)."""
    image: ImageRef = field(repr=False)
    """The image: a file path, encoded bytes or a PIL image."""
    target: str
    """The text shown when this example is a support example: caption, answer or class name."""
    references: tuple[str, ...]
    """What a prediction is scored against: all captions, all human answers, or (class name,)."""
    question: str | None = None
    """The question (VQA only)."""
    image_id: str | None = None
    """Identity of the image, shared by questions about the same image (defaults to `key`)."""
    image_url: str | None = None
    """Where the image was downloaded from, when known (our shards): part of its identity."""

    def load_image(self) -> Image.Image:
        """The image decoded as RGB."""
        try:
            if isinstance(self.image, Image.Image):
                return self.image.convert("RGB")
            if isinstance(self.image, bytes):
                return Image.open(io.BytesIO(self.image)).convert("RGB")
            with Image.open(self.image) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as err:
            where = self.image if isinstance(self.image, str) else "in-memory image"
            raise ValueError(f"example {self.key!r}: cannot decode image {where}: {err}") from err

    @property
    def image_key(self) -> str:
        return self.image_id if self.image_id is not None else self.key

    def image_identity(self, *, pixels: bool = True) -> frozenset[str]:
        """Keys that name this image across datasets: its normalised URL (when known), the sha256
        of its encoded bytes (file or bytes), and with `pixels` a digest of its decoded RGB pixels
        (catches the same picture in another container). Two examples sharing any key show the
        same image."""
        keys = set()
        if self.image_url:
            keys.add(image_url_key(self.image_url))
        if isinstance(self.image, bytes):
            keys.add(image_bytes_key(self.image))
        elif isinstance(self.image, str):
            try:
                keys.add(image_bytes_key(Path(self.image).read_bytes()))
            except OSError as err:
                raise ValueError(f"example {self.key!r}: cannot read image {self.image}: {err}") from err
        if pixels:
            image = self.load_image()
            digest = hashlib.sha256(f"{image.width}x{image.height}".encode())
            digest.update(image.tobytes())
            keys.add("pixels:" + digest.hexdigest())
        return frozenset(keys)


@dataclass(frozen=True, kw_only=True)
class EvalDataset:
    """An ordered list of examples of one task, with a fingerprint for caches."""

    task: str
    """captioning | vqa | classification."""
    examples: tuple[EvalExample, ...]
    source: str
    """Where the examples came from (paths), for messages and caches."""
    class_names: tuple[str, ...] | None = None
    """The option set of a classification dataset."""

    def __len__(self) -> int:
        return len(self.examples)

    def __post_init__(self) -> None:
        keys = [e.key for e in self.examples]
        if len(set(keys)) != len(keys):
            dup = next(k for k, n in Counter(keys).items() if n > 1)
            raise ValueError(f"dataset {self.source}: duplicate example key {dup!r}")
        if self.task == "classification" and not self.class_names:
            raise ValueError(f"dataset {self.source}: a classification dataset needs class_names")

    @property
    def fingerprint(self) -> str:
        """A digest of the source and the ordered image identities (keys the RICES cache)."""
        h = hashlib.sha256(self.source.encode())
        for e in self.examples:
            h.update(b"\0" + e.image_key.encode())
        return h.hexdigest()[:16]

    def head(self, limit: int | None) -> EvalDataset:
        """The first `limit` examples (all when None)."""
        if limit is None or limit >= len(self.examples):
            return self
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        return EvalDataset(task=self.task, examples=self.examples[:limit], source=f"{self.source}[:{limit}]",
                           class_names=self.class_names)


def _read_json(path: str | os.PathLike, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{what} file not found: {path}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {path} is not valid JSON: {err}") from err


def load_coco_captions(annotations: str | os.PathLike, image_dir: str | os.PathLike) -> EvalDataset:
    """COCO captions format: `{"images": [{"id", "file_name"}], "annotations": [{"image_id",
    "caption"}]}`. One example per image (in `images` order) whose references are all its
    captions; the first caption is its support text."""
    data = _read_json(annotations, "COCO captions")
    if "images" not in data or "annotations" not in data:
        raise ValueError(f"{annotations}: not COCO captions format (needs 'images' and 'annotations')")
    captions: dict[object, list[str]] = {}
    for ann in data["annotations"]:
        captions.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    examples = []
    for img in data["images"]:
        refs = captions.get(img["id"])
        if not refs:
            continue  # an image without captions cannot be scored
        path = Path(image_dir) / img["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{annotations}: image {img['id']} file {path} not found")
        examples.append(EvalExample(key=str(img["id"]), image=str(path), target=refs[0], references=tuple(refs)))
    if not examples:
        raise ValueError(f"{annotations}: no image with captions")
    return EvalDataset(task="captioning", examples=tuple(examples), source=str(Path(annotations).resolve()))


def _index_images_by_id(image_dir: str | os.PathLike) -> dict[int, str]:
    """image id -> file, reading the id from the trailing digits of the file name
    (COCO_val2014_000000000042.jpg and 42.jpg both give 42)."""
    index: dict[int, str] = {}
    for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
        stem, suffix = os.path.splitext(entry.name)
        match = re.search(r"(\d+)$", stem)
        if match and suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
            index.setdefault(int(match.group(1)), entry.path)
    return index


def load_vqav2(
    questions: str | os.PathLike, annotations: str | os.PathLike, image_dir: str | os.PathLike
) -> EvalDataset:
    """VQAv2 format: questions `{"questions": [{"question_id", "image_id", "question"}]}` and
    annotations `{"annotations": [{"question_id", "answers": [{"answer", ...}], ...}]}`; images
    are found in `image_dir` by the image id in their file name. References are the human
    answers; the support text is the most common one (`multiple_choice_answer` when given)."""
    q_data = _read_json(questions, "VQA questions")
    a_data = _read_json(annotations, "VQA annotations")
    if "questions" not in q_data:
        raise ValueError(f"{questions}: not VQAv2 questions format (needs 'questions')")
    if "annotations" not in a_data:
        raise ValueError(f"{annotations}: not VQAv2 annotations format (needs 'annotations')")
    by_question = {ann["question_id"]: ann for ann in a_data["annotations"]}
    images = _index_images_by_id(image_dir)
    examples = []
    for q in q_data["questions"]:
        ann = by_question.get(q["question_id"])
        if ann is None:
            raise ValueError(f"{annotations}: no annotation for question {q['question_id']}")
        if q["image_id"] not in images:
            raise FileNotFoundError(f"{image_dir}: no image file for image id {q['image_id']}")
        answers = tuple(a["answer"] for a in ann["answers"])
        target = ann.get("multiple_choice_answer") or Counter(answers).most_common(1)[0][0]
        examples.append(EvalExample(key=str(q["question_id"]), image=images[q["image_id"]], target=target,
                                    references=answers, question=q["question"], image_id=str(q["image_id"])))
    if not examples:
        raise ValueError(f"{questions}: no questions")
    return EvalDataset(task="vqa", examples=tuple(examples),
                       source=f"{Path(questions).resolve()}+{Path(annotations).resolve()}")


def class_name_from_folder(folder: str) -> str:
    """`golden_retriever` -> `golden retriever`."""
    return folder.replace("_", " ").strip()


def load_image_folder(root: str | os.PathLike) -> EvalDataset:
    """ImageNet-style `root/<class folder>/<image file>`; class names are the folder names with
    underscores as spaces. Examples are ordered by class then file name."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f"class-folder dataset not found: {root}")
    examples = []
    class_names = []
    for class_dir in sorted(p for p in root_path.iterdir() if p.is_dir()):
        name = class_name_from_folder(class_dir.name)
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            continue
        class_names.append(name)
        for path in files:
            examples.append(EvalExample(key=f"{class_dir.name}/{path.name}", image=str(path), target=name,
                                        references=(name,)))
    if len(class_names) < 2:
        raise ValueError(f"{root}: need at least 2 class folders with images, found {len(class_names)}")
    return EvalDataset(task="classification", examples=tuple(examples), source=str(root_path.resolve()),
                       class_names=tuple(class_names))


def load_image_text_shards(url: str, *, limit: int | None = None) -> EvalDataset:
    """Our image_text shards (a held-out or train split) as a captioning dataset, in shard
    order, read through `flamboyance.shards.open_dataset` (unshuffled, not split by node or
    worker). `limit` stops reading after that many samples."""
    from flamboyance.shards import open_dataset

    dataset = open_dataset(url, kind="image_text", shuffle=0, resampled=False, split_by_node=False,
                           split_by_worker=False, shuffle_shards=False, decode=False)
    examples = []
    seen: set[str] = set()
    for record in _take(dataset, limit):
        caption = record.caption.strip()
        if not caption or str(record.key) in seen:
            continue  # nothing to score, or the same sample twice
        seen.add(str(record.key))
        # the encoded bytes (decoded when used): smaller than pixels, and their sha256 is the image's
        # identity in the ETL split and in decontamination
        image_url = record.metadata.get("url") if isinstance(record.metadata, dict) else None
        examples.append(EvalExample(key=str(record.key), image=bytes(record.image), target=caption,
                                    references=(caption,),
                                    image_url=image_url if isinstance(image_url, str) else None))
    if not examples:
        raise ValueError(f"image_text shards {url}: no samples with captions")
    source = os.path.abspath(url) if "://" not in url else url
    return EvalDataset(task="captioning", examples=tuple(examples), source=source)


def _take(records: Iterable, limit: int | None):
    for i, record in enumerate(records):
        if limit is not None and i >= limit:
            return
        yield record
