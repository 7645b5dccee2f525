"""Self-contained HTML report: distribution plots and sample documents rendered interleaved.

`write_report(url, out_dir)` writes `out_dir/index.html`, `out_dir/plots/*.png` (matplotlib,
Agg) and `out_dir/samples/*` (the sample images, copied so the folder can be moved or served).
"""

from __future__ import annotations

import html
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from .formats import image_extension
from .source import DecodeError, RawSample, decode_image, iter_shard, locate
from .stats import DISTRIBUTIONS, collect, stats_of


def _plot_distributions(values: dict[str, list[float]], counters: dict[str, dict[str, int]],
                        plots: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    made = []
    for name, vals in sorted(values.items()):
        if not vals:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
        ax.hist(vals, bins=min(40, max(5, len(set(vals)))), color="#d5567e")
        ax.set_title(DISTRIBUTIONS.get(name, name))
        ax.set_ylabel("count")
        fig.tight_layout()
        fig.savefig(plots / f"{name}.png")
        plt.close(fig)
        made.append((f"plots/{name}.png", DISTRIBUTIONS.get(name, name)))
    for name, counts in counters.items():
        if not counts:
            continue
        top = list(counts.items())[:15]
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(top) + 1.2), dpi=80)
        ax.barh([str(k)[:40] for k, _ in top][::-1], [v for _, v in top][::-1], color="#5a8bd5")
        ax.set_title(name)
        fig.tight_layout()
        fig.savefig(plots / f"{name}.png")
        plt.close(fig)
        made.append((f"plots/{name}.png", name))
    return made


def _decodes(images: list[bytes]) -> bool:
    try:
        for data in images:
            decode_image(data)
    except DecodeError:
        return False
    return True


def _sample_documents(url: str, n: int) -> tuple[str, list[RawSample]]:
    location = locate(url)
    picked: list[RawSample] = []
    skipped: Counter = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ref in location.shards:
            for raw in iter_shard(ref, kind=location.kind, skipped=skipped, shard_errors=Counter(),
                                  check_counts=False):
                p = raw.parsed
                media = p.get("images") or p.get("frames") or [p["image"]]
                if _decodes(media):
                    picked.append(raw)
                if len(picked) >= n:
                    return location.kind, picked
    return location.kind, picked


def _save(samples_dir: Path, name: str, data: bytes) -> str:
    path = samples_dir / f"{name}.{image_extension(data)}"
    path.write_bytes(data)
    return f"samples/{path.name}"


def _render(kind: str, raw: RawSample, samples_dir: Path) -> str:
    e = html.escape
    p = raw.parsed
    parts = [f'<article class="doc"><h3>{e(raw.key)}</h3>']
    if kind == "m3w":
        doc = p["document"]
        parts.append(f'<p class="meta">{e(str(doc.get("url") or ""))} &middot; '
                     f'{e(str(doc.get("language") or ""))}</p>')
        images = iter(p["images"])
        index = 0
        for text, image in zip(doc.get("texts") or [], doc.get("images") or []):
            if text is not None:
                parts.append(f"<p>{e(text)}</p>")
            elif image is not None:
                data = next(images, None)
                if data is not None:
                    src = _save(samples_dir, f"{raw.key}_{index:03d}", data)
                    parts.append(f'<figure><img src="{e(src)}" alt="image {index} of {e(raw.key)}">'
                                 f"<figcaption>{e(image)}</figcaption></figure>")
                    index += 1
    elif kind == "image_text":
        src = _save(samples_dir, raw.key, p["image"])
        parts.append(f'<figure><img src="{e(src)}" alt="{e(raw.key)}"></figure><p>{e(p["caption"])}</p>')
        parts.append(f'<p class="meta">{e(str(p["metadata"].get("url") or ""))}</p>')
    else:
        meta = p["metadata"]
        stamps = meta.get("timestamps") or []
        parts.append('<div class="frames">')
        for i, data in enumerate(p["frames"]):
            src = _save(samples_dir, f"{raw.key}_{i:03d}", data)
            t = f"{stamps[i]:.1f}s" if i < len(stamps) else ""
            parts.append(f'<figure><img src="{e(src)}" alt="frame {i}"><figcaption>{t}</figcaption></figure>')
        parts.append(f'</div><p>{e(p["caption"])}</p>')
        parts.append(f'<p class="meta">{e(str(meta.get("url") or ""))} &middot; {meta.get("duration")} s</p>')
    parts.append("</article>")
    return "\n".join(parts)


