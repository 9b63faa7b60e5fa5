"""The two ASGI apps: the Rodin API (`/api/v2/...`) and the result-file host.

They are separate apps on separate ports because the real file host is another origin, and a
client must never send the API key there; the request log lets tests check that.

Assumptions where the API documentation is silent:

- every API answer is a JSON object; errors are `{"error": CODE, "message": ...}`;
- an unknown `task_uuid` (download) or `subscription_key` (status) gets 404
  `{"error": "TASK_NOT_FOUND", ...}`;
- a body that is not a JSON object with the string field asked, a generation form that is
  not `multipart/form-data` or that the API would refuse (see `_forms.py`) gets 400
  `{"error": "INVALID_REQUEST", "message": <what is wrong>}`;
- a submit with less balance than a generation costs gets 402
  `{"error": "INSUFFICIENT_BALANCE", ...}` and charges nothing; both generation endpoints
  cost the same;
- a submitted task lists no files (`{"error": "OK", "list": []}`) until every job is Done,
  and never when a job ends otherwise;
- `submit_time` is ISO 8601 in UTC; `prompt` echoes the prompt sent (null when none);
- an expired file URL gets 403 with an S3-style XML body, like object stores answer.

Every endpoint is an `async def (request, ctx) -> Response` in `_API_ROUTES`. `_gate()` takes
the next API fault for it and answers early when the fault replaces the response or the key
is wrong; the real answer is built with `_api_json()` so the remaining (wire) faults apply.
A wire fault on a submit (a reset, say) still creates and charges the task: the request
reached the server, only the answer is lost.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import json
import mimetypes
import re
import secrets
import uuid as uuid_module
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import quote, urlencode

import attrs
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._content import BytesContent
from ._faults import (
    BodyFault,
    ExpireFault,
    Fault,
    IgnoreRangeFault,
    RedirectFault,
    StatusFault,
    WrongContentRangeFault,
)
from ._forms import Form, rodin_problem, texture_problem
from ._jobs import Ticket
from ._results import result_files
from ._state import (
    Endpoint,
    FileEntry,
    Listed,
    Origin,
    RecordedRequest,
    ServerState,
    Submission,
)
from ._wire import Hub, WireResponse

_SLOT = "rodin_async.testing.slot"  # where the recorder leaves the log slot in the scope
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Starlette parses multipart bodies with python-multipart (in the `testing` extra).
_HAVE_MULTIPART = importlib.util.find_spec("python_multipart") is not None
_EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


@attrs.frozen
class Context:
    """What the route handlers share: the model, the running servers, the file origin."""

    state: ServerState
    hub: Hub
    files_url: str


# -- request log ---------------------------------------------------------------------------


class Recorder:
    """ASGI middleware logging every request on arrival and the status it was answered."""

    def __init__(self, app: ASGIApp, state: ServerState, origin: Origin) -> None:
        self._app, self._state, self._origin = app, state, origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Log the request, then pass it on, noting the status as it goes out."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        slot = self._state.record(self._describe(scope))
        scope[_SLOT] = slot

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._state.answered(slot, message["status"])
            await send(message)

        await self._app(scope, receive, send_noting_status)

    def _describe(self, scope: Scope) -> RecordedRequest:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return RecordedRequest(
            origin=self._origin,
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers=headers,
            range=headers.get("range"),
            task_uuid=None,
            file_name=None,
            status=0,
        )


def _annotate(ctx: Context, request: Request, task_uuid: str, name: str | None = None) -> None:
    ctx.state.annotate(request.scope[_SLOT], task_uuid, name)


# -- shared responses ----------------------------------------------------------------------


def _plain(
    code: int, body: bytes, media_type: str, headers: dict[str, str] | None = None
) -> Response:
    # 204 and 304 cannot carry a body (h11 would refuse to send one), so drop it there.
    return Response(b"" if code in (204, 304) else body, code, headers, media_type=media_type)


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:  # a status Python does not name, such as 599
        return "Error"


def _status_response(fault: StatusFault, origin: Origin) -> Response:
    # The default body looks like what each host sends: a JSON envelope from the API, a
    # short text from the file host.
    phrase = _phrase(fault.code)
    headers = {} if fault.retry_after is None else {"retry-after": fault.retry_after}
    if origin == "api":
        envelope = {"error": phrase.upper().replace(" ", "_"), "message": "Injected fault."}
        default, media_type = json.dumps(envelope).encode(), "application/json"
    else:
        default, media_type = phrase.encode(), "text/plain"
    body = default if fault.payload is None else fault.payload
    return _plain(fault.code, body, media_type, headers)


def _early_response(fault: Fault | None, origin: Origin) -> Response | None:
    # Faults that replace the whole response, whatever the request asked.
    if isinstance(fault, StatusFault):
        return _status_response(fault, origin)
    if isinstance(fault, BodyFault):
        return _plain(fault.code, fault.raw, fault.content_type)
    return None


# -- the API -------------------------------------------------------------------------------


def _api_json(ctx: Context, status: int, payload: object, fault: Fault | None) -> Response:
    content = BytesContent(json.dumps(payload).encode())
    return WireResponse(status, {"content-type": "application/json"}, content, ctx.hub, fault=fault)


def _api_error(ctx: Context, status: int, code: str, message: str, fault: Fault | None) -> Response:
    return _api_json(ctx, status, {"error": code, "message": message}, fault)


def _authorized(ctx: Context, request: Request) -> bool:
    sent = request.headers.get("authorization", "").encode()
    return secrets.compare_digest(sent, f"Bearer {ctx.state.api_key}".encode())


async def _json_field(request: Request, field: str) -> str | None:
    # The string value of `field` in a JSON object body, or None if the body is not that.
    try:
        payload = await request.json()
    except ValueError:
        return None
    value = payload.get(field) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


async def _discard_body(request: Request) -> None:
    # Read an unwanted body, so the client is never cut off while still uploading.
    async for _ in request.stream():
        pass


async def _gate(
    request: Request, ctx: Context, endpoint: Endpoint
) -> tuple[Fault | None, Response | None]:
    """Take the endpoint's next fault; return an answer too when the request ends here."""
    fault = ctx.state.pop_api_fault(endpoint)
    early = _early_response(fault, "api")
    if early is None and not _authorized(ctx, request):
        early = _api_error(ctx, 401, "UNAUTHORIZED", "Active API key is required.", fault)
    if early is not None:
        await _discard_body(request)
    return fault, early


