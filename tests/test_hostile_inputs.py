"""Hostile inputs outside the crawler: charset labels, decompression bombs, broken WARC bodies,
tars and parquets, bad training configs and damaged datasets. Each asserts the exact outcome:
a document, a counted skip, or a one-line error with a non-zero exit."""

from __future__ import annotations

import collections
import gzip
import json
import struct
import zlib
from pathlib import Path

import pytest
from flamboyance.cli import main
from flamboyance.crawl import read_warc
from flamboyance.pipelines.config import DownloadConfig
from flamboyance.pipelines.media import Fetched, ImageDownloader
from flamboyance.preprocess import extract_document
from flamboyance.preprocess.html_text import decode_html
from PIL import Image
from shards_fixtures import write_dataset
from test_crawl_warc import http_response, warc_record

URL = "http://hostile.example/"
TEXT = "Le café crème coûte cher à Noël, and this paragraph has enough words to be kept."
NOT_PAGE_ENCODINGS = ["base64", "hex", "zlib", "rot13", "bz2", "uu", "undefined", "punycode", "quopri",
                      "idna", "utf-7", "unicode_escape", "raw_unicode_escape", "x\x00", "utf-8\x00evil",
                      "no-such-codec", "cp037"]


def page(meta: str = "") -> bytes:
    return f"<html><head>{meta}</head><body><p>{TEXT}</p></body></html>".encode()


@pytest.mark.parametrize("label", NOT_PAGE_ENCODINGS)
@pytest.mark.parametrize("where", ["meta", "header"])
def test_charset_labels_that_are_no_page_encoding_fall_back(label, where):
    if where == "meta":
        doc = extract_document(page(f'<meta charset="{label}">'), URL)
    else:
        doc = extract_document(page(), URL, headers={"Content-Type": f"text/html; charset={label}"})
    assert doc.text() == TEXT
    assert doc.metadata["encoding"] == "utf-8"


def test_real_encodings_are_still_honoured():
    latin = page().decode().encode("cp1252")
    for label in ("iso-8859-1", "windows-1252", "latin1"):
        assert extract_document(latin, URL, headers={"content-type": f"text/html; charset={label}"}).text() == TEXT
    utf16 = page().decode().encode("utf-16-le")
    assert decode_html(utf16, {"content-type": "text/html; charset=utf-16le"}) == (page().decode(), "utf-16-le")


def test_extract_cli_with_a_rot13_content_type(tmp_path, capsys):
    path = tmp_path / "p.html"
    path.write_bytes(page())
    assert main(["extract", str(path), "--url", "http://x/", "--content-type", "text/html; charset=rot13"]) == 0
    assert json.loads(capsys.readouterr().out)["texts"] == [TEXT]


