"""Property-based tests: the name sanitiser and the response converter under any input.

Server-supplied names and API bodies are untrusted. Whatever they hold, a name must land
inside the task folder as one plain, portable, unique file, and a body must become a model
or a `RodinError`, never anything else.
"""

from __future__ import annotations

import json
import os
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rodin_async import APIError, ResponseFormatError, RodinError
from rodin_async._client import _decode
from rodin_async._files import safe_name, unique_names
from rodin_async._models import (
    BalanceAnswer,
    Envelope,
    FileList,
    StatusAnswer,
    SubmitAnswer,
    parse_json,
    structure,
)

NAME_LIMIT = 255  # bytes, on every common filesystem
# Windows device names, matched on what precedes the first dot, trailing spaces ignored.
RESERVED = {"con", "prn", "aux", "nul", "conin$", "conout$"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in [*"0123456789", "¹", "²", "³"]
}
FRAGMENTS = [
    "/", "\\", ".", "..", "...", " ", "\x00", "\n", "\x1b[31m", "\x7f", "\x85", "\x9b",
    "\u202e", "\ud800", "\udfff", "con", "CON", "nul.txt", "Com1", "lpt¹", "aux ",
    "conout$", "a" * 120, "é" * 90, "\U0001d4b3" * 70, "model", ".glb", ".part",
    ".rodin-manifest.json", "~", ":", "*", "?", "ß", "SS", "İ", "K", "\u212a",
    "e\u0301", "\u00e9",
]  # fmt: skip
_ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
NAMES = st.one_of(
    st.text(_ANY_CHAR, max_size=300),
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(_ANY_CHAR, max_size=8)), max_size=10
    ).map("".join),
)


def _assert_safe(name: str) -> None:
    """One name that can be created as itself, and as its part file, in any folder."""
    assert name, "empty"
    encoded = name.encode("utf-8")  # raises on a lone surrogate
    assert len(encoded) <= NAME_LIMIT and len(f".{name}.part".encode()) <= NAME_LIMIT, name
    assert name not in (".", "..") and not name.startswith("."), name
    assert not name.endswith((".", " ")), name  # Windows drops these: a hidden collision
    bad = [c for c in name if c in '/\\\x00<>:"|?*' or unicodedata.category(c) == "Cc"]
    assert not bad, (name, bad)
    assert name.split(".", 1)[0].rstrip(" ").lower() not in RESERVED, name
    assert unicodedata.is_normalized("NFC", name), name
    assert safe_name(name) == name, "not a fixed point: manifests re-check names with it"


@settings(max_examples=300, deadline=None)
@given(NAMES)
@example("a\x85b\x9bc.glb")  # C1 controls: NEL, and CSI, which 8-bit terminals obey
@example("x" * 300 + ".glb")
@example("é" * 200 + "." + "ü" * 8)
def test_safe_name_is_always_a_plain_portable_name(raw: str) -> None:
    """Any unicode (surrogates, separators, dots, controls, devices) gives one safe name."""
    _assert_safe(safe_name(raw))


