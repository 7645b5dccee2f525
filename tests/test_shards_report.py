"""`flamboyance stats --report`: plots and interleaved sample documents, checked in headless Chromium.

Needs a Chromium binary (Debian package `chromium`); skipped with the reason when there is none.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from flamboyance.cli import main
from shards_fixtures import write_dataset

_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.parametrize("kind", ["m3w", "video_text"])
def test_report_renders_documents_with_every_image_loaded(tmp_path: Path, kind: str) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary on PATH (install the Debian package `chromium`)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing")
    write_dataset(tmp_path / "data", kind, 6, per_shard=4)
    report = tmp_path / "report"
    assert main(["stats", str(tmp_path / "data"), "--report", str(report), "--report-samples", "3"]) == 0
    # 3 documents: m3w documents have 1, 2, 3 images; videos 3 frames each
    expected_images = 6 if kind == "m3w" else 9
    assert len(os.listdir(report / "samples")) == expected_images
    plots = sorted(os.listdir(report / "plots"))
    assert "image_width.png" in plots and "bytes_per_shard.png" in plots
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=_CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto((report / "index.html").as_uri())
            page.wait_for_load_state("load")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.getAttribute('src'), "
                                                      "i.complete ? i.naturalWidth : 0])")
            doc_order = page.eval_on_selector_all(
                "article.doc", "docs => docs.map(d => Array.from(d.querySelectorAll('p:not(.meta), img'))"
                               ".map(n => n.tagName))")
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert len(widths) == expected_images + len(plots)
    assert all(w > 0 for _, w in widths), [src for src, w in widths if w == 0]
    if kind == "m3w":  # text and images interleaved in page order
        assert doc_order == [["P", "IMG"], ["P", "IMG", "P", "IMG"], ["P", "IMG", "P", "IMG", "P", "IMG"]]
    else:
        assert doc_order == [["IMG", "IMG", "IMG", "P"]] * 3