async def _download(request: Request, ctx: Context) -> Response:
    fault, early = await _gate(request, ctx, "download")
    if early is not None:
        return early
    task_uuid = await _json_field(request, "task_uuid")
    if task_uuid is None:
        message = 'Send a JSON object with a string "task_uuid".'
        return _api_error(ctx, 400, "INVALID_REQUEST", message, fault)
    _annotate(ctx, request, task_uuid)
    listing = ctx.state.list_task(task_uuid)
    if listing is None:
        return _api_error(ctx, 404, "TASK_NOT_FOUND", f"No task {task_uuid!r}.", fault)
    files = [{"url": _listed_url(ctx, task_uuid, item), "name": item.name} for item in listing]
    return _api_json(ctx, 201, {"error": "OK", "list": files}, fault)


def _listed_url(ctx: Context, task_uuid: str, item: Listed) -> str:
    # A remote task's URL is listed verbatim; the fake's own files get a token URL.
    if item.url is not None:
        return item.url
    return file_url(ctx.files_url, task_uuid, item.index, item.name, item.token)


async def _status(request: Request, ctx: Context) -> Response:
    fault, early = await _gate(request, ctx, "status")
    if early is not None:
        return early
    key = await _json_field(request, "subscription_key")
    if key is None:
        message = 'Send a JSON object with a string "subscription_key".'
        return _api_error(ctx, 400, "INVALID_REQUEST", message, fault)
    found = ctx.state.job_statuses(key)
    if found is None:
        return _api_error(ctx, 404, "TASK_NOT_FOUND", "No task has that subscription key.", fault)
    task_uuid, jobs = found
    _annotate(ctx, request, task_uuid)
    listed = [{"uuid": job_uuid, "status": status} for job_uuid, status in jobs]
    return _api_json(ctx, 201, {"error": "OK", "jobs": listed}, fault)


async def _check_balance(request: Request, ctx: Context) -> Response:
    fault, early = await _gate(request, ctx, "check_balance")
    if early is not None:
        return early
    return _api_json(ctx, 201, {"balance": ctx.state.balance}, fault)


def _as_form(data: FormData) -> Form:
    fields: dict[str, list[str]] = {}
    files: dict[str, list[tuple[str, int]]] = {}
    for name, value in data.multi_items():
        if isinstance(value, str):
            fields.setdefault(name, []).append(value)
        else:
            files.setdefault(name, []).append((value.filename or "", value.size or 0))
    return Form(fields, files)