def test_gzip_bomb_body_in_a_warc_is_a_counted_skip(tmp_path):
    bomb = gzip.compress(b"<p>" + b"\x00" * (40 << 20), compresslevel=9)  # 40 MB from ~40 kB
    block = http_response(bomb, headers={"Content-Encoding": "gzip"})
    good = warc_record("http://h.example/ok", http_response(page()))
    path = tmp_path / "bomb.warc"
    path.write_bytes(warc_record("http://h.example/bomb", block) + good)
    skipped: collections.Counter = collections.Counter()
    assert [r.url for r in read_warc(str(path), skipped=skipped)] == ["http://h.example/ok"]
    assert skipped == collections.Counter({"body_too_large": 1})


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` and holds one tiny IDAT: cheap to make, a bomb to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("scale, reason", [(1.5, "decompression_bomb"), (3.0, "decompression_bomb"),
                                           (0.0001, "decode_error")])
def test_image_decompression_bombs_are_counted_as_such(scale, reason):
    side = int((Image.MAX_IMAGE_PIXELS * scale) ** 0.5) + 1
    result = ImageDownloader(config=DownloadConfig()).finish(Fetched(url="http://h/i.png", data=png_header(side, side)))
    assert result.reason == reason  # the small one is just a truncated PNG


# --- flamboyance train: one line on stderr, rc 2, before any work --------------------------------

def train(tmp_path: Path, capsys, yaml_text: str) -> tuple[int, str]:
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    rc = main(["train", "--config", str(config)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return rc, err.strip()


def shards(tmp_path: Path, n: int = 4) -> Path:
    root = tmp_path / "m3w"
    write_dataset(root, "m3w", n, per_shard=2)
    return root


def test_train_yaml_syntax_error(tmp_path, capsys):
    rc, err = train(tmp_path, capsys, "model:\n  kind: [tiny\n")
    assert rc == 2
    assert err == (f"flamboyance train: {tmp_path / 'run.yaml'}: not valid YAML: expected ',' or ']', "
                   "but got '<stream end>' at line 3, column 1")


@pytest.mark.parametrize("section, typo", [("model.tiny", "num_layerz"), ("model.flamingo", "cross_attn_evry")])
def test_train_unknown_model_keys_fail_before_any_work(tmp_path, capsys, section, typo):
    kind = section.split(".")[1]
    extra = "    language_model: gpt2\n    vision_encoder: clip\n" if kind == "flamingo" else ""
    text = f"model:\n  kind: {kind}\n  {kind}:\n{extra}    {typo}: 2\ndata:\n  m3w:\n    urls: [{shards(tmp_path)}]\n"
    rc, err = train(tmp_path, capsys, text)
    assert rc == 2
    assert err.startswith(f"flamboyance train: {section}: unknown key(s) ['{typo}']; known: [")
    assert not (tmp_path / "runs").exists()


def test_train_unknown_nested_key(tmp_path, capsys):
    rc, err = train(tmp_path, capsys, f"data:\n  m3w:\n    urls: [{shards(tmp_path)}]\n    batch_sise: 3\n")
    assert rc == 2
    assert "data.m3w: unknown key(s) ['batch_sise']" in err


def test_train_empty_shard_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = train(tmp_path, capsys, f"data:\n  m3w:\n    urls: [{tmp_path / 'empty'}]\n")
    assert rc == 2
    assert err == (f"flamboyance train: data.m3w.urls ['{tmp_path / 'empty'}']: {tmp_path / 'empty'}: "
                   "neither a manifest.json nor any *.tar shard found")


def test_train_all_corrupt_shards(tmp_path, capsys):
    root = shards(tmp_path)
    for tar in root.glob("*.tar"):
        tar.write_bytes(b"\x17" * tar.stat().st_size)
    rc, err = train(tmp_path, capsys, f"data:\n  m3w:\n    urls: [{root}]\n")
    assert rc == 2
    assert err == (f"flamboyance train: data.m3w.urls ['{root}']: none of the 2 shard(s) is a readable tar "
                   f"(first: {root}/00000.tar: bad checksum field {bytes([0x17] * 8)!r} in tar header)")


def test_train_manifest_with_no_shards(tmp_path, capsys):
    root = shards(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "shards": []}))
    rc, err = train(tmp_path, capsys, f"data:\n  m3w:\n    urls: [{root}]\n")
    assert rc == 2
    assert err == f"flamboyance train: data.m3w.urls ['{root}']: the dataset lists no shards"


# --- flamboyance stats --------------------------------------------------------------------------

def test_stats_flags_a_truncated_shard_without_verify(tmp_path, capsys):
    root = shards(tmp_path, 6)
    tar = root / "00001.tar"
    size = tar.stat().st_size
    tar.write_bytes(tar.read_bytes()[:4096])
    assert main(["stats", str(root)]) == 1
    err = capsys.readouterr().err
    assert err == f"MISMATCH {root}/00001.tar: 4096 bytes, manifest says {size} bytes (truncated or replaced; run with --verify)\n"


def test_stats_scans_the_tar_of_a_corrupt_parquet(tmp_path, capsys):
    root = tmp_path / "it"
    write_dataset(root, "image_text", 7, per_shard=3)
    parquet = root / "00000.parquet"
    parquet.write_bytes(b"PAR1 not really" + parquet.read_bytes()[300:])
    assert main(["stats", str(root), "--json", str(tmp_path / "s.json")]) == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert (stats["samples"], stats["method"]) == (7, {"tar scan": 1, "parquet": 2})
    assert stats["unreadable"] == {"corrupt_parquet": 1}
