"""rodin-async through its library API: ``AsyncRodin.download_many``, defaults but concurrency.

``--loop uvloop`` runs the same code on uvloop (the CLI's loop) instead of asyncio's own.
Over HTTPS the test CA goes to ``AsyncRodin(verify=...)`` when the client has that option
(issue 9), else to ``SSL_CERT_FILE``, which httpx reads when it builds its SSL context.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from typing import Any

import _job

from rodin_async import AsyncRodin


def tls_options(ca_file: str | None) -> dict[str, Any]:
    if not ca_file:
        return {}
    if "verify" in inspect.signature(AsyncRodin).parameters:
        return {"verify": ca_file}
    os.environ["SSL_CERT_FILE"] = ca_file
    return {}


async def main(args: Any, job: dict[str, Any]) -> int:
    failed = 0
    async with AsyncRodin(
        job["key"],
        base_url=job["base_url"],
        max_concurrency=args.concurrency,
        **tls_options(args.ca_file),
    ) as rodin:
        async for result in rodin.download_many(job["tasks"], args.out):
            if not result.ok:
                failed += 1
                print(f"{result.task_uuid}: {result.error}", file=sys.stderr)
    return 1 if failed else 0


def run() -> int:
    args, job = _job.parse(__doc__, concurrency=8, loops=("asyncio", "uvloop"))
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(main(args, job))
    return asyncio.run(main(args, job))


if __name__ == "__main__":
    sys.exit(run())
