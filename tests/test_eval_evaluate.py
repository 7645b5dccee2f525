"""evaluate() end to end on a tiny model (captioning with random and RICES shots, VQA) and the
`flamboyance eval` command on COCO-format files and on image_text shards."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from flamboyance.cli import main
from flamboyance.evaluation import EvalDataset, EvalExample, cider, evaluate, rices_select, vqa_accuracy
from flamboyance.evaluation.prompts import build_prompt
from flamboyance.evaluation.rices import feature_cache_path
from flamboyance.model import Flamingo
from flamboyance.model.tiny import tiny_config
from flamboyance.preprocess.tokens import EOC_TOKEN, IMAGE_TOKEN
from flamboyance.shards import ImageTextSample, write_manifest, write_shard
from PIL import Image

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run faster single-threaded, and far faster on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(_one_thread) -> Flamingo:
    return Flamingo.from_config(tiny_config(init_seed=1)).eval()


def _noise_image(seed: int, size: int = 24) -> Image.Image:
    """Distinct images (no ties in RICES similarity)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _captions(n: int) -> list[tuple[str, str]]:
    return [(f"a {COLOURS[i % 4]} {SHAPES[i // 4 % 2]}", f"{COLOURS[i % 4]} shape {i}") for i in range(n)]


def _caption_dataset(n: int = 8) -> EvalDataset:
    examples = tuple(EvalExample(key=f"img{i}", image=_noise_image(i), target=f"{first} {i}",
                                 references=(f"{first} {i}", second))
                     for i, (first, second) in enumerate(_captions(n)))
    return EvalDataset(task="captioning", examples=examples, source="memory-captions")


def test_evaluate_captioning_random_shots(model):
    dataset = _caption_dataset()
    kwargs = dict(shots=[0, 2], seeds=[0, 1], batch_size=3, num_examples=len(dataset))
    result = evaluate(model, "captioning", dataset, **kwargs)
    assert result["metric"] == "CIDEr" and result["num_queries"] == 8 and result["support_size"] == 8
    assert result["max_new_tokens"] == 20 and result["num_beams"] == 3
    for shots, rows in result["examples"].items():
        assert [r["key"] for r in rows] == [e.key for e in dataset.examples]
        for row, example in zip(rows, dataset.examples):
            chunks = row["prompt"].split(EOC_TOKEN)
            if shots == "0":  # two text-only examples, then the query with its image
                assert len(chunks) == 3 and row["prompt"].count(IMAGE_TOKEN) == 1
                assert chunks[0].startswith("Output: ") and chunks[2] == f"{IMAGE_TOKEN}Output:"
            else:
                assert row["prompt"].count(IMAGE_TOKEN) == 3 and all(c.startswith(IMAGE_TOKEN) for c in chunks)
            assert f"Output: {example.target}{EOC_TOKEN}" not in row["prompt"]  # never its own caption
        # the score is CIDEr (x100) of these predictions
        refs = {e.key: list(e.references) for e in dataset.examples}
        preds = {r["key"]: r["prediction"] for r in rows}
        assert result["results"][shots]["per_seed"]["0"] == pytest.approx(100 * cider(refs, preds))
        row = result["results"][shots]
        values = list(row["per_seed"].values())
        assert row["mean"] == pytest.approx(sum(values) / 2) and row["min"] == min(values)
    again = evaluate(model, "captioning", dataset, **kwargs)
    assert again["results"] == result["results"] and again["examples"] == result["examples"]
    # another seed draws other shots
    other = evaluate(model, "captioning", dataset, **{**kwargs, "shots": [2], "seeds": [1], "max_new_tokens": 1})
    assert [r["prompt"] for r in other["examples"]["2"]] != [r["prompt"] for r in result["examples"]["2"]]


def test_evaluate_rices_uses_nearest_examples_most_similar_last(model, tmp_path):
    dataset = _caption_dataset()
    result = evaluate(model, "captioning", dataset, shots=[1, 3], seeds=[0, 1], rices=True, batch_size=4,
                      cache_dir=str(tmp_path), model_id="tiny-1", num_examples=len(dataset), max_new_tokens=4)
    with torch.no_grad():
        features = model.image_embeddings(torch.stack([model.image_transform(e.image) for e in dataset.examples]))
    neighbours = rices_select(features, features, 3, exclude=[[i] for i in range(len(dataset))])
    for shots in (1, 3):
        for qi, row in enumerate(result["examples"][str(shots)]):
            support = [(dataset.examples[i].target, None) for i in neighbours[qi][-shots:]]
            assert row["prompt"] == build_prompt("captioning", support=support)
        per_seed = result["results"][str(shots)]["per_seed"]
        assert per_seed["0"] == per_seed["1"] and result["results"][str(shots)]["std"] == 0.0
    assert result["max_new_tokens"] == 4
    assert feature_cache_path(tmp_path, model_id="tiny-1", dataset_fingerprint=dataset.fingerprint).is_file()


