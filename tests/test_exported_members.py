"""The public surface: everything exported is listed, and the list is sorted."""

from __future__ import annotations

import typing

import pytest

import rodin_async
import rodin_async.testing

# The Literal aliases users annotate their own code with, and the argument each one types.
LITERALS = {
    "ConditionMode": "condition_mode",
    "GeometryFormat": "geometry_file_format",
    "GeometryInstructMode": "geometry_instruct_mode",
    "Material": "material",
    "MeshMode": "mesh_mode",
    "Quality": "quality",
    "Tier": "tier",
}


def test_all_is_sorted() -> None:
    """__all__ is sorted so additions are easy to review."""
    assert rodin_async.__all__ == sorted(rodin_async.__all__)
    assert rodin_async.testing.__all__ == sorted(rodin_async.testing.__all__)


def test_all_names_public_members() -> None:
    """Every public name defined in the package is exported, and every export exists."""
    public = {n for n in dir(rodin_async) if not n.startswith("_")} - {"testing", "annotations"}
    assert public == set(rodin_async.__all__)
    for name in rodin_async.__all__:
        member = getattr(rodin_async, name)
        # Type aliases (ProgressEvent, ProgressCallback) have no home module.
        if isinstance(member, type) and not hasattr(member, "__origin__"):
            assert member.__module__.startswith("rodin_async")


@pytest.mark.parametrize("name", [*LITERALS, "FileCheck", "TextureMaterial", "TextureResolution"])
def test_literal_types_are_exported(name: str) -> None:
    """The fixed value sets are exported as Literal aliases for users' own annotations."""
    alias = getattr(rodin_async, name)
    assert name in rodin_async.__all__
    assert typing.get_origin(alias) is typing.Literal
    assert all(isinstance(value, str) for value in typing.get_args(alias))


@pytest.mark.parametrize(("name", "argument"), LITERALS.items())
def test_literal_types_are_what_validation_accepts(name: str, argument: str) -> None:
    """Every value of an exported alias passes validation, and nothing outside it does."""
    for value in typing.get_args(getattr(rodin_async, name)):
        rodin_async.GenerationRequest(prompt="a chair", **{argument: value})
    with pytest.raises(rodin_async.ValidationError):
        rodin_async.GenerationRequest(prompt="a chair", **{argument: "not-a-choice"})


def test_texture_literals_are_what_validation_accepts() -> None:
    """TextureMaterial and TextureResolution are exactly what a TextureRequest accepts."""
    for material in typing.get_args(rodin_async.TextureMaterial):
        for resolution in typing.get_args(rodin_async.TextureResolution):
            rodin_async.TextureRequest(
                image=b"png", model=b"glb", material=material, resolution=resolution
            )
    with pytest.raises(rodin_async.ValidationError):
        rodin_async.TextureRequest(image=b"png", model=b"glb", resolution="Ultra")


def test_file_check_names_the_download_check_modes() -> None:
    """FileCheck is the download hash-check mode: size alone, or SHA-256 too."""
    assert typing.get_args(rodin_async.FileCheck) == ("size", "sha256")


def test_version_comes_from_metadata() -> None:
    """__version__ (a constant, cheap to import) is the installed distribution's version."""
    from importlib.metadata import version

    assert rodin_async.__version__ == version("rodin-async")
