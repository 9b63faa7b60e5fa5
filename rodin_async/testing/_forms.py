"""The generation forms: what `/rodin` and `/rodin_texture_only` accept, checked like the API.

A form arrives as text fields and files; `Form` keeps both by name, in the order sent, which
is also what `FakeRodin.submissions` shows. `rodin_problem` and `texture_problem` return the
first thing wrong with a form, as the message the 400 answer carries, or None.

Assumptions where the API documentation is silent:

- unknown fields are ignored (the API grows fields over time) but still recorded;
- a field other than `images` and `addons` may be sent once only;
- integers are plain decimal digits (`seed` 0-65535, `quality_override` at least 1);
- `bbox_condition` is a JSON array of exactly three integers (any sign);
- `reference_scale` is a positive finite number;
- `addons` knows only `HighPack`; `texture_mode` accepts any text;
- an uploaded file must not be empty; `model` may be at most 10 MiB.
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Callable, Mapping

import attrs

from .._generation import GeometryFormat, Material, Tier

Check = Callable[[str], "str | None"]  # a value -> what is wrong with it, or None

MAX_IMAGES = 5
MAX_MODEL_BYTES = 10 * 1024 * 1024
_DIGITS = re.compile(r"-?[0-9]+")

# The documented sets, from the one place the client checks them too.
TIERS: tuple[str, ...] = typing.get_args(Tier)
GEOMETRY_FORMATS: tuple[str, ...] = typing.get_args(GeometryFormat)
MATERIALS: tuple[str, ...] = typing.get_args(Material)
BOOLEAN_FIELDS = (
    "mesh_simplify",
    "mesh_smooth",
    "use_hyper",
    "TAPose",
    "TApose",
    "preview_render",
    "use_original_alpha",
    "hd_texture",
    "texture_delight",
    "is_micro",
)


@attrs.frozen
class Form:
    """A parsed form: text values and uploaded files (file name, size) by field name."""

    fields: dict[str, list[str]]
    files: dict[str, list[tuple[str, int]]]

    def text(self, name: str) -> str | None:
        """The first value of a text field, or None when it was not sent."""
        values = self.fields.get(name)
        return values[0] if values else None


def _one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _integer(low: int, high: int | None = None) -> Check:
    def check(value: str) -> str | None:
        if _DIGITS.fullmatch(value) and low <= int(value) and (high is None or int(value) <= high):
            return None
        if high is None:
            return f"must be an integer of at least {low}"
        return f"must be an integer from {low} to {high}"

    return check


def _boolean(value: str) -> str | None:
    return None if value in ("true", "false") else 'must be "true" or "false"'


def _bbox(value: str) -> str | None:
    problem = 'must be a JSON array of three integers, such as "[100,100,100]"'
    try:
        parsed = json.loads(value)
    except ValueError:
        return problem
    if not isinstance(parsed, list) or len(parsed) != 3:
        return problem
    ints = all(isinstance(n, int) and not isinstance(n, bool) for n in parsed)
    return None if ints else problem


def _positive_number(value: str) -> str | None:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    return None if math.isfinite(number) and number > 0 else "must be a positive number"


def _text(value: str) -> str | None:
    return None


RODIN_CHECKS: Mapping[str, Check] = {
    "prompt": _text,
    "tier": _one_of(*TIERS),
    "condition_mode": _one_of("concat", "fuse"),
    "seed": _integer(0, 65535),
    "geometry_file_format": _one_of(*GEOMETRY_FORMATS),
    "material": _one_of(*MATERIALS),
    "quality": _one_of("high", "medium", "low", "extra-low"),
    "quality_override": _integer(1),
    "mesh_mode": _one_of("Quad", "Raw"),
    "bbox_condition": _bbox,
    "addons": _one_of("HighPack"),
    "texture_mode": _text,
    "geometry_instruct_mode": _one_of("faithful", "creative"),
    **dict.fromkeys(BOOLEAN_FIELDS, _boolean),
}
TEXTURE_CHECKS: Mapping[str, Check] = {
    "prompt": _text,
    "seed": _integer(0, 65535),
    "reference_scale": _positive_number,
    "geometry_file_format": _one_of(*GEOMETRY_FORMATS),
    "material": _one_of("PBR", "Shaded"),
    "resolution": _one_of("Basic", "High"),
}
_REPEATABLE = frozenset({"images", "addons"})


def _shape_problem(form: Form, checks: Mapping[str, Check], file_fields: set[str]) -> str | None:
    # Text where a file belongs, a file where text belongs, a field repeated, a bad value.
    if misplaced := sorted(form.fields.keys() & file_fields):
        return f"`{misplaced[0]}` must be a file upload, not a text field."
    if misplaced := sorted(form.files.keys() & checks.keys()):
        return f"`{misplaced[0]}` must be a text field, not a file upload."
    for name, sent in form.files.items():
        for filename, size in sent:
            if name in file_fields and size == 0:
                return f"`{name}` file {filename!r} is empty."
    for name, values in form.fields.items():
        if name not in checks:
            continue  # unknown fields are ignored, like the API does with extras
        if len(values) > 1 and name not in _REPEATABLE:
            return f"`{name}` was sent {len(values)} times; send it once."
        for value in values:
            if (problem := checks[name](value)) is not None:
                return f"`{name}` {problem}, got {value!r}."
    return None


def rodin_problem(form: Form) -> str | None:
    """What is wrong with a `/rodin` form, or None when the API would accept it."""
    if (problem := _shape_problem(form, RODIN_CHECKS, {"images"})) is not None:
        return problem
    images = form.files.get("images", [])
    if len(images) > MAX_IMAGES:
        return f"At most {MAX_IMAGES} `images` are allowed, got {len(images)}."
    if not images and not (form.text("prompt") or "").strip():
        return "`prompt` is required when no `images` are sent."
    return None


def texture_problem(form: Form) -> str | None:
    """What is wrong with a `/rodin_texture_only` form, or None when the API would accept it."""
    if (problem := _shape_problem(form, TEXTURE_CHECKS, {"image", "model"})) is not None:
        return problem
    for name in ("image", "model"):
        count = len(form.files.get(name, []))
        if count != 1:
            return f"Exactly one `{name}` file is required, got {count}."
    _, model_size = form.files["model"][0]
    if model_size > MAX_MODEL_BYTES:
        return f"`model` must be at most 10 MiB ({MAX_MODEL_BYTES} bytes), got {model_size}."
    return None
