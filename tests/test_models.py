"""The converter: API JSON becomes frozen models or a ResponseFormatError, nothing else."""

from __future__ import annotations

import attrs
import pytest

from rodin_async import ResponseFormatError, ResultFile
from rodin_async._models import Envelope, FileList, parse_json, structure


def test_list_is_renamed_and_extras_ignored() -> None:
    """The wire's `list` becomes `files`; unknown fields are ignored."""
    body = b'{"error": "OK", "list": [{"url": "https://f/x?sig=1", "name": "x.glb", "new": 1}],'
    body += b' "extra": {"a": 1}}'
    listing = structure(parse_json(body, status_code=201), FileList, status_code=201)
    assert listing.files == [ResultFile(name="x.glb", url="https://f/x?sig=1")]
    assert not listing.failed


@pytest.mark.parametrize("error", [None, "", "OK"])
def test_success_codes(error: str | None) -> None:
    """absent/null/""/"OK" all mean success."""
    assert not Envelope(error=error).failed


def test_models_are_frozen() -> None:
    """Users get immutable values."""
    f = ResultFile(name="a", url="u")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        f.name = "b"  # type: ignore[misc]


def test_result_file_repr_hides_the_presigned_url() -> None:
    """A presigned URL is a credential; it stays out of reprs and so out of logs."""
    assert "sig" not in repr(ResultFile(name="a", url="https://f/a?sig=secret"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"[1, 2]",
        b'"OK"',
        b'{"error": "OK", "list": "nope"}',
        b'{"error": "OK", "list": {"url": "u", "name": "n"}}',
        b'{"error": "OK", "list": [{"name": "x.glb"}]}',
        b'{"error": "OK", "list": [{"url": "u"}]}',
        b'{"error": "OK", "list": [{"url": 5, "name": "x"}]}',
        b'{"error": "OK", "list": [null]}',
        b'{"error": 7}',
        b'{"error": "OK"}',
        b"\xff\xfe",
    ],
)
def test_malformed_answers_raise_response_format_error(body: bytes) -> None:
    """Anything that isn't the documented shape is one clear error, with the status."""
    with pytest.raises(ResponseFormatError) as info:
        structure(parse_json(body, status_code=201), FileList, status_code=201)
    assert info.value.status_code == 201
