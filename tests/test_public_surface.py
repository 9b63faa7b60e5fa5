"""The public surface as users meet it: typing, hashing, pickling, reprs and help()."""

from __future__ import annotations

import inspect
import pickle
import pydoc
import sys
import traceback
import types
import typing
from pathlib import Path

import cattrs
import pytest

import rodin_async
import rodin_async.testing
from rodin_async import (
    APIError,
    AsyncRodin,
    AuthenticationError,
    DownloadedFile,
    DownloadError,
    FileFailed,
    FileRetried,
    GenerationJob,
    Job,
    JobStatus,
    RateLimitError,
    RetryPolicy,
    TaskDownload,
    TaskDownloadError,
    TaskStatus,
)
from rodin_async.testing import FakeRodin, Fault

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

pytestmark = pytest.mark.anyio
T = typing.TypeVar("T")


def round_trip(value: T) -> T:
    """*value* after pickling and unpickling, as multiprocessing would hand it over."""
    copy: T = pickle.loads(pickle.dumps(value))  # noqa: S301  (bytes we just made)
    return copy


class MyRodin(AsyncRodin):
    pass


async def test_aenter_returns_self() -> None:
    """`async with` on a subclass gives the subclass, and says so to type checkers."""
    assert typing.get_type_hints(AsyncRodin.__aenter__)["return"] is Self
    async with MyRodin("key", base_url="http://127.0.0.1:9/") as rodin:
        assert type(rodin) is MyRodin


def test_fake_server_enter_returns_self() -> None:
    """FakeRodin's `with` and `async with` are typed Self as well."""
    assert typing.get_type_hints(FakeRodin.__enter__)["return"] is Self
    assert typing.get_type_hints(FakeRodin.__aenter__)["return"] is Self


async def failed_results(tmp_path: Path) -> list[TaskDownload]:
    """Three real results from the fake server: one ok, one with a failed file, one refused."""
    with FakeRodin(api_key="sk-surface") as server:
        ok = server.add_task({"a.glb": 1000, "b.png": 10})
        broken = server.add_task({"a.glb": 1000, "b.png": 10})
        server.add_faults(broken, "b.png", Fault.status(500, body=b"no"))
        refused = server.add_task({"a.glb": 10})
        retry = RetryPolicy(attempts=1)
        async with AsyncRodin(server.api_key, base_url=server.base_url, retry=retry) as rodin:
            results = {r.task_uuid: r async for r in rodin.download_many([ok, broken], tmp_path)}
        server.add_api_faults(Fault.status(403), endpoint="download")
        async with AsyncRodin(server.api_key, base_url=server.base_url, retry=retry) as rodin:
            results[refused] = await anext(aiter(rodin.download_many([refused], tmp_path)))
    return [results[ok], results[broken], results[refused]]


async def test_task_downloads_hash_and_survive_pickling(tmp_path: Path) -> None:
    """TaskDownload is hashable and equal to its pickled copy, errors included."""
    ok, broken, refused = await failed_results(tmp_path)
    assert ok.error is None
    assert isinstance(broken.error, TaskDownloadError)
    assert isinstance(refused.error, AuthenticationError)
    for result in (ok, broken, refused):
        assert isinstance(result.files, tuple)
        copy = round_trip(result)
        assert copy == result
        assert hash(copy) == hash(result)
    assert len({ok, broken, refused, *round_trip([ok, broken, refused])}) == 3


def test_results_with_different_errors_differ(tmp_path: Path) -> None:
    """Errors compare by type and message: a different error, or none, is a different result."""
    base = TaskDownload("t", tmp_path, error=APIError("refused", code="X", status_code=400))
    assert base == TaskDownload("t", tmp_path, error=APIError("refused", code="X", status_code=400))
    assert base != TaskDownload("t", tmp_path)
    assert base != TaskDownload("t", tmp_path, error=APIError("other", code="X", status_code=400))
    assert base != TaskDownload(
        "t", tmp_path, error=RateLimitError("refused", code="X", status_code=400)
    )


def test_files_are_a_tuple_whatever_was_passed(tmp_path: Path) -> None:
    """A list of files given to TaskDownload is stored as a tuple (so the result hashes)."""
    file = DownloadedFile("a.glb", tmp_path / "a.glb", 3, "abc")
    result = TaskDownload("t", tmp_path, [file])
    assert result.files == (file,)
    assert hash(result) == hash(TaskDownload("t", tmp_path, (file,)))


def test_generation_results_hash_and_survive_pickling() -> None:
    """GenerationJob and TaskStatus hold tuples, hash, and are equal after a pickle round trip."""
    job = GenerationJob("task", "sub", ["j1", "j2"], "Submitted.", "a chair")
    status = TaskStatus([Job("j1", JobStatus.DONE, "Done"), Job("j2", JobStatus.UNKNOWN, "Paused")])
    assert job.job_uuids == ("j1", "j2")
    assert isinstance(status.jobs, tuple)
    for value in (job, status):
        copy = round_trip(value)
        assert copy == value
        assert hash(copy) == hash(value)