_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
.doc { border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 1em; margin: 1em 0; }
.doc img { max-width: 320px; min-width: 64px; image-rendering: pixelated; border: 1px solid #888; }
.frames { display: flex; gap: 6px; flex-wrap: wrap; }
.meta { color: #777; font-size: 0.85em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
"""


def read_funnel(url: str) -> dict[str, Any] | None:
    """The ETL funnel (`etl_stats.json`'s `funnel`) of the job that wrote the dataset at `url`:
    found beside the shards, or one folder up (image-text writes `train/` and `heldout/`)."""
    import posixpath

    import fsspec

    if not isinstance(url, str) or url.endswith(".tar") or "{" in url:
        return None
    root = url.rstrip("/")
    for candidate in (root, posixpath.dirname(root)):
        try:
            with fsspec.open(posixpath.join(candidate, "etl_stats.json"), "rb") as handle:
                funnel = json.loads(handle.read()).get("funnel")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(funnel, dict):
            return funnel
    return None


def funnel_html(funnel: dict[str, Any]) -> str:
    """The funnel as an HTML table: each step's total, then its drops by reason."""
    e = html.escape
    rows = []
    for step, value in funnel.items():
        if step == "checks":
            continue
        if isinstance(value, dict):
            rows += [f"<tr><td>&nbsp;&nbsp;{e(step)}: {e(reason)}</td><td>{n:,}</td></tr>"
                     for reason, n in value.items()]
        else:
            rows.append(f"<tr><th>{e(step)}</th><td>{value:,}</td></tr>")
    checks = funnel.get("checks", {})
    verdict = "adds up" if all(checks.values()) else "does NOT add up: " + ", ".join(
        name for name, ok in checks.items() if not ok)
    return f"<h2>ETL funnel ({e(verdict)})</h2><table>{''.join(rows)}</table>"


def write_report(url: str, out_dir: str | Path, *, stats: dict[str, Any] | None = None,
                 num_samples: int = 8, tokenizer: Any | None = None) -> Path:
    """Write plots and `index.html` (summary, plots, `num_samples` documents) to `out_dir`.

    Returns the path of index.html. `out_dir` is a local folder.
    """
    out = Path(out_dir)
    samples_dir = out / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    collected, unit = collect(url, tokenizer=tokenizer)
    stats = stats or stats_of(collected, unit)
    plots = _plot_distributions(collected.values, {"failures": stats["failures"],
                                                   "languages": stats["languages"]}, out / "plots")
    kind, docs = _sample_documents(url, num_samples)
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(stats[k]))}</td></tr>"
                   for k in ("kind", "shards", "rows", "samples", "images", "text_tokens", "token_unit", "bytes")
                   if k in stats)
    funnel = read_funnel(url)
    body = [f"<h1>flamboyance stats: {e(str(url))}</h1>", f"<table>{rows}</table>",
            *([funnel_html(funnel)] if funnel else []),
            "<h2>Distributions</h2>", '<div class="plots">',
            *[f'<img src="{e(src)}" alt="{e(title)}" title="{e(title)}">' for src, title in plots], "</div>",
            f"<h2>Sample documents ({len(docs)})</h2>", *[_render(kind, raw, samples_dir) for raw in docs],
            "<h2>Numbers</h2>", f"<pre>{e(json.dumps(stats, indent=2, sort_keys=True))}</pre>"]
    index = out / "index.html"
    index.write_text(f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>flamboyance stats'
                     f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n",
                     encoding="utf-8")
    return index