async def _read_form(request: Request) -> Form | str:
    """The multipart form sent, or what is wrong with the body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        await _discard_body(request)
        return f"Send the form as multipart/form-data, not {media_type or 'no content type'}."
    if not _HAVE_MULTIPART:
        raise RuntimeError("FakeRodin needs python-multipart: install rodin-async[testing].")
    try:
        async with request.form() as data:
            return _as_form(data)
    except HTTPException as exc:  # starlette's verdict on a malformed body
        return f"The multipart body is malformed: {exc.detail}"


def _submitted(task_uuid: str, form: Form, ticket: Ticket) -> dict[str, object]:
    return {
        "error": None,
        "message": "Submitted.",
        "uuid": task_uuid,
        "jobs": {"uuids": list(ticket.job_uuids), "subscription_key": ticket.subscription_key},
        "prompt": form.text("prompt"),
        "submit_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }


async def _submit(
    request: Request, ctx: Context, endpoint: Endpoint, problem_of: Callable[[Form], str | None]
) -> Response:
    """Validate a generation form, charge it, and create its task."""
    fault, early = await _gate(request, ctx, endpoint)
    if early is not None:
        return early
    form = await _read_form(request)
    if isinstance(form, str):
        return _api_error(ctx, 400, "INVALID_REQUEST", form, fault)
    if (problem := problem_of(form)) is not None:
        ctx.state.record_submission(Submission(endpoint, form.fields, form.files, None))
        return _api_error(ctx, 400, "INVALID_REQUEST", problem, fault)
    task_uuid = str(uuid_module.uuid4())
    geometry_format = form.text("geometry_file_format") or "glb"
    files = result_files(task_uuid, geometry_format, form.text("material") or "PBR")
    ticket = ctx.state.start_generation(task_uuid, form.text("prompt"), files)
    recorded = None if ticket is None else task_uuid
    ctx.state.record_submission(Submission(endpoint, form.fields, form.files, recorded))
    if ticket is None:
        message = f"A generation costs {ctx.state.settings.cost}; the balance is lower."
        return _api_error(ctx, 402, "INSUFFICIENT_BALANCE", message, fault)
    _annotate(ctx, request, task_uuid)
    return _api_json(ctx, 201, _submitted(task_uuid, form, ticket), fault)


async def _generate(request: Request, ctx: Context) -> Response:
    return await _submit(request, ctx, "rodin", rodin_problem)


async def _generate_texture(request: Request, ctx: Context) -> Response:
    return await _submit(request, ctx, "rodin_texture_only", texture_problem)


Handler = Callable[[Request, Context], Awaitable[Response]]

# (method, path, handler) for every API endpoint the fake implements.
_API_ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/api/v2/download", _download),
    ("POST", "/api/v2/status", _status),
    ("GET", "/api/v2/check_balance", _check_balance),
    ("POST", "/api/v2/rodin", _generate),
    ("POST", "/api/v2/rodin_texture_only", _generate_texture),
]


def build_api_app(ctx: Context) -> ASGIApp:
    """The fake Rodin API, wrapped in the request recorder."""
    routes = [
        Route(path, functools.partial(_with_context, handler, ctx), methods=[method])
        for method, path, handler in _API_ROUTES
    ]
    return Recorder(Starlette(routes=routes), ctx.state, "api")


async def _with_context(handler: Handler, ctx: Context, request: Request) -> Response:
    # Starlette endpoints take only the request; the handlers also need the context.
    return await handler(request, ctx)


# -- the file host -------------------------------------------------------------------------


def _segment(text: str) -> str:
    # Quote everything, and dots too when the segment is only dots: clients normalise
    # "." and ".." segments away, which would change the URL's path.
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if set(text) == {"."} else quoted


def file_url(
    files_url: str, task_uuid: str, index: int, name: str, token: str, **query: str
) -> str:
    """The URL of file number `index` of a task, valid while `token` is."""
    path = f"/{_segment(task_uuid)}/{index}/{_segment(name)}"
    return f"{files_url}/files{path}?{urlencode({'token': token, **query})}"


def _redirect_url(ctx: Context, task_uuid: str, index: int, name: str, **query: str) -> str:
    path = f"/{_segment(task_uuid)}/{index}/{_segment(name)}"
    return f"{ctx.files_url}/redirect{path}?{urlencode(query)}"


def _file_headers(entry: FileEntry) -> dict[str, str]:
    kind = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    return {
        "content-type": kind,
        "accept-ranges": "bytes",
        "etag": entry.etag,
        "last-modified": entry.last_modified,
    }


def _range_of(request: Request, entry: FileEntry) -> str | None:
    """The Range to honour: none when ``If-Range`` names another version (RFC 9110)."""
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range not in (entry.etag, entry.last_modified):
        return None
    return request.headers.get("range")


class _Unsatisfiable(Exception):
    """The Range asked starts beyond the end of the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the `[start, stop)` a Range header asks for, or None to send the whole file.

    A missing, malformed or multi-range header is ignored, as RFC 9110 allows.

    Raises:
        _Unsatisfiable: The range starts at or beyond `size` (answer 416).
    """
    match = _RANGE.fullmatch(header.replace(" ", "")) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - int(last), 0), size
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, size if last == "" else min(int(last) + 1, size)


def _body_response(
    ctx: Context, entry: FileEntry, span: tuple[int, int] | None, fault: Fault | None
) -> Response:
    headers, size = _file_headers(entry), entry.content.size
    if span is None:
        return WireResponse(200, headers, entry.content, ctx.hub, fault=fault)
    headers["content-range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
    return WireResponse(206, headers, entry.content, ctx.hub, span=span, fault=fault)


def _shifted(span: tuple[int, int] | None, size: int) -> tuple[int, int]:
    # A range starting elsewhere than asked: at 0 for a resume, at 1 for a fresh start
    # (a file of at most one byte has nowhere else to start).
    start, stop = span or (0, size)
    moved = 0 if start > 0 else 1
    return (moved, stop) if moved < stop else (start, stop)


def _ranged_response(
    ctx: Context, request: Request, entry: FileEntry, fault: Fault | None
) -> Response:
    size = entry.content.size
    if isinstance(fault, IgnoreRangeFault):
        return _body_response(ctx, entry, None, None)
    try:
        span = parse_range(_range_of(request, entry), size)
    except _Unsatisfiable:
        return Response(b"", 416, {**_file_headers(entry), "content-range": f"bytes */{size}"})
    if isinstance(fault, WrongContentRangeFault):
        return _body_response(ctx, entry, _shifted(span, size), None)
    return _body_response(ctx, entry, span, fault)


def _first_redirect(ctx: Context, request: Request, fault: RedirectFault) -> Response:
    task_uuid, index = request.path_params["task"], request.path_params["index"]
    name, token = request.path_params["name"], request.query_params.get("token", "")
    code = str(fault.code)
    if fault.hops is None:
        url = _redirect_url(ctx, task_uuid, index, name, token=token, code=code, loop="0")
    elif fault.hops == 1:
        url = file_url(ctx.files_url, task_uuid, index, name, token, via="redirect")
    else:
        url = _redirect_url(
            ctx, task_uuid, index, name, token=token, code=code, left=str(fault.hops - 1)
        )
    return RedirectResponse(url, fault.code)


def _lookup(ctx: Context, request: Request) -> tuple[str, int, FileEntry] | None:
    # The file a /files or /redirect URL points at (the name in the URL is cosmetic).
    task_uuid, index = request.path_params["task"], request.path_params["index"]
    entry = ctx.state.entry(task_uuid, index)
    if entry is None:
        return None
    _annotate(ctx, request, task_uuid, entry.name)
    return task_uuid, index, entry


async def _serve_file(request: Request, ctx: Context) -> Response:
    found = _lookup(ctx, request)
    if found is None:
        return Response(b"Not Found", 404, media_type="text/plain")
    task_uuid, _, entry = found
    if not ctx.state.token_valid(task_uuid, request.query_params.get("token")):
        return Response(_EXPIRED_XML, 403, media_type="application/xml")
    fault = ctx.state.pop_fault(entry)
    if (early := _early_response(fault, "files")) is not None:
        return early
    if isinstance(fault, ExpireFault):
        ctx.state.expire(task_uuid)
        return Response(_EXPIRED_XML, 403, media_type="application/xml")
    if isinstance(fault, RedirectFault):
        return _first_redirect(ctx, request, fault)
    return _ranged_response(ctx, request, entry, fault)


async def _serve_redirect(request: Request, ctx: Context) -> Response:
    found, query = _lookup(ctx, request), request.query_params
    code, left = query.get("code", ""), query.get("left", "1")
    if found is None or not (code.isdigit() and left.isdigit()):
        return Response(b"Not Found", 404, media_type="text/plain")
    task_uuid, index, entry = found
    where = {"token": query.get("token", ""), "code": code}
    if "loop" in query:  # bounce between loop=0 and loop=1 for ever
        other = "1" if query["loop"] == "0" else "0"
        url = _redirect_url(ctx, task_uuid, index, entry.name, **where, loop=other)
    elif int(left) > 1:
        url = _redirect_url(ctx, task_uuid, index, entry.name, **where, left=str(int(left) - 1))
    else:
        url = file_url(ctx.files_url, task_uuid, index, entry.name, where["token"], via="redirect")
    return RedirectResponse(url, int(code))


def build_files_app(ctx: Context) -> ASGIApp:
    """The fake result-file host, wrapped in the request recorder."""
    methods = ["GET", "HEAD"]
    routes = [
        Route(
            "/files/{task}/{index:int}/{name:path}",
            functools.partial(_with_context, _serve_file, ctx),
            methods=methods,
        ),
        Route(
            "/redirect/{task}/{index:int}/{name:path}",
            functools.partial(_with_context, _serve_redirect, ctx),
            methods=methods,
        ),
    ]
    return Recorder(Starlette(routes=routes), ctx.state, "files")
