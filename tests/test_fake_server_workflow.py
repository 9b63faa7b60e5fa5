"""The fake Rodin server's generation workflow: submit, status, balance, texture, results."""

from __future__ import annotations

import datetime
import json
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from rodin_async.testing import FakeRodin, Fault

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
IMAGE = b"\x89PNG\r\n\x1a\n fake image"
BALANCE = 100.0


@pytest.fixture(scope="module")
def running() -> Iterator[FakeRodin]:
    """A fake whose generations take 0.6 s: long enough to watch each status go by."""
    with FakeRodin(api_key=KEY, generation_time=0.6) as server:
        yield server


@pytest.fixture(scope="module")
def running_instant() -> Iterator[FakeRodin]:
    """A fake whose generations end at once, with two jobs per task."""
    with FakeRodin(api_key=KEY, generation_time=0, jobs_per_task=2) as server:
        yield server


@pytest.fixture
def server(running: FakeRodin) -> FakeRodin:
    """The slow fake with an empty log and a full balance."""
    running.reset_requests()
    running.balance = BALANCE
    return running


@pytest.fixture
def instant(running_instant: FakeRodin) -> FakeRodin:
    """The instant fake with an empty log and a full balance."""
    running_instant.reset_requests()
    running_instant.balance = BALANCE
    return running_instant


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A plain httpx client with a short timeout."""
    with httpx.Client(timeout=5) as http:
        yield http


def submit(
    server: FakeRodin,
    client: httpx.Client,
    fields: Sequence[tuple[str, str]] = (),
    files: Sequence[tuple[str, str, bytes]] = (),
    *,
    endpoint: str = "rodin",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a multipart form: text fields are parts without a file name."""
    parts: list[tuple[str, tuple[str | None, str | bytes]]] = [
        (name, (None, value)) for name, value in fields
    ]
    parts += [(name, (filename, data)) for name, filename, data in files]
    url = f"{server.base_url}/{endpoint}"
    return client.post(url, files=parts, headers=AUTH if headers is None else headers)


