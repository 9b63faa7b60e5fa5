"""What every Python tool script reads: the job file the harness writes (outside the timed run).

``{"base_url": ".../api/v2", "tasks": [uuid, ...], "files": [{"task", "name", "url"}, ...]}``
The API key comes from ``RODIN_API_KEY``, as it does for the rodin-async CLI.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def parse(
    description: str, *, concurrency: int | None = None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--job", required=True, help="job JSON written by benchmarks/run.py")
    ap.add_argument("--out", required=True, help="output folder (results go to OUT/<task>/<name>)")
    if concurrency is not None:
        ap.add_argument("-j", "--concurrency", type=int, default=concurrency)
    args = ap.parse_args()
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    job["key"] = os.environ["RODIN_API_KEY"]
    return args, job