def test_evaluate_vqa_scores_with_vqa_accuracy(model):
    answers = ["yes", "no", "2", "red"]
    examples = tuple(
        EvalExample(key=f"q{i}", image=_noise_image(100 + i // 2), image_id=f"im{i // 2}", question=f"What is {i}?",
                    target=answers[i % 4], references=(answers[i % 4],) * 7 + ("no",) * 3)
        for i in range(6)
    )
    dataset = EvalDataset(task="vqa", examples=examples, source="memory-vqa")
    result = evaluate(model, "vqa", dataset, shots=[2], seeds=[3], num_examples=6, batch_size=6)
    rows = result["examples"]["2"]
    for row, example in zip(rows, examples):
        assert row["prompt"].endswith(f"{IMAGE_TOKEN}Question: {example.question} Short answer:")
        assert row["prompt"].count("Short answer:") == 3
        other_question = f"Question: What is {int(example.key[1:]) ^ 1}?"  # same image: never a shot
        assert other_question not in row["prompt"]
    expected = vqa_accuracy({e.key: list(e.references) for e in examples}, {r["key"]: r["prediction"] for r in rows})
    assert result["results"]["2"]["mean"] == pytest.approx(expected)
    assert result["max_new_tokens"] == 5


def test_evaluate_rejects_bad_input(model):
    dataset = _caption_dataset(4)
    with pytest.raises(ValueError, match="not vqa"):
        evaluate(model, "vqa", dataset, shots=[0])
    with pytest.raises(ValueError, match="support set too small"):
        evaluate(model, "captioning", dataset, shots=[4], seeds=[0])
    long = EvalDataset(task="captioning", source="long", examples=tuple(
        EvalExample(key=str(i), image=_noise_image(i), target="red " * 200, references=("red",)) for i in range(4)))
    with pytest.raises(ValueError, match="exceeds the language model's context of 512"):
        evaluate(model, "captioning", long, shots=[3], seeds=[0])


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    _noise_image(seed, size=32).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_split(root, name: str, start: int, count: int) -> str:
    out = str(root / name)
    samples = [ImageTextSample(key=f"{name}-{i:04d}", image=_jpeg(i), caption=f"a {COLOURS[i % 4]} circle")
               for i in range(start, start + count)]
    info = write_shard(out, kind="image_text", shard_index=0, samples=samples)
    write_manifest(out, kind="image_text", shards=[info])
    return out


def test_cli_eval_on_image_text_shards_and_coco(model, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt"
    model.save_pretrained(checkpoint)
    heldout = _write_split(tmp_path, "heldout", 0, 5)
    train = _write_split(tmp_path, "train", 100, 6)
    out = tmp_path / "eval_shards.json"
    code = main(["eval", "--checkpoint", str(checkpoint), "--task", "captioning", "--data", heldout,
                 "--support-data", train, "--limit", "3", "--shots", "0,2", "--seeds", "0,1", "--rices",
                 "--max-new-tokens", "3", "--output", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["num_queries"] == 3 and result["support_size"] == 6 and result["rices"] is True
    assert sorted(result["results"]) == ["0", "2"] and set(result["results"]["0"]["per_seed"]) == {"0", "1"}
    assert [r["key"] for r in result["examples"]["2"]] == ["heldout-0000", "heldout-0001", "heldout-0002"]
    assert result["checkpoint"] == str(checkpoint.resolve())
    assert len(list((tmp_path / "cache").glob("rices-*.pt"))) == 2  # support and query features
    table = capsys.readouterr().out
    assert "CIDEr mean" in table and "\n    0 " in table and "\n    2 " in table

    # COCO captions JSON + an image folder; support drawn from the query set itself
    images = tmp_path / "coco"
    images.mkdir()
    coco = {"images": [], "annotations": []}
    for i, (first, second) in enumerate(_captions(4)):
        _noise_image(i).save(images / f"{i}.png")
        coco["images"].append({"id": i, "file_name": f"{i}.png"})
        coco["annotations"] += [{"image_id": i, "caption": first}, {"image_id": i, "caption": second}]
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    code = main(["eval", "--checkpoint", str(checkpoint), "--task", "captioning", "--data",
                 str(tmp_path / "captions.json"), "--images", str(images), "--shots", "1", "--seeds", "0",
                 "--max-new-tokens", "2"])
    assert code == 0
    result = json.loads((checkpoint / "eval_captioning.json").read_text())
    assert result["num_queries"] == 4 and result["support_size"] == 4 and list(result["results"]) == ["1"]