def submitted(server: FakeRodin, client: httpx.Client, prompt: str = "a chair") -> dict[str, Any]:
    """Submit a text-to-3D generation that must be accepted; return the answer."""
    response = submit(server, client, [("prompt", prompt)])
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def statuses(server: FakeRodin, client: httpx.Client, key: str) -> list[str]:
    """The status of each job of the task with subscription key `key`."""
    response = client.post(
        f"{server.base_url}/status", json={"subscription_key": key}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    assert response.json()["error"] == "OK"
    return [job["status"] for job in response.json()["jobs"]]


def listing(server: FakeRodin, client: httpx.Client, task: str) -> list[dict[str, str]]:
    """List a task's result files through the API."""
    response = client.post(f"{server.base_url}/download", json={"task_uuid": task}, headers=AUTH)
    assert response.status_code == 201, response.text
    files: list[dict[str, str]] = response.json()["list"]
    return files


def balance(server: FakeRodin, client: httpx.Client) -> float:
    """The balance `/check_balance` answers."""
    response = client.get(f"{server.base_url}/check_balance", headers=AUTH)
    assert response.status_code == 201, response.text
    value: float = response.json()["balance"]
    return value


def parse_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Check a binary glTF 2.0 container's framing; return its JSON document and BIN chunk."""
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    document = json.loads(data[20 : 20 + json_length])
    bin_at = 20 + json_length
    bin_length, bin_type = struct.unpack_from("<II", data, bin_at)
    assert bin_type == 0x004E4942 and bin_length % 4 == 0
    assert bin_at + 8 + bin_length == len(data)
    return document, data[bin_at + 8 :]


# -- submit ------------------------------------------------------------------------------


def test_text_submit_answers_like_the_api(server: FakeRodin, client: httpx.Client) -> None:
    """A prompt-only submit gets 201 with the task uuid, job uuids and a subscription key."""
    response = submit(server, client, [("prompt", "a red chair"), ("tier", "Regular")])
    assert response.status_code == 201
    body = response.json()
    assert (body["error"], body["message"], body["prompt"]) == (None, "Submitted.", "a red chair")
    assert len(body["jobs"]["uuids"]) == 1
    assert body["jobs"]["subscription_key"]
    assert datetime.datetime.fromisoformat(body["submit_time"]).tzinfo is not None
    (submission,) = server.submissions
    assert submission.endpoint == "rodin"
    assert submission.fields == {"prompt": ["a red chair"], "tier": ["Regular"]}
    assert (submission.files, submission.task_uuid) == ({}, body["uuid"])
    assert server.api_requests("rodin")[0].task_uuid == body["uuid"]


def test_image_submit_records_every_documented_field(
    server: FakeRodin, client: httpx.Client
) -> None:
    """Images plus every documented field are accepted and recorded as sent."""
    fields = [
        ("tier", "Gen-2.5-High"),
        ("condition_mode", "fuse"),
        ("seed", "65535"),
        ("geometry_file_format", "glb"),
        ("material", "Shaded"),
        ("quality", "extra-low"),
        ("quality_override", "150000"),
        ("mesh_mode", "Raw"),
        ("mesh_simplify", "true"),
        ("use_hyper", "false"),
        ("TAPose", "true"),
        ("bbox_condition", "[100,80,-20]"),
        ("addons", "HighPack"),
        ("addons", "HighPack"),
        ("preview_render", "true"),
        ("use_original_alpha", "false"),
        ("hd_texture", "true"),
        ("geometry_instruct_mode", "creative"),
        ("some_future_field", "anything"),
    ]
    images = [("images", f"view{i}.png", IMAGE * (i + 1)) for i in range(5)]
    response = submit(server, client, fields, images)
    assert response.status_code == 201, response.text
    (submission,) = server.submissions
    assert submission.files == {
        "images": [(f"view{i}.png", len(IMAGE) * (i + 1)) for i in range(5)]
    }
    assert submission.fields["addons"] == ["HighPack", "HighPack"]
    assert submission.fields["some_future_field"] == ["anything"]
    assert response.json()["prompt"] is None


@pytest.mark.parametrize(
    ("fields", "files", "field"),
    [
        ([("tier", "Regular")], [], "prompt"),
        ([("prompt", "  ")], [], "prompt"),
        ([], [("images", f"{i}.png", IMAGE) for i in range(6)], "images"),
        ([("prompt", "x"), ("tier", "Ultra")], [], "tier"),
        ([("prompt", "x"), ("seed", "65536")], [], "seed"),
        ([("prompt", "x"), ("seed", "-1")], [], "seed"),
        ([("prompt", "x"), ("seed", "4.5")], [], "seed"),
        ([("prompt", "x"), ("bbox_condition", "[1,2]")], [], "bbox_condition"),
        ([("prompt", "x"), ("bbox_condition", "[1,2,true]")], [], "bbox_condition"),
        ([("prompt", "x"), ("bbox_condition", "1,2,3")], [], "bbox_condition"),
        ([("prompt", "x"), ("use_hyper", "True")], [], "use_hyper"),
        ([("prompt", "x"), ("mesh_smooth", "1")], [], "mesh_smooth"),
        ([("prompt", "x"), ("condition_mode", "blend")], [], "condition_mode"),
        ([("prompt", "x"), ("geometry_file_format", "ply")], [], "geometry_file_format"),
        ([("prompt", "x"), ("material", "pbr")], [], "material"),
        ([("prompt", "x"), ("quality", "ultra")], [], "quality"),
        ([("prompt", "x"), ("quality_override", "1.5")], [], "quality_override"),
        ([("prompt", "x"), ("mesh_mode", "quad")], [], "mesh_mode"),
        ([("prompt", "x"), ("addons", "MegaPack")], [], "addons"),
        ([("prompt", "x"), ("prompt", "y")], [], "prompt"),
        ([("images", "not a file")], [], "images"),
        ([], [("prompt", "p.txt", b"a chair")], "prompt"),
        ([], [("images", "empty.png", b"")], "images"),
    ],
)
def test_invalid_forms_are_refused(
    server: FakeRodin,
    client: httpx.Client,
    fields: list[tuple[str, str]],
    files: list[tuple[str, str, bytes]],
    field: str,
) -> None:
    """A form the API would refuse gets 400 INVALID_REQUEST naming the field, and is free."""
    response = submit(server, client, fields, files)
    assert response.status_code == 400
    assert response.json()["error"] == "INVALID_REQUEST"
    assert f"`{field}`" in response.json()["message"]
    assert server.balance == BALANCE
    assert [s.task_uuid for s in server.submissions] == [None]


def test_form_must_be_multipart(server: FakeRodin, client: httpx.Client) -> None:
    """A urlencoded or JSON body is refused with 400 and a message naming multipart."""
    url = f"{server.base_url}/rodin"
    for response in (
        client.post(url, data={"prompt": "a chair"}, headers=AUTH),
        client.post(url, json={"prompt": "a chair"}, headers=AUTH),
    ):
        assert response.status_code == 400
        assert response.json()["error"] == "INVALID_REQUEST"
        assert "multipart/form-data" in response.json()["message"]
    assert server.submissions == []


def test_submits_charge_the_balance_until_it_runs_out(
    server: FakeRodin, client: httpx.Client
) -> None:
    """Each accepted submit costs 0.5; below that, 402 INSUFFICIENT_BALANCE charges nothing."""
    assert balance(server, client) == BALANCE
    server.balance = 1.2
    submitted(server, client)
    submitted(server, client)
    assert balance(server, client) == pytest.approx(0.2)
    refused = submit(server, client, [("prompt", "one more")])
    assert refused.status_code == 402
    assert refused.json()["error"] == "INSUFFICIENT_BALANCE"
    assert server.balance == pytest.approx(0.2)
    assert server.submissions[-1].task_uuid is None


# -- status and results ------------------------------------------------------------------


def test_jobs_go_waiting_generating_done_then_files_list(
    server: FakeRodin, client: httpx.Client
) -> None:
    """Polled status goes Waiting, Generating, Done; files are listed only once Done."""
    body = submitted(server, client)
    task, key = body["uuid"], body["jobs"]["subscription_key"]
    assert listing(server, client, task) == []
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while not seen or seen[-1] != "Done":
        assert time.monotonic() < deadline, f"still {seen} after 5 s"
        (status,) = statuses(server, client, key)
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.02)
    assert seen == ["Waiting", "Generating", "Done"]
    names = [entry["name"] for entry in listing(server, client, task)]
    assert names == ["base_basic_pbr.glb", "preview.webp"]
    assert {r.task_uuid for r in server.api_requests("status")} == {task}


