"""Would HTTP/2 pay for many small files over TLS? httpx with HTTP/1.1 vs HTTP/2, same nginx.

    .venv/bin/pip install 'httpx[http2]'
    .venv/bin/python benchmarks/http2_probe.py [--reps 4]

Issue 10 asked to measure HTTP/2 to file hosts before adopting it. This serves the small
corpus (1000 files of 256 KiB) with the harness's nginx over TLS 1.3 offering ``h2,http/1.1``, and
fetches every file with a bare ``httpx.AsyncClient`` (16 at a time, 16 connections, bodies
counted and discarded: only the HTTP stack is measured), once with ``http2=False`` and once
with ``http2=True``, alternating, each in its own process. It prints wall and CPU seconds
(user + sys of the child) per run and the medians.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.corpus import Corpus
from harness.servers import LocalCA, Nginx, find_nginx, make_work_dir

CHILD = r"""
import asyncio, json, ssl, sys
import httpx

urls = json.load(open(sys.argv[1]))
http2 = sys.argv[2] == "h2"
expected = "HTTP/2" if http2 else "HTTP/1.1"

async def main() -> None:
    context = ssl.create_default_context(cafile=sys.argv[3])
    limit = asyncio.Semaphore(16)
    total = 0
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(http2=http2, verify=context, limits=limits) as client:
        async def one(url: str) -> None:
            nonlocal total
            async with limit, client.stream("GET", url) as response:
                response.raise_for_status()
                if response.http_version != expected:
                    raise SystemExit(f"got {response.http_version}, wanted {expected}")
                async for chunk in response.aiter_raw(1 << 20):
                    total += len(chunk)
        await asyncio.gather(*(one(url) for url in urls))
    print(total)

asyncio.run(main())
"""


def run(urls: Path, variant: str, ca: Path, expected_bytes: int) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    argv = [sys.executable, "-c", CHILD, str(urls), variant, str(ca)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
    if int(done.stdout) != expected_bytes:
        raise SystemExit(f"{variant} read {done.stdout.strip()} bytes, expected {expected_bytes}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--corpus-dir", type=Path, default=Path("/tmp/rodin-async-bench-corpus"))
    args = parser.parse_args()
    nginx_binary = find_nginx()
    if nginx_binary is None:
        raise SystemExit("needs nginx: apt-get install -y nginx")
    corpus = Corpus(args.corpus_dir, "small", 200)
    corpus.ensure(print)
    work = make_work_dir()
    nginx = None
    try:
        ca = LocalCA(work)
        cert = ca.issue("lo", ["127.0.0.1"])
        nginx = Nginx(nginx_binary, args.corpus_dir, work, ["h2"], tls=cert)
        base = nginx.url("h2")
        urls = work / "urls.json"
        listed = [f"{base}/{corpus.name}/{f.task}/{f.name}" for f in corpus.files]
        urls.write_text(json.dumps(listed))
        results: dict[str, list[tuple[float, float]]] = {"h1": [], "h2": []}
        for rep in range(args.reps):
            for variant in ("h1", "h2") if rep % 2 == 0 else ("h2", "h1"):
                wall, cpu = run(urls, variant, ca.ca_file, corpus.total_bytes)
                results[variant].append((wall, cpu))
                print(f"rep {rep} {variant}: wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
        for variant, runs in results.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            per_file = 1000 * cpu / len(corpus.files)
            print(f"{variant}: median wall {wall:.2f} s, CPU {cpu:.2f} s ({per_file:.2f} ms/file)")
    finally:
        if nginx is not None:
            nginx.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
