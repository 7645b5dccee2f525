"""Benchmarks for flamboyance.pipelines (not tests): prints a table and writes JSON.

    .venv/bin/python bench/bench_pipelines.py [--out bench/out/pipelines.json] [--pages 400] [--quick]
        [--throughput-pages 10000] [--shared ../shared] [--real-copies 60] [--memory-100x]
        [--skew-pages 1000] [--cost-pages 400] [--sections scaling,memory,real,skew,cost]

1. Throughput (pages/s, on a `--throughput-pages` input, about 10,500 pages, so that worker
   start-up and the latency of the small dedup stages are amortised) of the m3w job
   without downloads (read WARC -> extract -> filters -> dedup -> frequency filters) on the
   DirectRunner with 2 worker processes, against a single process running only
   `extract_document` over the same pages. Scaling efficiency = job pages/s / (2 x
   single-process pages/s); target >= 0.7. Also against a single process doing the job's whole
   per-page work (extract + filters + MinHash) and against the job on 1 worker.
2. Peak memory (RSS of the whole process tree: runner + workers) of the job on 2 workers when
   the input grows 10x; target: flat. The runner's and the workers' peaks are recorded apart:
   the DirectRunner (FnApiRunner) keeps every shuffled PCollection in memory and hands each
   stage's input to the workers as one partition per worker (one bundle). The job shuffles only
   its small dedup records (documents wait in staging files), so what still grows is those. The
   job runs as `flamboyance etl` runs it (`run_and_report`), with `limit_heap_growth`'s malloc
   settings: without them glibc keeps the memory of freed gRPC and shuffle buffers, and the peak
   grows by several kilobytes per document.
3. The throughput of 1. again on real web pages, when the shared page sets are present
   (`<shared>/data/readability-dev`, `articles-dev`: read, never copied): each page `--real-copies`
   times under distinct URLs (60 by default: 11,760 pages, about the size of the sample-web
   throughput input, so worker start-up and the dedup stages are amortised alike; copies are
   exact duplicates: dedup removes them, after they were read, extracted and filtered). The
   sample web's pages are small and simple (extraction about 0.8 ms a page against about 5 ms
   for a real page), so on them the job's fixed per-page work beyond extraction weighs several
   times more than on real pages.
4. Skew (`make_skew_warcs`): a skewed input (85% of the pages near-copies of one template page,
   with text of their own: about 0.64 Jaccard between copies, below the near-duplicate threshold
   but sharing LSH buckets; on one domain; one image on every page) against an unskewed input of the same size
   (different articles on 64 domains, an image of their own), at N and 4N pages, no downloads:
   pages/s skewed / unskewed (target >= 0.75), and the job's work counters (`work` in
   etl_stats.json: near-dedup comparisons, largest side input, largest group held in memory;
   "n/a" where the job does not report them) from N to 4N pages (target: each grows <= 4x).
5. Cost (`stage_costs`): CPU seconds per page of each stage (read + extract + filter, dedup,
   download, write; the job's whole process tree, fixed start-up excluded) on the sample web
   with its images downloaded from 127.0.0.1, projected to the CPU-hours of one 3e9-page Common
   Crawl snapshot, also with extraction at the cost of the shared real pages when present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BASE_URL = "http://bench.invalid"


def make_warcs(root: Path, *, num_pages: int, files: int, base_url: str = BASE_URL) -> tuple[str, int]:
    """Write the sample web's crawlable pages (seed 0, `num_pages` articles) into `files` WARCs,
    as fetched from `base_url` (where the sample web is served when the job downloads media)."""
    from flamboyance.crawl.sample_web import SampleWeb

    web = SampleWeb(seed=0, num_pages=num_pages)
    base_url = base_url.rstrip("/")
    pages = []
    for url in web.truth(base_url).crawlable:
        status, headers, body = web.response(url[len(base_url):])
        pages.append((url, status, headers, body))
    return _write_warcs(root, "bench", pages, files=files), len(pages)


def _write_warcs(root: Path, prefix: str, pages: list[tuple[str, int, dict[str, str], bytes]], *, files: int) -> str:
    """(url, status, headers, body) responses into `files` WARCs (round robin); returns their glob."""
    from urllib.parse import urlsplit

    from flamboyance.crawl.warc import WarcWriter, build_response_bytes

    root.mkdir(parents=True, exist_ok=True)
    writers = [open(root / f"{prefix}-{i:03d}.warc.gz", "wb") for i in range(files)]  # noqa: SIM115
    try:
        for n, (url, status, headers, body) in enumerate(pages):
            parts = urlsplit(url)
            request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
            WarcWriter(writers[n % files]).write_exchange(
                url=url, request=request, response=build_response_bytes(status, "OK", headers, body),
                payload=body, date=f"2024-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z")
    finally:
        for handle in writers:
            handle.close()
    return str(root / f"{prefix}-*.warc.gz")


SKEW_SHARE = 0.85
"""Share of the skewed input's pages that are near-copies of one template page, on one domain."""
SKEW_HOSTS = 64
"""Domains the other pages (and every page of the unskewed input) are spread over."""
SKEW_OWN_TEXT = 0.1
"""Words of its own a page adds to its article, as a share of the template article's words: at
0.1 the template copies are near-duplicates of each other (the issue's skewed input: most pages
near-copies of one template, a templated site whose pages differ by a few lines)."""
SKEW_STRESS_OWN_TEXT = 0.35
"""The stress variant: two template copies share about 64% of their word 5-grams, below the
near-duplicate threshold (0.7) yet often in the same LSH bands, so nearly every comparison fails
(and the copies' own text, drawn from the sample web's finite sentence pool, makes more of them
near-duplicates as the input grows: 129 -> 768 dropped from 1,000 -> 4,000 pages)."""


