"""Prompts (exact strings) and the local-file dataset loaders."""

from __future__ import annotations

import json

import pytest
from flamboyance.evaluation.datasets import (
    load_coco_captions,
    load_image_folder,
    load_vqav2,
)
from flamboyance.evaluation.prompts import build_prompt, clean_generation, continuation_text
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from PIL import Image


def test_caption_prompt_few_shot_and_zero_shot():
    support = [("a red circle", None), ("a blue square", None)]
    assert build_prompt("captioning", support=support) == (
        f"{IMAGE_TOKEN}Output: a red circle{EOC_TOKEN}{IMAGE_TOKEN}Output: a blue square{EOC_TOKEN}{IMAGE_TOKEN}Output:"
    )
    # zero-shot: the two support examples are text only, only the query has an image
    zero = build_prompt("captioning", support=support, text_only_support=True)
    assert zero == f"Output: a red circle{EOC_TOKEN}Output: a blue square{EOC_TOKEN}{IMAGE_TOKEN}Output:"
    assert zero.count(IMAGE_TOKEN) == 1


def test_vqa_prompt():
    prompt = build_prompt("vqa", support=[("red", "What colour is it?")], query_question="How many?")
    assert prompt == (
        f"{IMAGE_TOKEN}Question: What colour is it? Short answer: red{EOC_TOKEN}"
        f"{IMAGE_TOKEN}Question: How many? Short answer:"
    )


def test_classification_prompt_and_continuation():
    prompt = build_prompt("classification", support=[("golden retriever", None)])
    assert prompt == f"{IMAGE_TOKEN}Output: golden retriever{EOC_TOKEN}{IMAGE_TOKEN}Output:"
    assert continuation_text("tabby cat") == f" tabby cat{EOC_TOKEN}"


@pytest.mark.parametrize(
    ("task", "text", "clean"),
    [
        ("captioning", " a red circle on white", "a red circle on white"),
        ("captioning", " a red circle Output: a blue", "a red circle"),
        ("vqa", " yes, it is", "yes"),
        ("vqa", " two Question: what", "two"),
        ("captioning", " first line\nsecond", "first line"),
    ],
)
def test_clean_generation(task, text, clean):
    assert clean_generation(task, text) == clean


def _image(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)


def test_load_coco_captions(tmp_path):
    _image(tmp_path / "img" / "a.jpg", "red")
    _image(tmp_path / "img" / "b.png", "blue")
    ann = {
        "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.png"}, {"id": 11, "file_name": "c.jpg"}],
        "annotations": [
            {"image_id": 9, "caption": "a blue square "},
            {"image_id": 7, "caption": "a red thing"},
            {"image_id": 7, "caption": "red"},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(ann))
    ds = load_coco_captions(tmp_path / "captions.json", tmp_path / "img")
    assert ds.task == "captioning"
    assert [e.key for e in ds.examples] == ["7", "9"]  # image 11 has no caption
    assert ds.examples[0].references == ("a red thing", "red")
    assert ds.examples[0].target == "a red thing"
    assert ds.examples[1].references == ("a blue square",)
    assert ds.examples[1].load_image().getpixel((0, 0)) == (0, 0, 255)
    assert len(ds.head(1)) == 1 and ds.head(1).fingerprint != ds.fingerprint


def test_load_coco_captions_missing_image_names_file(tmp_path):
    (tmp_path / "img").mkdir()
    ann = {"images": [{"id": 1, "file_name": "gone.jpg"}], "annotations": [{"image_id": 1, "caption": "x"}]}
    (tmp_path / "c.json").write_text(json.dumps(ann))
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        load_coco_captions(tmp_path / "c.json", tmp_path / "img")


def test_load_vqav2(tmp_path):
    _image(tmp_path / "img" / "COCO_val2014_000000000042.png", "green")
    _image(tmp_path / "img" / "43.jpg", "white")
    questions = {"questions": [
        {"question_id": 420, "image_id": 42, "question": "What colour?"},
        {"question_id": 421, "image_id": 42, "question": "Is it square?"},
        {"question_id": 430, "image_id": 43, "question": "How many?"},
    ]}
    answers = lambda xs: [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(xs)]  # noqa: E731
    annotations = {"annotations": [
        {"question_id": 420, "image_id": 42, "answers": answers(["green"] * 8 + ["lime"] * 2),
         "multiple_choice_answer": "green"},
        {"question_id": 421, "image_id": 42, "answers": answers(["yes"] * 4 + ["no"] * 6)},
        {"question_id": 430, "image_id": 43, "answers": answers(["2"] * 10), "multiple_choice_answer": "2"},
    ]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    ds = load_vqav2(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "img")
    assert [(e.key, e.image_id, e.question, e.target) for e in ds.examples] == [
        ("420", "42", "What colour?", "green"),
        ("421", "42", "Is it square?", "no"),  # most common answer when no multiple_choice_answer
        ("430", "43", "How many?", "2"),
    ]
    assert ds.examples[0].references == ("green",) * 8 + ("lime",) * 2
    assert ds.examples[0].load_image().getpixel((1, 1)) == (0, 128, 0)


def test_load_image_folder(tmp_path):
    _image(tmp_path / "golden_retriever" / "b.jpg", "yellow")
    _image(tmp_path / "golden_retriever" / "a.jpg", "yellow")
    _image(tmp_path / "tabby" / "x.png", "gray")
    (tmp_path / "tabby" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ("golden retriever", "tabby")
    assert [(e.key, e.target) for e in ds.examples] == [
        ("golden_retriever/a.jpg", "golden retriever"),
        ("golden_retriever/b.jpg", "golden retriever"),
        ("tabby/x.png", "tabby"),
    ]