def test_result_files_are_a_valid_glb_and_webp(instant: FakeRodin, client: httpx.Client) -> None:
    """The model is binary glTF 2.0 with one triangle; the preview is a 1x1 WebP."""
    task = submitted(instant, client)["uuid"]
    files = {entry["name"]: client.get(entry["url"]) for entry in listing(instant, client, task)}
    model = files["base_basic_pbr.glb"].content
    assert model == instant.content(task, "base_basic_pbr.glb")
    document, binary = parse_glb(model)
    assert document["asset"]["version"] == "2.0"
    assert document["asset"]["extras"]["task_uuid"] == task
    (accessor,) = document["accessors"]
    view = document["bufferViews"][accessor["bufferView"]]
    assert (accessor["count"], accessor["type"], view["byteLength"]) == (3, "VEC3", 36)
    assert document["buffers"][0]["byteLength"] <= len(binary)
    assert struct.unpack_from("<9f", binary)[3:6] == (1.0, 0.0, 0.0)
    webp = files["preview.webp"].content
    assert (webp[:4], webp[8:16]) == (b"RIFF", b"WEBPVP8L")
    assert struct.unpack_from("<I", webp, 4)[0] + 8 == len(webp)
    other = submitted(instant, client)["uuid"]
    assert instant.content(other, "base_basic_pbr.glb") != model  # tasks never share bytes


def test_format_and_material_choose_the_files(instant: FakeRodin, client: httpx.Client) -> None:
    """geometry_file_format names the model's extension; material All gives one per material."""
    fields = [("prompt", "x"), ("geometry_file_format", "obj"), ("material", "All")]
    task = submit(instant, client, fields).json()["uuid"]
    names = [entry["name"] for entry in listing(instant, client, task)]
    assert names == ["base_basic_pbr.obj", "base_basic_shaded.obj", "preview.webp"]
    assert instant.content(task, "base_basic_pbr.obj").endswith(b"f 1 2 3\n")


