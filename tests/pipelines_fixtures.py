"""Small literal inputs and a loopback media server for the pipelines tests (test_pipelines_*.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from flamboyance.crawl import PageRecord
from flamboyance.pipelines.common import counters_of
from PIL import Image

_ADJ = ["quiet", "bright", "old", "small", "green", "busy", "gentle", "careful", "warm", "narrow", "early",
        "famous", "simple", "honest", "patient", "curious", "happy", "heavy", "local", "rare", "windy", "silver",
        "modest", "crowded", "distant", "golden", "humble", "lively", "muddy", "proud"]
_NOUN = ["garden", "river", "teacher", "kitchen", "boat", "village", "market", "bridge", "library", "farmer",
         "window", "station", "forest", "painter", "island", "museum", "school", "harbour", "road", "baker",
         "orchard", "lantern", "meadow", "sailor", "tower", "valley", "doctor", "chapel", "mill", "cottage"]
_VERB = ["visited", "repaired", "painted", "watched", "described", "opened", "followed", "cleaned", "built",
         "found", "shared", "remembered", "carried", "planted", "measured", "counted", "crossed", "named",
         "admired", "ignored", "mended", "sketched", "praised", "explored"]
_TEMPLATES = [
    "The {a} {n} {v} the {a} {n} near the {n}.",
    "Nobody expected that a {a} {n} would be {v} by the {n} before {n} season.",
    "In the {a} weeks after that, every {n} in town {v} a {a} {n}, which surprised many of us.",
    "She said the {n} was {a}, but her {n} {v} it anyway.",
    "When the {n} arrived, we {v} the {a} {n} and walked home along the {n}.",
    "It is said that this {a} {n} has {v} more {n}s than any other {n} here.",
    "Our {n} {v} them with {a} care, because the {n} had been {a} for years.",
    "Later, two {a} {n}s {v} a small {n} on the hill.",
    "Why would anyone call the {n} {a}?",
    "My {n} once told me about a {a} {n} from the {n}.",
    "They {v} it twice; then the {a} {n} closed for the winter.",
    "Few visitors know how {a} the old {n} looks at dawn.",
    "After lunch the {n} {v} our {n}, and everyone laughed.",
]


def prose(seed: int, sentences: int = 6) -> str:
    """Deterministic, varied English prose that passes the document filters (stop words,
    punctuation, repetition)."""
    rng = random.Random(seed)
    out = []
    templates = []
    while len(templates) < sentences:
        templates += rng.sample(_TEMPLATES, len(_TEMPLATES))
    for template in templates[:sentences]:
        while "{" in template:
            slot = template[template.index("{"):template.index("}") + 1]
            words = {"{a}": _ADJ, "{n}": _NOUN, "{v}": _VERB}[slot]
            template = template.replace(slot, rng.choice(words), 1)
        out.append(template)
    return " ".join(out)


def article_html(title: str, paragraphs: list[str], images: list[tuple[str, str]]) -> bytes:
    """An article page: paragraphs with one figure (src, caption) after each of the first paragraphs."""
    blocks = []
    for i, paragraph in enumerate(paragraphs):
        blocks.append(f"<p>{paragraph}</p>")
        if i < len(images):
            src, caption = images[i]
            blocks.append(f'<figure><img src="{src}" width="300" height="200" alt="{caption}">'
                          f"<figcaption>{caption}</figcaption></figure>")
    body = "\n".join(blocks)
    return (f"<!DOCTYPE html><html><head><title>{title}</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<article><h1>{title}</h1>{body}</article><footer>Contact us</footer></body></html>").encode()


def page(url: str, body: bytes, *, fetch_time: str = "2024-01-01T00:00:00Z", offset: int = 0) -> PageRecord:
    return PageRecord(url=url, fetch_time=fetch_time, status=200, headers={"content-type": "text/html"},
                      content_type="text/html", body=body, warc_filename="test.warc.gz", warc_offset=offset)


def picture(width: int, height: int, *, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A two-colour image (not single-colour, so it passes the download filters)."""
    image = Image.new("RGB", (width, height), (20 + seed * 10 % 200, 40, 200))
    for x in range(width // 2):
        for y in range(0, height, 3):
            image.putpixel((x, y), (250, 250 - seed % 50, 10))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


class MediaServer:
    """A loopback HTTP server with fixed routes: path -> (status, headers, body). A route may fail
    with 503 for its first `fail_first[path]` requests. `hits` counts requests per path."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]],
                 fail_first: dict[str, int] | None = None) -> None:
        self.routes, self.fail_first = routes, dict(fail_first or {})
        self.hits: Counter = Counter()
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with server_self.lock:
                    server_self.hits[self.path] += 1
                    failing = server_self.hits[self.path] <= server_self.fail_first.get(self.path, 0)
                status, headers, body = server_self.routes.get(self.path, (404, {}, b"not found"))
                if failing:
                    status, headers, body = 503, {"Retry-After": "0"}, b"busy"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def make_pipeline() -> TestPipeline:
    """A single-process TestPipeline (fast; the CLI tests use the multi-process default)."""
    return TestPipeline(options=PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"]),
                        blocking=False)


def run(pipeline: TestPipeline, namespace: str) -> dict[str, int]:
    """Run a built pipeline and return its counters of `namespace` without the namespace prefix."""
    result = pipeline.run()
    result.wait_until_finish()
    return {k.split(":", 1)[1]: v for k, v in counters_of(result, namespace).items()}


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def shard_hashes(root: Path) -> dict[str, str]:
    """sha256 of every tar/parquet/stats/manifest file under a dataset root."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".tar", ".parquet", ".json")
            and p.name != "etl_stats.json"}
