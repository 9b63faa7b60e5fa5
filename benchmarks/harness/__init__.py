"""The benchmark harness behind ``benchmarks/run.py``, one job per module.

- `corpus`: the files to fetch (generated once, reused) and the byte-for-byte check.
- `servers`: the private nginx (HTTP, HTTPS, HTTPS with HTTP/2), the test CA, the API stand-in.
- `netns`: a real packet path: a network namespace, a veth pair, a ``tc`` rate cap (root).
- `tools`: every downloader under test and how to launch it (CA, core pinning, extra flags).
- `measurement`: one timed run (wall, CPU, peak RSS, server CPU, noise) and the medians.
- `report`: the Markdown tables, the targets, the notes, the versions.
- `plan`: which corpora over which transports, which runs, in what order.
- `command`: the command line (`run.py` calls `command.main`).
"""
