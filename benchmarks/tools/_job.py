"""What every Python tool script reads: the job file the harness writes (outside the timed run).

``{"base_url": ".../api/v2", "tasks": [uuid, ...], "files": [{"task", "name", "url"}, ...]}``
The API key comes from ``RODIN_API_KEY``, as it does for the rodin-async CLI. Over HTTPS the
harness passes ``--ca-file``: the test CA each tool must trust for the file host.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def parse(
    description: str | None, *, concurrency: int | None = None, loops: tuple[str, ...] = ()
) -> tuple[argparse.Namespace, dict[str, Any]]:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--job", required=True, help="job JSON written by benchmarks/run.py")
    ap.add_argument("--out", required=True, help="output folder (results go to OUT/<task>/<name>)")
    if concurrency is not None:
        ap.add_argument("-j", "--concurrency", type=int, default=concurrency)
    if loops:
        ap.add_argument("--loop", choices=loops, default=loops[0], help="the event loop")
    ap.add_argument("--ca-file", help="HTTPS: trust this CA (PEM), the benchmark's test CA")
    args = ap.parse_args()
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    job["key"] = os.environ["RODIN_API_KEY"]
    return args, job