def make_skew_warcs(root: Path, *, num_pages: int, skewed: bool, files: int,
                    own_text: float = SKEW_OWN_TEXT) -> tuple[str, int]:
    """`num_pages` article pages of the sample web (seed 1), each with text of its own (from the
    articles of another sample web, seed 2, `own_text` of the template's length) and one
    image more.

    Unskewed: every page a different article, on `SKEW_HOSTS` domains, each with its own image.
    Skewed: `SKEW_SHARE` of the pages are the same article (the template) with their own text
    and image, on one domain; the others different articles on `SKEW_HOSTS` domains; every page
    also carries the same banner image."""
    import re

    from flamboyance.crawl.sample_web import SampleWeb

    base = "http://sample.invalid"
    web, other = SampleWeb(seed=1, num_pages=num_pages), SampleWeb(seed=2, num_pages=num_pages)
    articles = [url[len(base):] for url in web.truth(base).articles]
    words_of = [re.findall(r"<p>([^<]{200,})</p>", other.response(url[len(base):])[2].decode())
                for url in other.truth(base).articles]
    template = web.response(articles[0])[2].decode()
    own_words = int(own_text * sum(len(p.split()) for p in re.findall(r"<p>([^<]{200,})</p>", template)))
    copies = int(num_pages * SKEW_SHARE) if skewed else 0
    pages = []
    for n in range(num_pages):
        path = articles[0] if n < copies else articles[n - copies + (1 if copies else 0)]
        status, headers, body = web.response(path)
        own = " ".join(" ".join(words_of[n]).split()[:own_words])
        # an image of its own (template copies are not one image set), and the banner on every page
        images = [f"/extra/{n}.png"] + (["/static/banner.png"] if skewed else [])
        extra = (f"<p>{own}</p>" + "".join(
            f'<figure><img src="{src}" width="400" height="300" alt="The front of the office">'
            f"<figcaption>The front of the office.</figcaption></figure>" for src in images)).encode()
        body = body.replace(b'<div class="entry-content">', b'<div class="entry-content">' + extra, 1)
        host = "big.invalid" if n < copies else f"site-{n % SKEW_HOSTS}.invalid"
        pages.append((f"http://{host}{path[:-5]}-{n}.html", status, headers, body))
    return _write_warcs(root, "skewed" if skewed else "unskewed", pages, files=files), len(pages)


