"""rodin-async through its library API: ``AsyncRodin.download_many``, defaults but concurrency."""

from __future__ import annotations

import asyncio
import sys

import _job

from rodin_async import AsyncRodin


async def main() -> int:
    args, job = _job.parse(__doc__, concurrency=8)
    failed = 0
    async with AsyncRodin(
        job["key"], base_url=job["base_url"], max_concurrency=args.concurrency
    ) as rodin:
        async for result in rodin.download_many(job["tasks"], args.out):
            if not result.ok:
                failed += 1
                print(f"{result.task_uuid}: {result.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