def test_every_job_is_reported(instant: FakeRodin, client: httpx.Client) -> None:
    """With jobs_per_task=2 the answer and the status list both jobs, in the same order."""
    body = submitted(instant, client)
    assert len(body["jobs"]["uuids"]) == 2
    response = client.post(
        f"{instant.base_url}/status",
        json={"subscription_key": body["jobs"]["subscription_key"]},
        headers=AUTH,
    )
    jobs = response.json()["jobs"]
    assert [job["uuid"] for job in jobs] == body["jobs"]["uuids"]
    assert [job["status"] for job in jobs] == ["Done", "Done"]


def test_fail_next_generation_fails_its_first_job(instant: FakeRodin, client: httpx.Client) -> None:
    """The next task's first job ends Failed, the other Done; it lists no files; then normal."""
    instant.fail_next_generation()
    failed = submitted(instant, client)
    assert statuses(instant, client, failed["jobs"]["subscription_key"]) == ["Failed", "Done"]
    assert listing(instant, client, failed["uuid"]) == []
    after = submitted(instant, client)
    assert statuses(instant, client, after["jobs"]["subscription_key"]) == ["Done", "Done"]


def test_prompt_marker_picks_the_outcome(instant: FakeRodin, client: httpx.Client) -> None:
    """A prompt containing fake-status:<Status> makes the first job end with that status."""
    body = submitted(instant, client, prompt="a vase fake-status:Canceled")
    assert statuses(instant, client, body["jobs"]["subscription_key"]) == ["Canceled", "Done"]


def test_unknown_status_can_be_forced_and_lifted(instant: FakeRodin, client: httpx.Client) -> None:
    """set_job_status reports any string (here "Paused") until lifted back to the timeline."""
    body = submitted(instant, client)
    task, key = body["uuid"], body["jobs"]["subscription_key"]
    instant.set_job_status(task, "Paused", job=1)
    assert statuses(instant, client, key) == ["Done", "Paused"]
    assert listing(instant, client, task) == []
    instant.set_job_status(task, None)
    assert statuses(instant, client, key) == ["Done", "Done"]
    assert len(listing(instant, client, task)) == 2


def test_forcing_done_lists_files_early(server: FakeRodin, client: httpx.Client) -> None:
    """Forcing Done on a slow generation lists its result files at once."""
    task = submitted(server, client)["uuid"]
    server.set_job_status(task, "Done")
    assert [entry["name"] for entry in listing(server, client, task)][-1] == "preview.webp"


def test_set_job_status_refuses_what_has_no_jobs(instant: FakeRodin, client: httpx.Client) -> None:
    """Unknown tasks, added (not submitted) tasks and missing job numbers are refused."""
    with pytest.raises(KeyError):
        instant.set_job_status("no-such-task", "Done")
    with pytest.raises(ValueError, match="has no jobs"):
        instant.set_job_status(instant.add_task({"a.glb": 10}), "Done")
    task = submitted(instant, client)["uuid"]
    with pytest.raises(ValueError, match="not number 2"):
        instant.set_job_status(task, "Done", job=2)


def test_status_unknown_key_and_bad_body(server: FakeRodin, client: httpx.Client) -> None:
    """An unknown subscription key is 404 TASK_NOT_FOUND; a body without one is 400."""
    url = f"{server.base_url}/status"
    missing = client.post(url, json={"subscription_key": "nope"}, headers=AUTH)
    assert (missing.status_code, missing.json()["error"]) == (404, "TASK_NOT_FOUND")
    bad = client.post(url, json={"task_uuid": "x"}, headers=AUTH)
    assert (bad.status_code, bad.json()["error"]) == (400, "INVALID_REQUEST")


# -- texture -----------------------------------------------------------------------------


def test_texture_submit_makes_a_task(instant: FakeRodin, client: httpx.Client) -> None:
    """A texture form with image and model answers like /rodin and yields result files."""
    fields = [("prompt", "rusty"), ("seed", "7"), ("reference_scale", "1.5")]
    fields += [("material", "Shaded"), ("resolution", "High")]
    files = [("image", "ref.png", IMAGE), ("model", "chair.glb", b"glTF model")]
    response = submit(instant, client, fields, files, endpoint="rodin_texture_only")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["message"], body["prompt"]) == ("Submitted.", "rusty")
    (submission,) = instant.submissions
    assert submission.endpoint == "rodin_texture_only"
    assert submission.files == {"image": [("ref.png", len(IMAGE))], "model": [("chair.glb", 10)]}
    names = [entry["name"] for entry in listing(instant, client, body["uuid"])]
    assert names == ["base_basic_shaded.glb", "preview.webp"]
    assert instant.balance == BALANCE - 0.5


