"""Decoding page bytes: BOM, HTTP charset, <meta charset>, UTF-8, detector fallback, bad bytes."""

from __future__ import annotations

import codecs

from flamboyance.preprocess import extract_document
from flamboyance.preprocess.html_text import decode_html, header_charset, meta_charset

URL = "http://example.com/page.html"
SENTENCE = "Le café crème coûte cher à Noël, déjà naïf et sûr."


def page(meta: str = "") -> str:
    return f"<html><head>{meta}<title>t</title></head><body><article><p>{SENTENCE}</p></article></body></html>"


def test_utf8_bom_wins_over_a_wrong_meta():
    data = codecs.BOM_UTF8 + page('<meta charset="iso-8859-1">').encode("utf-8")
    assert decode_html(data) == (page('<meta charset="iso-8859-1">'), "utf-8")
    assert extract_document(data, URL).text() == SENTENCE


def test_utf16_bom():
    data = codecs.BOM_UTF16_LE + page().encode("utf-16-le")
    assert extract_document(data, URL).text() == SENTENCE
    assert extract_document(data, URL).metadata["encoding"] == "utf-16-le"


def test_http_header_charset_beats_meta():
    data = page('<meta charset="utf-8">').encode("cp1252")
    doc = extract_document(data, URL, headers={"Content-Type": "text/html; charset=Windows-1252"})
    assert doc.text() == SENTENCE
    assert doc.metadata["encoding"] == "cp1252"


def test_meta_charset_and_http_equiv():
    assert extract_document(page('<meta charset="ISO-8859-1">').encode("latin-1"), URL).text() == SENTENCE
    legacy = '<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">'
    russian = "<html><head>" + legacy + "</head><body><p>Привет, мир! Это статья о погоде в Москве.</p></body></html>"
    assert extract_document(russian.encode("koi8-r"), URL).text() == "Привет, мир! Это статья о погоде в Москве."


def test_undeclared_utf8_decodes_without_the_detector():
    assert decode_html(page().encode("utf-8")) == (page(), "utf-8")


def test_undeclared_legacy_encoding_falls_back_to_the_detector():
    text = ("<html><body><p>" + "В начале было слово, и слово было у Бога. Президент России посетил новую "
            "школу в Москве в понедельник. " * 5 + "</p></body></html>")
    decoded, encoding = decode_html(text.encode("windows-1251"))
    assert decoded == text
    assert encoding == "cp1251"


def test_wrong_declaration_falls_back_to_utf8():
    data = page('<meta charset="ascii">').encode("utf-8")  # ascii is read as cp1252, which fails on 0x81
    data = data.replace("crème".encode(), "cr\u0101me".encode())  # \u0101 = c4 81 in UTF-8
    assert extract_document(data, URL).text() == SENTENCE.replace("crème", "cr\u0101me")


def test_invalid_bytes_never_crash():
    data = b"<html><body><p>Valid start \xff\xfe\x80 then \xc3( broken \xed\xa0\x80 surrogate, and more words.</p></body></html>"
    text = extract_document(data, URL).text()
    assert text.startswith("Valid start ")
    assert text.endswith(" surrogate, and more words.")


def test_charset_helpers():
    assert header_charset({"content-type": 'text/html; charset="UTF-8"'}) == "UTF-8"
    assert header_charset({"Content-Type": "text/html"}) is None
    assert header_charset(None) is None
    assert meta_charset(b"<head><meta content='text/html; charset=gbk' http-equiv='Content-Type'>") == "gbk"
    assert meta_charset(b"<head><title>no charset</title>") is None


def test_utf8_with_a_few_broken_bytes_stays_utf8():
    body = ("Zürich, Genève und Köln: schöne Städte. " * 20).encode("utf-8")
    data = b"<html><body><p>" + body + b"\xe9 broken byte</p></body></html>"
    text, encoding = decode_html(data)
    assert encoding == "utf-8"
    assert text.count("\ufffd") == 1
    assert "Zürich, Genève und Köln" in text
