"""Plain aiohttp: list each task via the API, then a 16-way semaphore and aiofiles writes."""

from __future__ import annotations

import asyncio
import os
import ssl

import _job
import aiofiles
import aiohttp


async def main() -> None:
    args, job = _job.parse(__doc__, concurrency=16)
    files = asyncio.Semaphore(args.concurrency)
    api = asyncio.Semaphore(4)
    headers = {"Authorization": f"Bearer {job['key']}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    tls = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else True
    connector = aiohttp.TCPConnector(limit=args.concurrency + 4, ssl=tls)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def fetch(folder: str, item: dict[str, str]) -> None:
            async with files, session.get(item["url"]) as r:
                r.raise_for_status()
                async with aiofiles.open(os.path.join(folder, item["name"]), "wb") as f:
                    async for chunk in r.content.iter_chunked(1 << 20):
                        await f.write(chunk)

        async def task(uuid: str) -> None:
            async with (
                api,
                session.post(
                    f"{job['base_url']}/download", json={"task_uuid": uuid}, headers=headers
                ) as r,
            ):
                r.raise_for_status()
                listing = (await r.json())["list"]
            folder = os.path.join(args.out, uuid)
            os.makedirs(folder, exist_ok=True)
            await asyncio.gather(*(fetch(folder, item) for item in listing))

        await asyncio.gather(*(task(uuid) for uuid in job["tasks"]))


if __name__ == "__main__":
    asyncio.run(main())
