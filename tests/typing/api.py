"""Never executed: mypy checks that the public API reads well to a type checker."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import rodin_async
from rodin_async.testing import FakeRodin


async def use_the_api() -> None:
    async with rodin_async.AsyncRodin("key", max_concurrency=4) as rodin:
        files: list[rodin_async.ResultFile] = await rodin.list_files("uuid")
        names: list[str] = [f.name for f in files]
        result: rodin_async.TaskDownload = await rodin.download("uuid", Path("out"))
        sizes: list[int] = [f.size for f in result.files]
        async with aclosing(rodin.download_many(["a", "b"], "out")) as results:
            async for r in results:
                ok: bool = r.ok
                error: rodin_async.RodinError | None = r.error
    try:
        await rodin.download("uuid", "out")
    except rodin_async.TaskDownloadError as exc:
        failed: tuple[rodin_async.DownloadError, ...] = exc.errors
    except rodin_async.APIError as exc:
        code: str | None = exc.code
        status: int | None = exc.status_code
    del names, sizes, ok, error, failed, code, status
    policy = rodin_async.RetryPolicy(attempts=3, wait_initial=0.1)
    del policy


async def use_the_workflow() -> None:
    async with rodin_async.AsyncRodin(retry=rodin_async.RetryPolicy(attempts=3)) as rodin:
        credits: float = await rodin.balance()
        job: rodin_async.GenerationJob = await rodin.generate(
            prompt="a chair", tier="Gen-2", seed=7, bbox_condition=(1, 2, 3), use_hyper=True
        )
        status: rodin_async.TaskStatus = await rodin.wait(job, poll_interval=1, timeout=60)
        done: bool = status.done and all(
            j.status is rodin_async.JobStatus.DONE for j in status.jobs
        )
        request = rodin_async.GenerationRequest(images=[b"png"], material="PBR")
        result = await rodin.run(request, "out", on_progress=lambda e: None)
        skipped: bool = result.skipped
        again = await rodin.download(job, "out", check="sha256", overwrite=False)
        texture = await rodin.generate_texture(b"png", "model.glb", resolution="High")
    del credits, done, skipped, again, texture


def annotate_with_the_literals(
    tier: rodin_async.Tier,
    material: rodin_async.Material,
    fmt: rodin_async.GeometryFormat,
    check: rodin_async.FileCheck,
) -> rodin_async.GenerationRequest:
    modes: tuple[rodin_async.ConditionMode, rodin_async.MeshMode, rodin_async.Quality] = (
        "fuse",
        "Quad",
        "extra-low",
    )
    instruct: rodin_async.GeometryInstructMode = "creative"
    texture: tuple[rodin_async.TextureMaterial, rodin_async.TextureResolution] = ("PBR", "High")
    del modes, instruct, texture, check
    return rodin_async.GenerationRequest(
        prompt="a chair", tier=tier, material=material, geometry_file_format=fmt
    )


class MyRodin(rodin_async.AsyncRodin):
    """A user's subclass keeps its own type through `async with` (__aenter__ -> Self)."""

    def hello(self) -> str:
        return "hi"


async def subclass_through_async_with() -> None:
    async with MyRodin("key") as rodin:
        mine: MyRodin = rodin
        greeting: str = rodin.hello()
    del mine, greeting


class MyFake(FakeRodin):
    pass


async def fake_server_subclass() -> None:
    with MyFake() as server:
        same: MyFake = server
    async with MyFake() as server:
        same = server
    del same
