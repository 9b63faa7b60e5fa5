"""The whole Rodin workflow against the bundled fake server: no key, no network.

    python examples/workflow.py

Point it at the real API by replacing the FakeRodin block with your key
(``AsyncRodin()`` reads ``RODIN_API_KEY``).
"""

from __future__ import annotations

import sys
import tempfile

import anyio

import rodin_async
from rodin_async.testing import FakeRodin


async def main(dest: str) -> None:
    with FakeRodin(generation_time=1.0) as server:
        async with rodin_async.AsyncRodin(server.api_key, base_url=server.base_url) as rodin:
            print(f"balance: {await rodin.balance():.1f}")
            job = await rodin.generate(prompt="a wooden chair", tier="Regular", seed=42)
            print(f"submitted task {job.uuid} ({job.message})")

            def show(status: rodin_async.TaskStatus) -> None:
                print("  status:", ", ".join(j.status.value for j in status.jobs))

            await rodin.wait(job, poll_interval=0.25, timeout=60, on_status=show)
            result = await rodin.download(job, dest)
            for f in result.files:
                print(f"  {f.path} {f.size} bytes sha256={f.sha256[:12] if f.sha256 else '-'}")

            again = await rodin.download(job, dest)  # the manifest says it's complete
            print(f"second download skipped: {again.skipped}")
            print(f"balance: {await rodin.balance():.1f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else tmp)
