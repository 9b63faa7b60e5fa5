"""Generation requests: local validation, and the multipart form they send (MockTransport)."""

from __future__ import annotations

import io
import json
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

import httpx
import pytest

from rodin_async import (
    APIError,
    AsyncRodin,
    GenerationJob,
    GenerationRequest,
    RetryPolicy,
    TextureRequest,
    TransportError,
    ValidationError,
)

pytestmark = pytest.mark.anyio
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SUBMITTED = {
    "error": None,
    "message": "Submitted.",
    "uuid": "task-1",
    "jobs": {"uuids": ["job-1"], "subscription_key": "sub-1"},
    "future_field": [1, 2],
}


def parse_form(request: httpx.Request) -> list[tuple[str, str | None, bytes]]:
    """(field name, file name, content) for every part of a multipart body."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=default).parsebytes(head + request.content)
    return [
        (part.get_param("name", header="content-disposition"), part.get_filename(),
         part.get_payload(decode=True))
        for part in message.iter_parts()
    ]  # fmt: skip


class Recorder:
    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(recorder: Recorder, **kwargs: object) -> AsyncRodin:
    return AsyncRodin(
        "k", base_url="https://api.example/api/v2", transport=httpx.MockTransport(recorder),
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_generate_sends_the_documented_form(tmp_path: Path) -> None:
    """Fields go as multipart: booleans as true/false, bbox as JSON, lists repeated."""
    image = tmp_path / "chair.png"
    image.write_bytes(PNG)
    recorder = Recorder(httpx.Response(201, json=SUBMITTED))
    async with client(recorder) as rodin:
        job = await rodin.generate(
            images=[image, PNG, io.BytesIO(PNG)],
            prompt="a chair",
            tier="Gen-2",
            seed=42,
            material="PBR",
            mesh_mode="Quad",
            mesh_smooth=True,
            use_hyper=False,
            TAPose=True,
            bbox_condition=[100, 200, 300],
            addons=["HighPack", "Other"],
        )
    assert job == GenerationJob("task-1", "sub-1", ["job-1"], "Submitted.")
    (request,) = recorder.requests
    assert str(request.url) == "https://api.example/api/v2/rodin"
    assert request.headers["content-type"].startswith("multipart/form-data")
    parts = parse_form(request)
    fields = [(name, value.decode()) for name, filename, value in parts if filename is None]
    assert fields == [
        ("prompt", "a chair"),
        ("tier", "Gen-2"),
        ("seed", "42"),
        ("material", "PBR"),
        ("mesh_mode", "Quad"),
        ("mesh_smooth", "true"),
        ("use_hyper", "false"),
        ("TAPose", "true"),
        ("TApose", "true"),
        ("bbox_condition", "[100, 200, 300]"),
        ("addons", "HighPack"),
        ("addons", "Other"),
    ]
    uploads = [(name, filename, value) for name, filename, value in parts if filename]
    assert [(n, f) for n, f, _ in uploads] == [
        ("images", "chair.png"),
        ("images", "images-1"),
        ("images", "images-2"),
    ]
    assert all(value == PNG for _, _, value in uploads)


async def test_text_to_3d_is_still_multipart() -> None:
    """Without images the body is multipart too, as the API requires."""
    recorder = Recorder(httpx.Response(201, json=SUBMITTED))
    async with client(recorder) as rodin:
        await rodin.generate(prompt="a lamp")
    (request,) = recorder.requests
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert parse_form(request) == [("prompt", None, b"a lamp")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "prompt is required"),
        ({"prompt": "   "}, "prompt is required"),
        ({"images": [PNG] * 6}, "at most 5"),
        ({"prompt": "x", "seed": 65536}, "seed"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "seed": "7"}, "seed"),
        ({"prompt": "x", "bbox_condition": [1, 2]}, "bbox_condition"),
        ({"prompt": "x", "bbox_condition": [1, 2, "3"]}, "bbox_condition"),
        ({"prompt": "x", "tier": "Ultra"}, "tier must be one of"),
        ({"prompt": "x", "material": "Gold"}, "material"),
        ({"prompt": "x", "geometry_file_format": "ply"}, "geometry_file_format"),
        ({"prompt": "x", "quality_override": 0}, "quality_override"),
        ({"images": PNG}, "list"),
    ],
)
async def test_invalid_generation_is_refused_before_sending(
    kwargs: dict[str, object], message: str
) -> None:
    """What the docs forbid raises ValidationError and sends nothing (no credit spent)."""
    recorder = Recorder(httpx.Response(201, json=SUBMITTED))
    async with client(recorder) as rodin:
        with pytest.raises(ValidationError, match=message):
            await rodin.generate(**kwargs)  # type: ignore[arg-type]
    assert recorder.requests == []


async def test_unreadable_image_is_a_validation_error(tmp_path: Path) -> None:
    """A missing image file is reported as such, before anything is sent."""
    recorder = Recorder(httpx.Response(201, json=SUBMITTED))
    async with client(recorder) as rodin:
        with pytest.raises(ValidationError, match="can't read"):
            await rodin.generate(images=[tmp_path / "missing.png"])
    assert recorder.requests == []


async def test_submit_is_not_retried_after_it_may_have_arrived() -> None:
    """A 503 or a dropped connection after sending is not retried: it could bill twice."""
    failures: list[tuple[httpx.Response | Exception, type[Exception]]] = [
        (httpx.Response(503), APIError),
        (httpx.ReadError("reset"), TransportError),
    ]
    for failure, error in failures:
        recorder = Recorder(failure, httpx.Response(201, json=SUBMITTED))
        async with client(recorder) as rodin:
            with pytest.raises(error):
                await rodin.generate(prompt="x")
        assert len(recorder.requests) == 1


async def test_submit_is_retried_when_it_surely_did_not_arrive() -> None:
    """Connection refused and 429 are retried: the server never took the request."""
    recorder = Recorder(
        httpx.ConnectError("refused"),
        httpx.Response(429, headers={"Retry-After": "1"}),
        httpx.Response(201, json=SUBMITTED),
    )
    async with client(recorder) as rodin:
        job = await rodin.generate(prompt="x")
    assert job.uuid == "task-1"
    assert len(recorder.requests) == 3


async def test_retry_submit_opts_into_retrying_everything() -> None:
    """With retry_submit=True a 503 is retried like any idempotent call."""
    recorder = Recorder(httpx.Response(503), httpx.Response(201, json=SUBMITTED))
    async with client(recorder, retry=RetryPolicy(attempts=3)) as rodin:
        job = await rodin.generate(prompt="x", retry_submit=True)
    assert job.subscription_key == "sub-1"
    assert len(recorder.requests) == 2


async def test_texture_request_form(tmp_path: Path) -> None:
    """generate_texture posts image and model files plus its options."""
    model = tmp_path / "mesh.glb"
    model.write_bytes(b"glTF" + b"\x02" * 100)
    recorder = Recorder(httpx.Response(201, json=SUBMITTED))
    async with client(recorder) as rodin:
        await rodin.generate_texture(PNG, model, prompt="rusty", resolution="High", seed=3)
    (request,) = recorder.requests
    assert str(request.url).endswith("/rodin_texture_only")
    parts = parse_form(request)
    assert [(n, f) for n, f, _ in parts] == [
        ("prompt", None), ("seed", None), ("resolution", None),
        ("image", "image-0"), ("model", "mesh.glb"),
    ]  # fmt: skip


def test_texture_validation() -> None:
    """The texture endpoint's enums and seed range are checked locally."""
    with pytest.raises(ValidationError, match="resolution"):
        TextureRequest(image=PNG, model=PNG, resolution="Ultra")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="material"):
        TextureRequest(image=PNG, model=PNG, material="All")  # type: ignore[arg-type]


async def test_oversized_model_is_refused(tmp_path: Path) -> None:
    """A model over 10 MB is refused locally, as the API would."""
    recorder = Recorder(httpx.Response(201, json=SUBMITTED))
    async with client(recorder) as rodin:
        with pytest.raises(ValidationError, match="10 MB"):
            await rodin.generate_texture(PNG, b"x" * 10_000_001)
    assert recorder.requests == []


def test_request_is_a_frozen_value() -> None:
    """A GenerationRequest can be built once and submitted (or run) later."""
    request = GenerationRequest(prompt="a boat", seed=0, bbox_condition=(1, 1, 1))
    assert json.loads(dict(request.fields())["bbox_condition"]) == [1, 1, 1]
