"""Safe names: server-supplied names never escape the task folder or collide."""

from __future__ import annotations

import pytest

from rodin_async import InvalidTaskError
from rodin_async._files import MAX_NAME_BYTES, check_task_uuid, part_path, safe_name, unique_names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("base_basic_pbr.glb", "base_basic_pbr.glb"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/absolute/path.glb", "path.glb"),
        ("C:\\Users\\x\\model.fbx", "model.fbx"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("   ", "file"),
        ("a\x00b.glb", "a_b.glb"),
        ("tab\there.png", "tab_here.png"),
        (".hidden", "_hidden"),
        ("...dots", "_dots"),
        ("trailing. ", "trailing"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("COM1.glb", "_COM1.glb"),
        ('what?<>:"|*.glb', "what_______.glb"),
        ("dir/", "file"),
        ("\udc80bad.glb", "_bad.glb"),
    ],
)
def test_safe_name(raw: str, expected: str) -> None:
    """Path parts, control characters, dots and device names are neutralised."""
    assert safe_name(raw) == expected


def test_long_names_are_capped_keeping_the_extension() -> None:
    """Names over the byte limit are cut on a character boundary, keeping .glb."""
    name = "é" * 300 + ".glb"
    safe = safe_name(name)
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert safe.endswith(".glb")
    assert len(part_path(__import__("pathlib").Path(safe)).name.encode()) <= 255


def test_unique_names_keep_both_files() -> None:
    """Two entries with one name (or names that differ only in case) get distinct files."""
    names = unique_names(["a.glb", "a.glb", "A.GLB", "a-2.glb", "x/a.glb"])
    assert names == ["a.glb", "a-2.glb", "A-3.GLB", "a-2-2.glb", "a-4.glb"]
    assert len({n.casefold() for n in names}) == len(names)


def test_unique_names_are_deterministic() -> None:
    """The same listing maps to the same files on every run, so resumes find their parts."""
    listing = ["preview.webp", "x.glb", "x.glb", "../x.glb"]
    assert unique_names(listing) == unique_names(listing)


@pytest.mark.parametrize("bad", ["", "   ", "a/b", "..", ".", "x\x00y", "../up", 42, None])
def test_bad_task_uuids_are_refused(bad: object) -> None:
    """A task uuid must be able to name a folder inside dest by itself."""
    with pytest.raises(InvalidTaskError):
        check_task_uuid(bad)


def test_task_uuid_is_stripped() -> None:
    """Surrounding white space (from files and pipes) is not part of the uuid."""
    assert check_task_uuid("  abc-123\n") == "abc-123"
