"""`flamboyance extract PAGE.html --url URL` prints the document as OBELICS-layout JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from flamboyance.cli import main

PAGE = ("<html><head><meta charset='latin-1'><title>Harbour</title></head><body><nav><a href='/'>Home</a></nav>"
        "<article><p>Boats filled the harbour, and the crowd cheered from the quay all afternoon long.</p>"
        "<img data-src='pics/boat.jpg' src='data:image/gif;base64,R0lGOD' alt='A boat'>"
        "<p>Caf\u00e9 owners said it was their busiest day of the year, by far.</p></article></body></html>")


def test_extract_prints_obelics_json(tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_bytes(PAGE.encode("latin-1"))
    assert main(["extract", str(page), "--url", "https://example.org/news/harbour.html"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["url"] == "https://example.org/news/harbour.html"
    assert data["texts"] == ["Boats filled the harbour, and the crowd cheered from the quay all afternoon long.",
                             None, "Caf\u00e9 owners said it was their busiest day of the year, by far."]
    assert data["images"] == [None, "https://example.org/news/pics/boat.jpg", None]
    assert data["metadata"][1] == {"alt": "A boat", "caption": "", "width": None, "height": None}
    general = data["general_metadata"]
    assert (general["title"], general["videos"], general["encoding"]) == ("Harbour", [], "cp1252")


def test_extract_without_url_uses_the_file_uri(tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_bytes(PAGE.encode("latin-1"))
    assert main(["extract", str(page)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["url"] == page.resolve().as_uri()
    assert data["images"][1] == (tmp_path / "pics" / "boat.jpg").resolve().as_uri()


def test_extract_rejection_exits_1_with_the_reason(tmp_path, capsys):
    page = tmp_path / "empty.html"
    page.write_bytes(b"<html><body><script>x()</script></body></html>")
    assert main(["extract", str(page), "--url", "https://example.org/"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no_main_content" in captured.err and str(page) in captured.err


def test_extract_missing_file_exits_2(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing.html")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_console_command_reads_stdin():
    out = subprocess.run([sys.executable, "-m", "flamboyance", "extract", "-", "--url", "https://example.org/a/"],
                         input=PAGE.encode("latin-1"), capture_output=True, check=True, timeout=60).stdout
    assert json.loads(out)["images"] == [None, "https://example.org/a/pics/boat.jpg", None]