def make_real_warcs(root: Path, *, shared: Path, copies: int, files: int) -> tuple[str, int] | None:
    """Write the shared real pages, `copies` times each under distinct URLs, into `files` WARCs
    (None when the page sets are absent)."""
    from bench_extract import load_pages

    pages, source = load_pages(shared, None)
    if source == "synthetic":
        return None
    responses = []
    for copy in range(copies):
        for index, (html, _url) in enumerate(pages):
            body = html.encode("utf-8")
            headers = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))}
            responses.append((f"http://real.invalid/site-{index % 7}/copy-{copy}/page-{index}.html", 200, headers,
                              body))
    return _write_warcs(root, "real", responses, files=files), len(responses)


def single_process(glob: str, *, judge: bool) -> dict:
    """pages/s of `read_warc` + `extract_document` in this process (the issue's baseline); with
    `judge`, also the rest of the per-page work of the job (filters incl. language id, MinHash)."""
    from flamboyance.crawl import read_warc
    from flamboyance.pipelines.common import expand_glob
    from flamboyance.preprocess.dedup import minhash_signature
    from flamboyance.preprocess.extract import ExtractionError, extract_document
    from flamboyance.preprocess.filters import apply_filters
    from flamboyance.preprocess.language import detect_language

    detect_language("warm up the language model")  # loaded once per process, like a worker's setup
    pages = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for url in expand_glob(glob):
        for page in read_warc(url):
            pages += 1
            try:
                doc = extract_document(page.body, page.url, headers=page.headers)
            except ExtractionError:
                continue
            if judge:
                kept, _ = apply_filters(doc)
                if kept is not None:
                    minhash_signature(kept.text())
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"pages": pages, "seconds": round(seconds, 3), "pages_per_s": round(pages / seconds, 1),
            "cpu_s": round(cpu, 3), "cpu_s_per_page": cpu / pages}


