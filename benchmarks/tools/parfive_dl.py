"""parfive with its default settings except ``max_conn=16`` (and no progress bars).

parfive downloads URLs, it can't call the API: it gets the list the harness made beforehand.
"""

from __future__ import annotations

import os
import sys

import _job
from parfive import Downloader

args, job = _job.parse(__doc__, concurrency=16)
dl = Downloader(max_conn=args.concurrency, progress=False)
for item in job["files"]:
    dl.enqueue_file(item["url"], path=os.path.join(args.out, item["task"]), filename=item["name"])
results = dl.download()
if results.errors:
    for err in results.errors[:10]:
        print(err, file=sys.stderr)
    sys.exit(1)