@pytest.mark.parametrize(
    ("fields", "files", "field"),
    [
        ([], [("image", "a.png", IMAGE)], "model"),
        ([], [("model", "m.glb", b"glTF")], "image"),
        ([], [("image", "a.png", IMAGE), ("model", "big.glb", bytes(10 * 1024**2 + 1))], "model"),
        ([("material", "All")], [], "material"),
        ([("resolution", "Ultra")], [], "resolution"),
        ([("reference_scale", "0")], [], "reference_scale"),
        ([("seed", "70000")], [], "seed"),
    ],
)
def test_invalid_texture_forms_are_refused(
    server: FakeRodin,
    client: httpx.Client,
    fields: list[tuple[str, str]],
    files: list[tuple[str, str, bytes]],
    field: str,
) -> None:
    """A texture form missing a file, with a model over 10 MiB, or a bad value gets 400."""
    if not files:
        files = [("image", "a.png", IMAGE), ("model", "m.glb", b"glTF")]
    response = submit(server, client, fields, files, endpoint="rodin_texture_only")
    assert response.status_code == 400
    assert response.json()["error"] == "INVALID_REQUEST"
    assert f"`{field}`" in response.json()["message"]
    assert server.balance == BALANCE


# -- auth and faults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "endpoint", "kwargs"),
    [
        ("GET", "check_balance", {}),
        ("POST", "status", {"json": {"subscription_key": "x"}}),
        ("POST", "download", {"json": {"task_uuid": "x"}}),
        ("POST", "rodin", {"files": [("prompt", (None, "a chair"))]}),
        ("POST", "rodin_texture_only", {"files": [("image", ("a.png", IMAGE))]}),
    ],
)
def test_every_endpoint_needs_the_key(
    server: FakeRodin, client: httpx.Client, method: str, endpoint: str, kwargs: dict[str, Any]
) -> None:
    """No key or a wrong key gets 401 UNAUTHORIZED everywhere, and nothing is submitted."""
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = client.request(
            method, f"{server.base_url}/{endpoint}", headers=headers, **kwargs
        )
        assert response.status_code == 401
        assert response.json()["error"] == "UNAUTHORIZED"
    assert (server.submissions, server.balance) == ([], BALANCE)


def test_status_throttling_faults(server: FakeRodin, client: httpx.Client) -> None:
    """Faults queued for "status" hit only /status, before the shared queue is used."""
    key = submitted(server, client)["jobs"]["subscription_key"]
    server.add_api_faults(Fault.status(503))
    server.add_api_faults(Fault.status(429, retry_after=1), endpoint="status")
    url, body = f"{server.base_url}/status", {"subscription_key": key}
    throttled = client.post(url, json=body, headers=AUTH)
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "1")
    assert throttled.json()["error"] == "TOO_MANY_REQUESTS"
    assert client.post(url, json=body, headers=AUTH).status_code == 503
    assert client.post(url, json=body, headers=AUTH).status_code == 201
    server.add_api_faults(Fault.status(429), endpoint="status")
    assert balance(server, client) == BALANCE - 0.5  # another endpoint: untouched
    assert client.post(url, json=body, headers=AUTH).status_code == 429


def test_fault_endpoint_must_exist(server: FakeRodin) -> None:
    """Queuing faults for an endpoint the fake does not serve is refused."""
    with pytest.raises(ValueError, match="Unknown endpoint"):
        server.add_api_faults(Fault.status(500), endpoint="nope")  # type: ignore[arg-type]


def test_lost_submit_answer_still_charges(server: FakeRodin, client: httpx.Client) -> None:
    """A reset on /rodin loses the answer, but the task exists and was paid for."""
    server.add_api_faults(Fault.reset(), endpoint="rodin")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        submit(server, client, [("prompt", "a chair")])
    (submission,) = server.submissions
    assert submission.task_uuid is not None
    assert server.balance == BALANCE - 0.5


def test_generation_settings_are_checked() -> None:
    """Negative cost or time, or fewer than one job per task, are refused up front."""
    for kwargs in ({"generation_cost": -1}, {"generation_time": -0.1}, {"jobs_per_task": 0}):
        with pytest.raises(ValueError, match=r"generation|jobs_per_task"):
            FakeRodin(**kwargs)