def _tree_rss(pid: int) -> tuple[int, int, int]:
    """RSS bytes of `pid` (the runner) and of all its descendants (the SDK workers), and how many
    descendant processes hold memory (the SDK worker processes actually running), from /proc."""
    root, total, workers, stack = 0, 0, 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
                        total += rss
                        root = rss if current == pid else root
                        # shells and launchers stay small; an SDK worker imports Beam (> 50 MB)
                        workers += current != pid and rss > 50 * 2**20
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    stack += [int(c) for c in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return root, total - root, workers


def _tree_cpu(pid: int, seen: dict[int, float]) -> None:
    """Record in `seen` the CPU seconds (user + system) so far of `pid` and of its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            seen[current] = max(seen.get(current, 0.0), (int(fields[11]) + int(fields[12])) / tick)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    stack += [int(c) for c in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue


WORK_KEYS = ("near_dedup_comparisons", "largest_side_input_elements", "largest_group_in_memory")
"""The job's work counters (`work` in etl_stats.json): what must not grow faster than the input."""


def run_job(glob: str, *, workers: int, output: Path, download: bool = False) -> dict:
    """Run the m3w job (by default without downloads) in a child process: wall time, peak tree
    RSS, CPU seconds of the whole process tree, and the `work` counters of its etl_stats.json."""
    import resource

    cmd = [sys.executable, __file__, "--child", "--glob", glob, "--workers", str(workers), "--output", str(output)]
    cmd += ["--download"] if download else []
    start = time.perf_counter()
    children_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = {"total": 0, "runner": 0, "workers": 0, "processes": 0}
    cpu_seen: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            _tree_cpu(proc.pid, cpu_seen)
            runner, workers, processes = _tree_rss(proc.pid)
            peak["total"] = max(peak["total"], runner + workers)
            peak["runner"] = max(peak["runner"], runner)
            peak["workers"] = max(peak["workers"], workers)
            peak["processes"] = max(peak["processes"], processes)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate(timeout=3600)
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark job failed ({proc.returncode}): {stdout[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # every process of the tree that its parent waited for, or (the larger) what /proc showed
    cpu = max(after.ru_utime + after.ru_stime - children_cpu.ru_utime - children_cpu.ru_stime,
              sum(cpu_seen.values()))
    child = json.loads(stdout.strip().splitlines()[-1])
    pages = child["counters"].get("warc.pages", 0)
    work = json.loads((output / "etl_stats.json").read_text()).get("work") or {}
    return {"workers": workers, "pages": pages, "documents": child["counters"].get("documents.after_dedup", 0),
            "cpu_s": round(cpu, 3), "cpu_s_per_page": cpu / max(pages, 1),
            "work": {key: work.get(key) for key in WORK_KEYS}, "counters": child["counters"],
            "seconds": round(seconds, 3), "pipeline_seconds": child["seconds"],
            "pages_per_s": round(pages / child["seconds"], 1), "peak_rss_mb": round(peak["total"] / 2**20, 1),
            "peak_runner_rss_mb": round(peak["runner"] / 2**20, 1),
            "peak_workers_rss_mb": round(peak["workers"] / 2**20, 1),
            "sdk_worker_processes": peak["processes"]}


def work_growth(small: dict, large: dict) -> dict:
    """How much each work counter grew from the `small` run to the `large` one (None where the
    job does not report it)."""
    return {key: round(large[key] / small[key], 3) if isinstance(small[key], int | float) and small[key] > 0
            and isinstance(large[key], int | float) else None for key in WORK_KEYS}


def skew_stress_runs(root: Path, *, pages: int, files: int, own_text: float = SKEW_STRESS_OWN_TEXT) -> dict:
    """The skewed input with `own_text` (copies close to, but below, the near-duplicate threshold)
    at `pages` and 4 x `pages`: how each work counter grows (reported, not a target: see
    `SKEW_STRESS_OWN_TEXT`)."""
    out: dict = {"pages": pages, "own_text": own_text}
    for size, n in (("1x", pages), ("4x", 4 * pages)):
        glob, _ = make_skew_warcs(root / f"stress_{size}", num_pages=n, skewed=True, files=files, own_text=own_text)
        out[f"skewed_{size}"] = run_job(glob, workers=2, output=root / f"out-stress-{size}")
    out["work_growth_4x"] = work_growth(out["skewed_1x"]["work"], out["skewed_4x"]["work"])
    out["near_duplicates"] = [out[f"skewed_{size}"]["counters"].get("dedup.near_duplicate", 0) for size in ("1x", "4x")]
    return out


def skew_runs(root: Path, *, pages: int, files: int, own_text: float = SKEW_OWN_TEXT) -> dict:
    """The job (no downloads, 2 workers) on the unskewed and the skewed input of `pages` and of
    4 x `pages` pages: pages/s skewed / unskewed at each size (target >= 0.75), and how much each
    work counter grows from `pages` to 4 x `pages` (target <= 4x; None where the job does not
    report the counter). `own_text` below about 0.2 makes the template copies near-duplicates of
    each other (a templated site whose pages differ by a few lines): one cluster of 0.85 N pages."""
    out: dict = {"pages": pages, "skew_share": SKEW_SHARE, "own_text": own_text}
    for size, n in (("1x", pages), ("4x", 4 * pages)):
        for skewed in (False, True):
            name = f"{'skewed' if skewed else 'unskewed'}_{size}"
            glob, _ = make_skew_warcs(root / name, num_pages=n, skewed=skewed, files=files, own_text=own_text)
            out[name] = run_job(glob, workers=2, output=root / f"out-{name}")
        out[f"pages_per_s_ratio_{size}"] = round(out[f"skewed_{size}"]["pages_per_s"]
                                                 / out[f"unskewed_{size}"]["pages_per_s"], 3)
    out["pages_per_s_ratio"] = min(out["pages_per_s_ratio_1x"], out["pages_per_s_ratio_4x"])
    for kind in ("skewed", "unskewed"):
        out[f"work_growth_4x_{kind}"] = work_growth(out[f"{kind}_1x"]["work"], out[f"{kind}_4x"]["work"])
    return out


CC_SNAPSHOT_PAGES = 3e9
"""Pages of one Common Crawl snapshot (the cost projection)."""


def _rewrite_cpu(shards: Path, output: Path) -> tuple[float, int]:
    """CPU seconds of writing the samples of the shards under `shards` again (tar, parquet, stats)
    with `shards.writer`, read into memory first; and the number of samples."""
    from flamboyance.shards import open_dataset
    from flamboyance.shards.writer import write_shard

    samples = list(open_dataset(str(shards), decode=False, shuffle_shards=False, split_by_node=False,
                                split_by_worker=False))
    start = time.process_time()
    write_shard(str(output), kind="m3w", shard_index=0, samples=samples)
    return time.process_time() - start, len(samples)


def stage_costs(root: Path, *, pages: int, files: int) -> dict:
    """CPU seconds per input page of each stage of the m3w job, on the sample web's pages with
    their images downloaded from it (served here, on 127.0.0.1; the server's CPU is not counted):

    - read + extract + filter (+ MinHash): the per-page work alone, in one process;
    - dedup (+ frequency filters, + the runner's shuffles): the job without downloads, less its
      fixed start-up (the same job on a 2-article input) and less the first stage;
    - download (+ resize, joins, assembly): the full job, less its fixed start-up, less the job
      without downloads (less its start-up) and less the write stage;
    - write: `write_shard` of the job's samples again, in one process.

    CPU is that of the job's whole process tree (runner + SDK workers)."""
    from flamboyance.crawl.sample_web import SampleWeb, serve_sample_web

    with serve_sample_web(SampleWeb(seed=0, num_pages=pages)) as base:
        glob, n = make_warcs(root / "cost", num_pages=pages, files=files, base_url=base)
        tiny, _ = make_warcs(root / "cost-tiny", num_pages=2, files=1)
        read = single_process(glob, judge=True)
        startup = run_job(tiny, workers=2, output=root / "cost-tiny-out")["cpu_s"]
        startup_full = run_job(tiny, workers=2, output=root / "cost-tiny-full", download=True)["cpu_s"]
        dedup = run_job(glob, workers=2, output=root / "cost-dedup")
        full = run_job(glob, workers=2, output=root / "cost-full", download=True)
    write_cpu, samples = _rewrite_cpu(root / "cost-full", root / "cost-rewrite")
    without_download = dedup["cpu_s"] - startup
    stages = {"read_extract_filter": read["cpu_s"],
              "dedup": max(0.0, without_download - read["cpu_s"]),
              "download": max(0.0, full["cpu_s"] - startup_full - without_download - write_cpu),
              "write": write_cpu}
    per_page = {stage: cpu / n for stage, cpu in stages.items()}
    total = sum(per_page.values())
    return {"pages": n, "samples_written": samples, "images_downloaded": full["counters"].get("image.downloaded", 0),
            "startup_cpu_s": startup, "startup_cpu_s_with_download": startup_full,
            "job_no_download": dedup, "job_full": full,
            "cpu_s_per_page": per_page, "cpu_s_per_page_total": total,
            "cc_snapshot_cpu_hours": {stage: round(v * CC_SNAPSHOT_PAGES / 3600) for stage, v in per_page.items()}
            | {"total": round(total * CC_SNAPSHOT_PAGES / 3600)}}


def _child(args: argparse.Namespace) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from flamboyance.pipelines.cli import beam_args
    from flamboyance.pipelines.common import run_and_report
    from flamboyance.pipelines.config import DownloadConfig, M3WConfig
    from flamboyance.pipelines.m3w import build_m3w

    mode = "multi_processing" if args.workers > 1 else "in_memory"
    # the options `flamboyance etl` runs with (its LocalRunner), with this run's worker count
    options = PipelineOptions(beam_args([f"--direct_num_workers={args.workers}", f"--direct_running_mode={mode}",
                                         "--sdk_harness_log_level_overrides={}"]))
    pipeline = beam.Pipeline(options=options)
    # with downloads: from the sample web served by the parent on 127.0.0.1
    config = M3WConfig(download=DownloadConfig(allow_private_hosts=True, retries=0))
    build_m3w(pipeline, inputs=[args.glob], output=args.output, config=config, download=args.download)
    # run as `flamboyance etl m3w` runs a job (`limit_heap_growth` included); the summary it
    # prints comes before the JSON line the parent reads
    stats = run_and_report(pipeline, output=args.output, namespace="m3w")
    print(json.dumps({"seconds": stats["seconds"], "counters": stats["counters"]}))


SECTIONS = ("scaling", "memory", "real", "skew", "cost")


def _print_skew(r: dict) -> None:
    print(f"skew ({r['skew_share']:.0%} of pages near-copies of one page on one domain, one image on every page, "
          f"own text {r.get('own_text', SKEW_OWN_TEXT)} of the template's):")
    print(f"  {'input':<22} {'pages':>7} {'pages/s':>9}  " + "  ".join(f"{k:>28}" for k in WORK_KEYS))
    for name in ("unskewed_1x", "skewed_1x", "unskewed_4x", "skewed_4x"):
        run = r[name]
        work = "  ".join(f"{'n/a' if run['work'][k] is None else run['work'][k]:>28}" for k in WORK_KEYS)
        print(f"  {name:<22} {run['pages']:>7} {run['pages_per_s']:>9}  {work}")
    print(f"  pages/s skewed / unskewed: {r['pages_per_s_ratio_1x']} at {r['pages']} pages, "
          f"{r['pages_per_s_ratio_4x']} at {4 * r['pages']} (target >= 0.75)")
    for kind in ("skewed", "unskewed"):
        growth = ", ".join(f"{k} {'n/a' if v is None else f'{v}x'}" for k, v in r[f"work_growth_4x_{kind}"].items())
        print(f"  work growth at 4x input ({kind}; target <= 4x): {growth}")


STAGE_NAMES = {"read_extract_filter": "read WARC + extract + filter (+MinHash)",
               "dedup": "dedup + frequency filters (+shuffles)",
               "download": "download + resize + assemble", "write": "write shards"}


def cost_table(r: dict) -> list[str]:
    """The stage-cost table (markdown), as the README shows it."""
    lines = ["| stage | CPU-ms / page | CPU-hours / 3e9-page snapshot |", "|---|---:|---:|"]
    for stage, name in STAGE_NAMES.items():
        lines.append(f"| {name} | {r['cpu_s_per_page'][stage] * 1000:.2f} | {r['cc_snapshot_cpu_hours'][stage]:,} |")
    lines.append(f"| **total** | {r['cpu_s_per_page_total'] * 1000:.2f} | {r['cc_snapshot_cpu_hours']['total']:,} |")
    if "real_pages_total_cpu_hours" in r:
        lines.append(f"| total, extraction at real-page cost ({r['real_pages_read_cpu_ms']:.2f} ms) | "
                     f"{r['real_pages_total_cpu_s_per_page'] * 1000:.2f} | {r['real_pages_total_cpu_hours']:,} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/pipelines.json")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--pages", type=int, default=400, help="articles of the small input (x10 for memory)")
    parser.add_argument("--files", type=int, default=8, help="WARC files the input is split into")
    parser.add_argument("--throughput-pages", type=int, default=10000,
                        help="articles of the throughput input (steady state: worker start-up amortised)")
    parser.add_argument("--skew-pages", type=int, default=1000,
                        help="pages N of the skew inputs (skewed and unskewed, at N and 4N)")
    parser.add_argument("--skew-own-text", type=float, default=SKEW_OWN_TEXT,
                        help="words of its own on each template copy, as a share of the template's: 0.35 puts "
                             "copies below the near-duplicate threshold; 0.1 makes them near-duplicates")
    parser.add_argument("--cost-pages", type=int, default=400, help="articles of the stage-cost input")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared",
                        help="folder holding data/<real page sets> (skipped when absent)")
    parser.add_argument("--real-copies", type=int, default=60,
                        help="copies of each real page (60: about as many pages as the throughput input)")
    parser.add_argument("--memory-100x", action="store_true",
                        help="also measure peak memory at 100x input (about 42,000 pages, two more minutes)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--glob", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--download", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(sections - set(SECTIONS))}; choose from {SECTIONS}")
    pages = 40 if args.quick else args.pages
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "load_avg_1m": round(os.getloadavg()[0], 2)}, "pages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "scaling" in sections:
            # throughput on an input large enough for worker start-up and the per-stage latency of
            # the dedup stages (about 2 s together) to be amortised, as in any real job
            busy, busy_pages = make_warcs(root / "busy", num_pages=400 if args.quick else args.throughput_pages,
                                          files=2 * args.files)
            results["pages"]["throughput"] = busy_pages
            results["baseline_single_process_extract"] = single_process(busy, judge=False)
            results["baseline_single_process_extract_filter_minhash"] = single_process(busy, judge=True)
            results["job_1_worker_throughput"] = run_job(busy, workers=1, output=root / "out1")
            results["job_2_workers_throughput"] = run_job(busy, workers=2, output=root / "out5")
        if "memory" in sections:
            # memory: the same job on 1x and 10x input
            small, results["pages"]["small"] = make_warcs(root / "small", num_pages=pages, files=args.files)
            large, results["pages"]["large"] = make_warcs(root / "large", num_pages=pages * 10, files=args.files)
            results["job_2_workers"] = run_job(small, workers=2, output=root / "out2")
            results["job_2_workers_10x"] = run_job(large, workers=2, output=root / "out3")
            if args.memory_100x:
                huge, _ = make_warcs(root / "huge", num_pages=pages * 100, files=args.files)
                results["job_2_workers_100x"] = run_job(huge, workers=2, output=root / "out6")
                results["peak_rss_ratio_100x"] = round(results["job_2_workers_100x"]["peak_rss_mb"]
                                                       / results["job_2_workers"]["peak_rss_mb"], 3)
        real = None
        if sections & {"real", "cost"}:  # the cost section needs the real pages' extraction cost only: 2 copies
            copies = 2 if args.quick or "real" not in sections else args.real_copies
            real = make_real_warcs(root / "real", shared=args.shared, copies=copies, files=args.files)
        if real is not None and "real" in sections:
            real_glob, real_pages = real
            results["real_pages"] = {
                "pages": real_pages, "copies": copies,
                "baseline_single_process_extract": single_process(real_glob, judge=False),
                "baseline_single_process_extract_filter_minhash": single_process(real_glob, judge=True),
                "job_2_workers": run_job(real_glob, workers=2, output=root / "out4")}
            rp = results["real_pages"]
            rbase = rp["baseline_single_process_extract"]["pages_per_s"]
            rjudged = rp["baseline_single_process_extract_filter_minhash"]["pages_per_s"]
            rp["scaling_efficiency_vs_extract"] = round(rp["job_2_workers"]["pages_per_s"] / (2 * rbase), 3)
            rp["scaling_efficiency_vs_same_per_page_work"] = round(rp["job_2_workers"]["pages_per_s"] / (2 * rjudged), 3)
            rp["scaling_efficiency_ceiling_vs_extract"] = round(rjudged / rbase, 3)
        if "skew" in sections:
            results["skew"] = skew_runs(root / "skew", pages=100 if args.quick else args.skew_pages, files=args.files,
                                        own_text=args.skew_own_text)
            results["skew_stress"] = skew_stress_runs(root / "skew", pages=100 if args.quick else args.skew_pages,
                                                      files=args.files)
        if "cost" in sections:
            cost = results["cost"] = stage_costs(root / "cost", pages=40 if args.quick else args.cost_pages,
                                                 files=args.files)
            if real is not None:  # the sample web's pages are simpler than real ones: extraction at their cost
                real_read = (results.get("real_pages", {}).get("baseline_single_process_extract_filter_minhash")
                             or single_process(real[0], judge=True))["cpu_s_per_page"]
                total = cost["cpu_s_per_page_total"] - cost["cpu_s_per_page"]["read_extract_filter"] + real_read
                cost["real_pages_read_cpu_ms"] = real_read * 1000
                cost["real_pages_total_cpu_s_per_page"] = total
                cost["real_pages_total_cpu_hours"] = round(total * CC_SNAPSHOT_PAGES / 3600)
    results["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    if "scaling" in sections:
        base = results["baseline_single_process_extract"]["pages_per_s"]
        two = results["job_2_workers_throughput"]["pages_per_s"]
        results["scaling_efficiency_vs_extract"] = round(two / (2 * base), 3)
        judged = results["baseline_single_process_extract_filter_minhash"]["pages_per_s"]
        results["scaling_efficiency_vs_same_per_page_work"] = round(two / (2 * judged), 3)
        results["scaling_efficiency_vs_job_1_worker"] = round(
            two / (2 * results["job_1_worker_throughput"]["pages_per_s"]), 3)
        # What perfect 2-worker scaling of the job's own per-page work (extract + filters + MinHash)
        # would score against bare extraction: the vs-extract target cannot be met above this.
        results["scaling_efficiency_ceiling_vs_extract"] = round(judged / base, 3)
        print(f"{'run':<48} {'pages/s':>10} {'peak RSS MB':>12}")
        for name, rate, rss in [
                (f"single-process extract_document ({results['pages']['throughput']} pages)", base, "-"),
                ("single-process extract+filters+minhash", judged, "-"),
                ("m3w job (no downloads), 1 worker", results["job_1_worker_throughput"]["pages_per_s"],
                 results["job_1_worker_throughput"]["peak_rss_mb"]),
                ("m3w job (no downloads), 2 workers", two, results["job_2_workers_throughput"]["peak_rss_mb"])]:
            print(f"{name:<48} {rate:>10} {rss:>12}")
        print(f"scaling efficiency (2 workers vs 2 x extract): {results['scaling_efficiency_vs_extract']} "
              f"(target >= 0.7)")
        print(f"  ceiling vs extract (same per-page work, perfect scaling): "
              f"{results['scaling_efficiency_ceiling_vs_extract']}")
        print(f"scaling efficiency (2 workers vs 2 x same per-page work): "
              f"{results['scaling_efficiency_vs_same_per_page_work']}")
        print(f"scaling efficiency (2 workers vs 2 x 1 worker): {results['scaling_efficiency_vs_job_1_worker']}")
    if "real_pages" in results:
        rp = results["real_pages"]
        print(f"real pages ({rp['pages']} = shared page sets x {rp['copies']}): extract_document "
              f"{rp['baseline_single_process_extract']['pages_per_s']} pages/s, same per-page work "
              f"{rp['baseline_single_process_extract_filter_minhash']['pages_per_s']}, m3w job 2 workers "
              f"{rp['job_2_workers']['pages_per_s']}")
        print(f"  scaling efficiency vs extract: {rp['scaling_efficiency_vs_extract']} (target >= 0.7; ceiling "
              f"{rp['scaling_efficiency_ceiling_vs_extract']}); vs same per-page work: "
              f"{rp['scaling_efficiency_vs_same_per_page_work']}")
    if "memory" in sections:
        small, large = results["job_2_workers"], results["job_2_workers_10x"]
        results["peak_rss_ratio_10x"] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
        # Where the growth is: the DirectRunner process (it holds every PCollection between stages)
        # and the SDK worker processes, separately.
        results["peak_rss_growth_10x_mb"] = {
            part: round(large[f"peak_{part}_rss_mb"] - small[f"peak_{part}_rss_mb"], 1) for part in ("runner", "workers")}
        print(f"m3w job, 2 workers: {results['pages']['small']} pages {small['pages_per_s']} pages/s "
              f"{small['peak_rss_mb']} MB; {results['pages']['large']} pages {large['pages_per_s']} pages/s "
              f"{large['peak_rss_mb']} MB")
        print(f"peak memory 10x input / 1x: {results['peak_rss_ratio_10x']} (target: flat, ~1.0); workers "
              f"{small['peak_workers_rss_mb']} -> {large['peak_workers_rss_mb']} MB, "
              f"runner {small['peak_runner_rss_mb']} -> {large['peak_runner_rss_mb']} MB")
        if "peak_rss_ratio_100x" in results:
            print(f"peak memory 100x input / 1x: {results['peak_rss_ratio_100x']} "
                  f"({results['job_2_workers_100x']['peak_rss_mb']} MB)")
    if "skew" in results:
        _print_skew(results["skew"])
        st = results["skew_stress"]
        print(f"  stress (own text {st['own_text']}: copies just below the near-duplicate threshold), "
              f"{st['pages']} -> {4 * st['pages']} skewed pages: near duplicates {st['near_duplicates'][0]} -> "
              f"{st['near_duplicates'][1]}; work growth " + ", ".join(
                  f"{k} {'n/a' if v is None else f'{v}x'}" for k, v in st["work_growth_4x"].items()))
    if "cost" in results:
        cost = results["cost"]
        print(f"CPU per page by stage ({cost['pages']} sample-web pages, {cost['images_downloaded']} images "
              f"downloaded from 127.0.0.1, {cost['samples_written']} samples; job start-up "
              f"{cost['startup_cpu_s']} / {cost['startup_cpu_s_with_download']} CPU-s not counted), projected "
              f"to a {CC_SNAPSHOT_PAGES:.0e}-page snapshot:")
        print("\n".join(cost_table(cost)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