@settings(max_examples=200, deadline=None)
@given(st.lists(NAMES, max_size=12))
@example(["a." + "b" * 247] * 2)  # a long "extension": the -2 suffix must still fit
@example(["a" * 249] * 3)
@example(["A.glb", "a.GLB", "a.glb", "a-2.glb", "A-2.GLB"])
@example(["ß.png", "SS.png", "ss.png"])
@example(["con", "_con", "CON", "_CON-2"])
def test_unique_names_are_safe_distinct_and_deterministic(raw: list[str]) -> None:
    """Every name is safe, no two collide case-insensitively, and the result is stable."""
    names = unique_names(raw)
    assert len(names) == len(raw)
    for name in names:
        _assert_safe(name)
    assert len({n.casefold() for n in names}) == len(names), names
    assert unique_names(raw) == names


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(NAMES, min_size=1, max_size=8))
@example(["a." + "b" * 247] * 2)
@example(["../../escape.glb", "..\\up.png", "/abs", "..", "", "\x00"])
def test_names_really_create_files_inside_the_folder(raw: list[str]) -> None:
    """Creating every final and .part file works, and each lands directly in the folder."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "task"
        folder.mkdir()
        names = unique_names(raw)
        for name in names:
            for path in (folder / name, folder / f".{name}.part"):
                path.write_bytes(b"x")
                assert path.resolve().parent == folder.resolve()
        assert len(os.listdir(folder)) == 2 * len(names)


# -- the response converter ----------------------------------------------------------------

KEYS = [
    "error", "message", "list", "name", "url", "uuid", "jobs", "uuids", "status",
    "subscription_key", "balance", "prompt",
]  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["OK", "", "http://127.0.0.1:1/a", "Done", "INVALID_API_KEY"]),
)
_KEYS = st.one_of(st.sampled_from(KEYS), st.text(max_size=5))
JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_KEYS, children, max_size=5),
    ),
    max_leaves=25,
)
MODELS = [Envelope, FileList, StatusAnswer, SubmitAnswer, BalanceAnswer]


def outcome(call: Callable[[], object]) -> object:
    """What *call* returns, or the `RodinError` it raises; anything else propagates."""
    try:
        return call()
    except RodinError as exc:
        return exc


@settings(max_examples=200, deadline=None)
@given(JSON, st.sampled_from(MODELS))
@example({"error": "OK", "list": [{"name": "a", "url": "u"}]}, FileList)
@example({"error": "OK", "list": {"name": "a", "url": "u"}}, FileList)
@example({"balance": 10**400}, BalanceAnswer)
@example({"balance": True}, BalanceAnswer)
@example({"uuid": "u", "jobs": {"uuids": "abc", "subscription_key": "k"}}, SubmitAnswer)
@example({"jobs": [{"uuid": "j", "status": 5}]}, StatusAnswer)
def test_any_json_becomes_a_model_or_a_format_error(raw: object, model: type[Envelope]) -> None:
    """Arbitrary JSON structured as any answer is that answer or a ResponseFormatError."""
    result = outcome(lambda: structure(raw, model, status_code=201))
    if isinstance(result, ResponseFormatError):
        assert result.status_code == 201 and str(result)
    else:
        assert type(result) is model
    again = parse_json(json.dumps(raw).encode(), status_code=201)
    assert json.dumps(again) == json.dumps(raw)  # (compared as text: NaN != NaN)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
@example(b"[" * 100_000)  # deep nesting: the json module raises RecursionError
@example(b'{"a":' * 50_000)
@example(b"\xff\xfe")
@example(b"NaN")
def test_any_body_parses_or_is_a_format_error(body: bytes) -> None:
    """Arbitrary bytes decode to JSON or raise ResponseFormatError, never anything else."""
    result = outcome(lambda: parse_json(body, status_code=201))
    if isinstance(result, ResponseFormatError):
        assert "not JSON" in str(result)


_STATUSES = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 502, 503])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)),
    _STATUSES,
    st.sampled_from(MODELS),
    st.one_of(st.none(), st.sampled_from(["0", "5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])),
)
@example(b"[" * 100_000, 502, FileList, None)  # an error page nested past recursion
@example(b"[" * 100_000, 201, FileList, None)
def test_any_api_answer_decodes_to_a_model_or_an_api_error(
    body: bytes, status: int, model: type[Envelope], retry_after: str | None
) -> None:
    """Whatever the status, headers and body, an answer is a model or an APIError."""
    headers = {} if retry_after is None else {"retry-after": retry_after}
    response = httpx.Response(status, content=body, headers=headers)
    result = outcome(lambda: _decode(response, model))
    if isinstance(result, RodinError):
        assert isinstance(result, APIError) and result.status_code == status
    else:
        assert 200 <= status < 300 and type(result) is model


@pytest.mark.parametrize("model", MODELS)
def test_the_documented_answers_still_structure(model: type[Envelope]) -> None:
    """The converter accepts the documented answers (the properties above are not vacuous)."""
    documented: dict[type[Envelope], object] = {
        Envelope: {"error": None},
        FileList: {"error": "OK", "list": [{"name": "a.glb", "url": "https://x/a"}]},
        StatusAnswer: {"error": "OK", "jobs": [{"uuid": "j", "status": "Done"}]},
        SubmitAnswer: {"uuid": "t", "jobs": {"uuids": ["j"], "subscription_key": "k"}},
        BalanceAnswer: {"balance": 12.5},
    }
    assert type(structure(documented[model], model, status_code=201)) is model
