"""What a generation asks for: validated requests and the multipart forms they become.

Everything the documentation constrains is checked here, before a request (and a credit)
is spent. The wire format is the API's: booleans as ``"true"``/``"false"``, repeated
fields for lists, ``bbox_condition`` as a JSON string.
"""

from __future__ import annotations

import json
import mimetypes
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal, Union

import anyio
import attrs

from ._errors import ValidationError

Tier = Literal[
    "Sketch",
    "Regular",
    "Detail",
    "Smooth",
    "Gen-2",
    "Gen-2.5-Extreme-Low",
    "Gen-2.5-Low",
    "Gen-2.5-Medium",
    "Gen-2.5-High",
    "Gen-2.5-Extreme-High",
]
"""The generation tiers ``POST /rodin`` accepts (``tier=``)."""
ConditionMode = Literal["concat", "fuse"]
"""How several images condition one generation (``condition_mode=``)."""
GeometryFormat = Literal["glb", "usdz", "fbx", "obj", "stl"]
"""The file formats a model can be delivered in (``geometry_file_format=``)."""
Material = Literal["PBR", "Shaded", "All", "None"]
"""The materials of a generated model (``material=``)."""
Quality = Literal["high", "medium", "low", "extra-low"]
"""Face-count presets of a generated mesh (``quality=``)."""
MeshMode = Literal["Quad", "Raw"]
"""Quad faces, or the raw triangle mesh (``mesh_mode=``)."""
GeometryInstructMode = Literal["faithful", "creative"]
"""How closely the geometry follows the inputs (``geometry_instruct_mode=``)."""
TextureMaterial = Literal["PBR", "Shaded"]
"""The materials of a texture-only generation (``generate_texture(material=)``)."""
TextureResolution = Literal["Basic", "High"]
"""The resolutions of a texture-only generation (``generate_texture(resolution=)``)."""

#: An image or model to upload: a path, raw bytes, or an open binary file.
FileInput = Union[str, "os.PathLike[str]", bytes, IO[bytes]]
FormFile = tuple[str, tuple[str, bytes, str]]

MAX_IMAGES = 5
MAX_MODEL_BYTES = 10 * 1000 * 1000
_MAGIC = {
    b"\x89PNG": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"glTF": "model/gltf-binary",
}


def _choice(name: str, value: str | None, allowed: object) -> None:
    options = typing.get_args(allowed)
    if value is not None and value not in options:
        raise ValidationError(f"{name} must be one of {', '.join(options)}; got {value!r}")