def test_failure_events_survive_pickling(tmp_path: Path) -> None:
    """FileFailed and FileRetried carry errors and still compare equal after pickling."""
    error = DownloadError("'a.glb': HTTP 500", name="a.glb", url="https://files/a?sig=1")
    events = [
        FileFailed("t", "a.glb", tmp_path / "a.glb", error),
        FileRetried("t", "a.glb", tmp_path / "a.glb", 2, error),
    ]
    for event in events:
        copy = round_trip(event)
        assert copy == event
        assert hash(copy) == hash(event)


def public_classes(module: types.ModuleType) -> list[type]:
    """The classes among *module*'s exports (type aliases left out)."""
    members = [getattr(module, name) for name in module.__all__]
    return [m for m in members if isinstance(m, type) and typing.get_origin(m) is None]


@pytest.mark.parametrize("module", [rodin_async, rodin_async.testing])
def test_public_classes_report_the_package_as_their_module(module: types.ModuleType) -> None:
    """Every exported class says `rodin_async.X`, not `rodin_async._errors.X`, and lives there."""
    classes = public_classes(module)
    assert len(classes) > 3
    for cls in classes:
        assert cls.__module__ == module.__name__, cls
        assert getattr(module, cls.__qualname__) is cls


def test_tracebacks_show_the_public_name() -> None:
    """A traceback names the exception by its public path."""
    error = DownloadError("'a.glb': HTTP 500", name="a.glb", url="https://files/a?sig=1")
    text = "".join(traceback.format_exception_only(type(error), error))
    assert text.startswith("rodin_async.DownloadError: 'a.glb': HTTP 500")
    assert repr(rodin_async.RetryPolicy) == "<class 'rodin_async.RetryPolicy'>"


@pytest.mark.parametrize(
    "error",
    [
        rodin_async.ConfigurationError("no key"),
        rodin_async.TimeoutError("GET /x: timed out"),
        rodin_async.JobFailedError("job-1", "Failed"),
        rodin_async.TaskDownloadError("t", [DownloadError("x", name="a", url="https://f/a")]),
        rodin_async.AuthenticationError("bad key", code="UNAUTHORIZED", status_code=401),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_under_their_public_name(error: Exception) -> None:
    """Errors still pickle, by reference to `rodin_async.X`, and come back the same."""
    assert f"rodin_async\n{type(error).__name__}".encode() in pickle.dumps(error, protocol=0)
    copy = round_trip(error)
    assert type(copy) is type(error)
    assert str(copy) == str(error)


@pytest.mark.parametrize("module", [rodin_async, rodin_async.testing])
def test_type_hints_still_resolve(module: types.ModuleType) -> None:
    """get_type_hints works on every exported class, though `__module__` is the package now."""
    for cls in public_classes(module):
        typing.get_type_hints(cls)


def test_results_unstructure_with_cattrs(tmp_path: Path) -> None:
    """A user's own cattrs converter can turn a result into plain data (it resolves types)."""
    file = DownloadedFile("a.glb", tmp_path / "a.glb", 3, "abc")
    result = TaskDownload("t", tmp_path, [file])
    data = cattrs.Converter().unstructure(result)
    assert data["files"][0]["size"] == 3
    assert data["directory"] == str(tmp_path)


def test_help_on_progress_event_explains_it() -> None:
    """help(ProgressEvent) shows what the union holds and how to use it, not UnionType's help."""
    text = pydoc.render_doc(rodin_async.ProgressEvent, renderer=pydoc.plaintext)
    assert "UnionType" not in text
    assert "on_progress" in text and "match event:" in text
    for event in typing.get_args(rodin_async.ProgressEvent):
        assert f"`{event.__name__}`:" in text


def test_progress_event_example_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The match example in ProgressEvent's docstring runs and tells the events apart."""
    doc = inspect.cleandoc(rodin_async.ProgressEvent.__doc__ or "")
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {"rodin_async": rodin_async}
    exec(example, namespace)  # noqa: S102  (our own docstring)
    on_progress = typing.cast(typing.Callable[[object], None], namespace["on_progress"])
    failed = TaskDownload("t-1", tmp_path, error=rodin_async.InvalidTaskError("bad uuid"))
    on_progress(rodin_async.FileFinished("t-1", "a.glb", tmp_path / "a.glb", 12))
    on_progress(rodin_async.TaskFinished(failed))
    on_progress(rodin_async.TaskStarted("t-1", 1))
    assert capsys.readouterr().out == "a.glb: 12 bytes\nt-1 failed: bad uuid\n"


def test_help_on_fault_explains_how_to_use_it() -> None:
    """help(Fault) says how faults are queued and names every constructor, each documented."""
    text = pydoc.render_doc(Fault, renderer=pydoc.plaintext)
    assert "add_faults" in text and "add_api_faults" in text
    constructors = [
        name
        for name, member in vars(Fault).items()
        if isinstance(member, staticmethod) and not name.startswith("_")
    ]
    assert len(constructors) == 13
    doc = Fault.__doc__ or ""
    for name in constructors:
        assert f"`{name}`" in doc, name
        assert getattr(Fault, name).__doc__, name
