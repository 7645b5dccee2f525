"""`flamboyance decontaminate`: training samples that show an eval image (URL or bytes) or share a
caption n-gram with an eval text are removed, with exact counts; the rest is rewritten as shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from flamboyance.cli import main
from flamboyance.evaluation.datasets import load_coco_captions, load_image_text_shards
from flamboyance.evaluation.decontaminate import EvalIndex, decontaminate, text_ngrams
from flamboyance.shards import (
    ImageTextSample,
    M3WSample,
    VideoTextSample,
    read_manifest,
    write_manifest,
    write_shard,
)
from PIL import Image


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


COCO_CAPTION = "A brown dog runs across the green field chasing a red ball"  # 12 words
HELDOUT = [  # (key, url, image seed, caption)
    ("h0", "http://img.example/h0.jpg", 100, "a heldout picture of a cat"),
    ("h1", "http://img.example/h1.jpg?b=2&a=1", 101, "Two birds."),
    ("h2", "http://img.example/h2.jpg", 102, "a tall lighthouse on a rocky coast at sunset in winter"),
]
TRAIN = [  # (shard, key, url, image seed, caption, expected outcome)
    (0, "t0", "http://other.example/copy.jpg", 100, "an unrelated caption about trains", "image"),  # h0's bytes
    (0, "t1", "HTTP://IMG.example:80/h1.jpg?a=1&b=2#x", 1, "an unrelated caption about boats", "image"),  # h1's URL
    (0, "t2", "http://web.example/2.jpg", 2, "look: a brown dog runs across the green field chasing a stick",
     "ngram"),  # 8 words of the COCO caption in a row
    (0, "t3", "http://web.example/3.jpg", 3, "TWO birds!", "ngram"),  # a short eval caption, normalised
    (0, "t4", "http://web.example/4.jpg", 4, "a brown dog runs across the green hill", "kept"),  # 7 words shared
    (1, "t5", "http://web.example/5.jpg", 5, "the green field chasing a red ball away", "kept"),  # 7-word overlap
    (1, "t6", "http://web.example/6.jpg", 200, "some caption of a coco image file", "image"),  # COCO file bytes
    (1, "t7", "http://web.example/7.jpg", 7, "a tall lighthouse on a rocky coast at sunset", "ngram"),  # h2's text
    (1, "t8", "http://img.example/h2.jpg", 102, "a tall lighthouse on a rocky coast at sunset", "image"),  # both:
    # the image is checked first
    (1, "t9", "http://web.example/9.jpg", 9, "a cat", "kept"),
]


def _write_sets(tmp_path):
    heldout = tmp_path / "heldout"
    write_shard(str(heldout), kind="image_text", shard_index=0, samples=[
        ImageTextSample(key=k, image=_png(seed), caption=c, metadata={"url": u}) for k, u, seed, c in HELDOUT])
    write_manifest(str(heldout), kind="image_text")
    images = tmp_path / "coco"
    images.mkdir()
    (images / "COCO_val_000000000042.png").write_bytes(_png(200))
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": 42, "file_name": "COCO_val_000000000042.png"}],
                                "annotations": [{"image_id": 42, "caption": COCO_CAPTION}]}))
    train = tmp_path / "train"
    for shard in (0, 1):
        write_shard(str(train), kind="image_text", shard_index=shard, samples=[
            ImageTextSample(key=k, image=_png(seed), caption=c, metadata={"url": u})
            for s, k, u, seed, c, _ in TRAIN if s == shard])
    write_manifest(str(train), kind="image_text")
    return heldout, coco, images, train


def _keys(root) -> dict[int, list[str]]:
    out = {}
    for tar_path in sorted(root.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            out[int(tar_path.stem)] = sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return out


def test_text_ngrams():
    assert text_ngrams("Two birds.", 8) == text_ngrams("two   BIRDS", 8) != text_ngrams("two birds flying", 8)
    assert len(text_ngrams(COCO_CAPTION, 8)) == 12 - 8 + 1
    assert text_ngrams("", 8) == text_ngrams("?!", 8) == set()


def test_decontaminate_removes_eval_images_and_ngrams_with_exact_counts(tmp_path):
    heldout, coco, images, train = _write_sets(tmp_path)
    index = EvalIndex.build([load_image_text_shards(str(heldout)), load_coco_captions(coco, images)], ngram=8)
    assert index.examples == 4 and len(index.image_keys) == 3 + 3 + 1  # URL + bytes per shard sample, COCO bytes
    stats = decontaminate(str(train), str(tmp_path / "clean"), index)
    assert (stats["input"], stats["kept"], stats["removed_by_image"], stats["removed_by_ngram"]) == (10, 3, 4, 3)
    assert [(s["shard_index"], s["input"], s["kept"], s["removed_by_image"], s["removed_by_ngram"])
            for s in stats["shards"]] == [(0, 5, 1, 2, 2), (1, 5, 2, 2, 1)]
    kept = {s: sorted(k for sh, k, *_, outcome in TRAIN if sh == s and outcome == "kept") for s in (0, 1)}
    assert _keys(tmp_path / "clean") == kept
    assert read_manifest(str(tmp_path / "clean"))["samples"] == 3
    assert json.loads((tmp_path / "clean" / "decontamination.json").read_text()) == json.loads(json.dumps(stats))
    assert not list((tmp_path / "clean").glob("*.tmp*"))


def test_decontaminate_cli(tmp_path, capsys):
    heldout, coco, images, train = _write_sets(tmp_path)
    code = main(["decontaminate", "--train", str(train), "--output", str(tmp_path / "clean"),
                 "--eval", "captioning", str(heldout), "--eval", "captioning", str(coco), str(images)])
    assert code == 0
    assert "10 samples in, 3 kept, 4 removed by image, 3 removed by n-gram" in capsys.readouterr().out
    stats = json.loads((tmp_path / "clean" / "decontamination.json").read_text())
    assert stats["eval_examples"] == 4 and stats["kept"] == 3
    with pytest.raises(SystemExit, match="TASK DATA"):
        main(["decontaminate", "--train", str(train), "--output", str(tmp_path / "x"), "--eval", "captions", "y"])
    with pytest.raises(SystemExit, match="must differ"):
        main(["decontaminate", "--train", str(train), "--output", str(train), "--eval", "captioning", str(heldout)])


def test_decontaminate_m3w_documents(tmp_path):
    heldout, coco, images, _ = _write_sets(tmp_path)
    index = EvalIndex.build([load_image_text_shards(str(heldout)), load_coco_captions(coco, images)], ngram=8)

    def doc(key, urls, texts, seeds):
        return M3WSample(key=key, document={"url": f"http://page.example/{key}", "images": urls, "texts": texts},
                         images=[_png(s) for s in seeds])

    docs = [
        doc("d0", ["http://page.example/a.jpg", None, "http://img.example/h0.jpg"], [None, "some text", None],
            [1, 2]),  # h0's URL as its second image
        doc("d1", ["http://page.example/b.jpg", None], [None, "Yesterday a brown dog runs across the green field "
                                                        "chasing a red ball, said the neighbour"], [3]),
        doc("d2", ["http://page.example/c.jpg", None], [None, "a brown dog and a green field"], [4]),
        doc("d3", [None, "http://page.example/d.jpg"], ["text first", None], [200]),  # the COCO file's bytes
    ]
    write_shard(str(tmp_path / "m3w"), kind="m3w", shard_index=3, samples=docs)
    write_manifest(str(tmp_path / "m3w"), kind="m3w")
    stats = decontaminate(str(tmp_path / "m3w"), str(tmp_path / "m3w_clean"), index)
    assert (stats["kind"], stats["input"], stats["kept"], stats["removed_by_image"], stats["removed_by_ngram"]) == (
        "m3w", 4, 1, 2, 1)
    assert _keys(tmp_path / "m3w_clean") == {3: ["d2"]}


def test_rerun_keeps_finished_shards_made_with_the_same_eval_sets(tmp_path):
    heldout, coco, images, train = _write_sets(tmp_path)
    index = EvalIndex.build([load_image_text_shards(str(heldout)), load_coco_captions(coco, images)], ngram=8)
    first = decontaminate(str(train), str(tmp_path / "clean"), index)
    (tmp_path / "clean" / "00001_decontamination.json").unlink()  # as if killed after shard 1's tar, before its marker
    messages: list[str] = []
    again = decontaminate(str(train), str(tmp_path / "clean"), index, log=messages.append)
    assert again == first
    assert [m.split(": ", 1)[1] for m in messages] == [f"already decontaminated in {tmp_path / 'clean'}",
                                                        "kept 2 of 5"]
    smaller = EvalIndex.build([load_image_text_shards(str(heldout))], ngram=8)  # other eval sets: all redone
    messages.clear()
    third = decontaminate(str(train), str(tmp_path / "clean"), smaller, log=messages.append)
    assert (third["kept"], third["removed_by_image"], third["removed_by_ngram"]) == (5, 3, 2)
    assert [m.split(": ", 1)[1] for m in messages] == ["kept 2 of 5", "kept 3 of 5"]


def test_decontaminate_video_text_by_url_and_caption(tmp_path):
    heldout, *_ = _write_sets(tmp_path)
    index = EvalIndex.build([load_image_text_shards(str(heldout))], ngram=8)
    clips = [VideoTextSample(key=k, frames=[_png(1)], caption=c, metadata={"url": u, "timestamps": [0.0]})
             for k, u, c in [("v0", "http://img.example/h0.jpg", "a video"), ("v1", "http://v.example/1.mp4", "two birds"),
                             ("v2", "http://v.example/2.mp4", "a heldout video of a cat")]]
    write_shard(str(tmp_path / "video"), kind="video_text", shard_index=0, samples=clips)
    write_manifest(str(tmp_path / "video"), kind="video_text")
    stats = decontaminate(str(tmp_path / "video"), str(tmp_path / "video_clean"), index)
    assert (stats["input"], stats["kept"], stats["removed_by_image"], stats["removed_by_ngram"]) == (3, 1, 1, 1)
    assert _keys(tmp_path / "video_clean") == {0: ["v2"]}