def _integer(name: str, value: int | None, low: int, high: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValidationError(f"{name} must be {bounds}, got {value}")


@attrs.frozen(kw_only=True)
class GenerationRequest:
    """A ``POST /rodin`` generation, checked against the documented rules when built.

    Every argument of `AsyncRodin.generate` is a field here; None means "let the API
    choose its default" and is not sent.

    Raises:
        ValidationError: More than 5 images, no prompt without images, a seed outside
            0-65535, a bbox that isn't 3 positive integers, or a value not in its set.
    """

    images: Sequence[FileInput] = ()
    prompt: str | None = None
    tier: Tier | None = None
    condition_mode: ConditionMode | None = None
    seed: int | None = None
    geometry_file_format: GeometryFormat | None = None
    material: Material | None = None
    quality: Quality | None = None
    quality_override: int | None = None
    mesh_mode: MeshMode | None = None
    mesh_simplify: bool | None = None
    mesh_smooth: bool | None = None
    use_hyper: bool | None = None
    TAPose: bool | None = None  # the API's own spelling
    bbox_condition: Sequence[int] | None = None
    addons: Sequence[str] = ()
    preview_render: bool | None = None
    use_original_alpha: bool | None = None
    hd_texture: bool | None = None
    texture_delight: bool | None = None
    texture_mode: str | None = None
    is_micro: bool | None = None
    geometry_instruct_mode: GeometryInstructMode | None = None

    def __attrs_post_init__(self) -> None:
        if isinstance(self.images, (str, bytes)) or not isinstance(self.images, Sequence):
            raise ValidationError("images must be a list of paths, bytes or binary files")
        if len(self.images) > MAX_IMAGES:
            raise ValidationError(f"at most {MAX_IMAGES} images, got {len(self.images)}")
        if not self.images and not (self.prompt and self.prompt.strip()):
            raise ValidationError("a prompt is required when no images are given")
        _integer("seed", self.seed, 0, 65535)
        _integer("quality_override", self.quality_override, 1)
        self._check_bbox()
        for name, allowed in _CHOICES.items():
            _choice(name, getattr(self, name), allowed)

    def _check_bbox(self) -> None:
        bbox = self.bbox_condition
        if bbox is None:
            return
        if isinstance(bbox, (str, bytes)) or len(bbox) != 3:
            raise ValidationError(f"bbox_condition must be 3 integers, got {bbox!r}")
        for value in bbox:
            _integer("each bbox_condition value", value, 1)

    def fields(self) -> list[tuple[str, str]]:
        """The form's text fields, in the API's wire format."""
        out: list[tuple[str, str]] = []
        for field in attrs.fields(GenerationRequest):
            if field.name in ("images", "addons", "bbox_condition", "TAPose"):
                continue
            _add(out, field.name, getattr(self, field.name))
        if self.TAPose is not None:  # spelled both ways in the docs: send both
            _add(out, "TAPose", self.TAPose)
            _add(out, "TApose", self.TAPose)
        if self.bbox_condition is not None:
            out.append(("bbox_condition", json.dumps(list(self.bbox_condition))))
        out.extend(("addons", addon) for addon in self.addons)
        return out

    async def files(self) -> list[FormFile]:
        """The images, read and named, as repeated ``images`` parts."""
        return [await _read("images", image, i) for i, image in enumerate(self.images)]


_CHOICES: dict[str, object] = {
    "tier": Tier,
    "condition_mode": ConditionMode,
    "geometry_file_format": GeometryFormat,
    "material": Material,
    "quality": Quality,
    "mesh_mode": MeshMode,
    "geometry_instruct_mode": GeometryInstructMode,
}


@attrs.frozen(kw_only=True)
class TextureRequest:
    """A ``POST /rodin_texture_only`` request: texture an existing model from an image."""

    image: FileInput
    model: FileInput
    prompt: str | None = None
    seed: int | None = None
    reference_scale: float | None = None
    geometry_file_format: GeometryFormat | None = None
    material: TextureMaterial | None = None
    resolution: TextureResolution | None = None

    def __attrs_post_init__(self) -> None:
        _integer("seed", self.seed, 0, 65535)
        if self.reference_scale is not None and not self.reference_scale > 0:
            raise ValidationError(f"reference_scale must be positive, got {self.reference_scale}")
        _choice("geometry_file_format", self.geometry_file_format, GeometryFormat)
        _choice("material", self.material, TextureMaterial)
        _choice("resolution", self.resolution, TextureResolution)

    def fields(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name in (
            "prompt",
            "seed",
            "reference_scale",
            "geometry_file_format",
            "material",
            "resolution",
        ):
            _add(out, name, getattr(self, name))
        return out

    async def files(self) -> list[FormFile]:
        model = await _read("model", self.model, 0)
        if len(model[1][1]) > MAX_MODEL_BYTES:
            raise ValidationError(f"the model must be at most 10 MB, got {len(model[1][1])} bytes")
        return [await _read("image", self.image, 0), model]


def _add(out: list[tuple[str, str]], name: str, value: object) -> None:
    if value is None:
        return
    out.append((name, ("true" if value else "false") if isinstance(value, bool) else str(value)))


async def _read(field: str, source: FileInput, index: int) -> FormFile:
    """Read one upload into memory (so a retry can send it again) with a name and type."""
    data: object  # a file opened in text mode gives str: refused below
    try:
        if isinstance(source, bytes):
            name, data = f"{field}-{index}", source
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            name, data = path.name, await anyio.Path(path).read_bytes()
        else:
            data = await anyio.to_thread.run_sync(source.read)
            name = Path(str(getattr(source, "name", f"{field}-{index}"))).name
    except OSError as exc:
        raise ValidationError(f"can't read {field} {source!r}: {exc.strerror or exc}") from exc
    if not isinstance(data, bytes) or not data:
        raise ValidationError(f"{field} {name!r} is empty or not binary")
    return field, (name, data, _content_type(name, data))


def _content_type(name: str, data: bytes) -> str:
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
