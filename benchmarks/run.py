"""Benchmark rodin-async's bulk download against the tools people would otherwise use.

    python benchmarks/run.py                 # full: 3 reps, mix + small + large over HTTP and
                                             # HTTPS, concurrency sweep, core scaling
    python benchmarks/run.py --quick         # smoke test: 20 tasks of the mix, 1 rep
    python benchmarks/run.py --transport https,h2 --corpus mix --reps 2 --sweep none
    sudo python benchmarks/run.py --transport none --netns 500mbit,1gbit,none
    sudo python benchmarks/run.py --cleanup  # what a killed --netns run left behind

It generates the corpora (random bytes, reused across runs) under a temp dir, serves them
with a private nginx on 127.0.0.1 over HTTP, HTTPS (TLS 1.3, a test CA) and HTTPS offering
HTTP/2, or through a veth pair into a network namespace with a ``tc`` rate cap; serves the
``POST /api/v2/download`` lists from a tiny API process pointing at nginx, then runs every
tool in its own process, round-robin per repetition, and measures wall time, CPU
(user+sys) and peak RSS of each run. Every output is checked byte-for-byte (size + SHA-256)
against the corpus after each run, outside the timed region. Results: ``OUT/results.json``
(every run) and ``OUT/results.md`` (the tables). Then ``python benchmarks/chart.py`` draws
``docs/benchmark.png``. See benchmarks/README.md; the code is in ``benchmarks/harness/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.command import main

if __name__ == "__main__":
    sys.exit(main())
