"""``generate`` and ``generate-texture``: submit a job (costs credits), then maybe follow it.

Every documented field of `AsyncRodin.generate` and `AsyncRodin.generate_texture` is an
option; fixed sets are choices built from the library's own ``Literal`` types, so typer
refuses a bad value before anything is sent, and the library checks the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any

import attrs
import typer

from rodin_async import AsyncRodin, GenerationJob, GenerationRequest, TextureRequest
from rodin_async._generation import (
    ConditionMode,
    GeometryFormat,
    GeometryInstructMode,
    Material,
    MeshMode,
    Quality,
    TextureMaterial,
    TextureResolution,
    Tier,
)
from rodin_async._shard import ClientSettings

from ._bulk import Job, Output, download_all, finish
from ._common import error_console, print_json
from ._options import ApiKeyFile, BaseUrl, CaBundle, Proxy, connect
from ._workflow import call, wait_for

_MODEL = "Model"
_GEN_2_5 = "Gen-2.5 only"
_AFTER = "After submitting"


def _switch(name: str, text: str, panel: str = _MODEL) -> Any:
    """An on/off option that is not sent at all unless given (the API's default applies)."""
    return typer.Option(
        f"--{name}/--no-{name}", help=text, show_default=False, rich_help_panel=panel
    )


Prompt = Annotated[str | None, typer.Option(help="What to generate or how it should look.")]
Seed = Annotated[int | None, typer.Option(min=0, max=65535, help="Random seed (0-65535).")]
Format = Annotated[
    GeometryFormat | None,
    typer.Option("--format", help="Model file format (default glb).", rich_help_panel=_MODEL),
]
RetrySubmit = Annotated[
    bool,
    typer.Option(
        "--retry-submit",
        help="Also retry a submit that may have reached the API (may charge twice).",
    ),
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait", help="Wait until done, then download the results.", rich_help_panel=_AFTER
    ),
]
ResultsDir = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--output",
        help="Where --wait downloads the results (implies --wait; default: rodin-results).",
        file_okay=False,
        show_default=False,
        rich_help_panel=_AFTER,
    ),
]
WaitInterval = Annotated[
    float,
    typer.Option(
        "--interval", min=0.1, help="Seconds between status polls.", rich_help_panel=_AFTER
    ),
]
WaitTimeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0,
        help="With --wait: give up (exit 124) after this many seconds.",
        show_default=False,
        rich_help_panel=_AFTER,
    ),
]
JsonJob = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the submitted job as JSON on stdout, then (with --wait) the "
        "downloaded task's line as `download --json` does.",
        rich_help_panel=_AFTER,
    ),
]


@attrs.frozen
class Follow:
    """What to do once a job is submitted: print it, and maybe wait and download."""

    wait: bool
    output: Path | None
    interval: float
    timeout: float | None
    json_output: bool


def generate(
    prompt: Prompt = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            help="An input image (repeat for up to 5); without one, --prompt is required.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    tier: Annotated[Tier | None, typer.Option(help="Model tier.", rich_help_panel=_MODEL)] = None,
    condition_mode: Annotated[
        ConditionMode | None,
        typer.Option(help="How several images combine (default concat).", rich_help_panel=_MODEL),
    ] = None,
    seed: Seed = None,
    geometry_file_format: Format = None,
    material: Annotated[
        Material | None, typer.Option(help="Material (default PBR).", rich_help_panel=_MODEL)
    ] = None,
    quality: Annotated[
        Quality | None, typer.Option(help="Face count preset.", rich_help_panel=_MODEL)
    ] = None,
    quality_override: Annotated[
        int | None,
        typer.Option(min=1, help="Exact face count (overrides --quality).", rich_help_panel=_MODEL),
    ] = None,
    mesh_mode: Annotated[
        MeshMode | None, typer.Option(help="Quads or raw triangles.", rich_help_panel=_MODEL)
    ] = None,
    mesh_simplify: Annotated[bool | None, _switch("mesh-simplify", "Simplify (Raw mode).")] = None,
    mesh_smooth: Annotated[bool | None, _switch("mesh-smooth", "Smooth (Quad mode).")] = None,
    use_hyper: Annotated[bool | None, _switch("use-hyper", "Use the Hyper model.")] = None,
    ta_pose: Annotated[bool | None, _switch("ta-pose", "T/A pose for humanoids.")] = None,
    bbox: Annotated[
        tuple[int, int, int] | None,
        typer.Option(
            "--bbox",
            metavar="W H L",
            help="Bounding box: three positive integers.",
            show_default=False,
            rich_help_panel=_MODEL,
        ),
    ] = None,
    addon: Annotated[
        list[str] | None,
        typer.Option(
            "--addon",
            help="An addon such as HighPack (repeat for several).",
            show_default=False,
            rich_help_panel=_MODEL,
        ),
    ] = None,
    preview_render: Annotated[
        bool | None, _switch("preview-render", "Render a preview image.")
    ] = None,
    use_original_alpha: Annotated[
        bool | None, _switch("use-original-alpha", "Keep the image's transparency.")
    ] = None,
    hd_texture: Annotated[bool | None, _switch("hd-texture", "HD texture.", _GEN_2_5)] = None,
    texture_delight: Annotated[
        bool | None, _switch("texture-delight", "Remove lighting from textures.", _GEN_2_5)
    ] = None,
    texture_mode: Annotated[
        str | None,
        typer.Option(help="Texture mode, as the API names it.", rich_help_panel=_GEN_2_5),
    ] = None,
    is_micro: Annotated[bool | None, _switch("is-micro", "Micro model.", _GEN_2_5)] = None,
    geometry_instruct_mode: Annotated[
        GeometryInstructMode | None,
        typer.Option(help="How closely to follow the input.", rich_help_panel=_GEN_2_5),
    ] = None,
    retry_submit: RetrySubmit = False,
    wait_: Wait = False,
    output: ResultsDir = None,
    interval: WaitInterval = 5.0,
    timeout: WaitTimeout = None,
    json_output: JsonJob = False,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
    proxy: Proxy = None,
    ca_bundle: CaBundle = None,
) -> None:
    """Submit a generation (costs credits); with --wait, also wait and download it.

    Options left out are not sent, so the API's defaults apply. Exit status: 0 submitted
    (and downloaded), 1 failed, 2 bad arguments, 124 timed out.
    """
    request = GenerationRequest(
        images=image or [], prompt=prompt, tier=tier, condition_mode=condition_mode,
        seed=seed, geometry_file_format=geometry_file_format, material=material,
        quality=quality, quality_override=quality_override, mesh_mode=mesh_mode,
        mesh_simplify=mesh_simplify, mesh_smooth=mesh_smooth, use_hyper=use_hyper,
        TAPose=ta_pose, bbox_condition=bbox, addons=addon or (),
        preview_render=preview_render, use_original_alpha=use_original_alpha,
        hd_texture=hd_texture, texture_delight=texture_delight, texture_mode=texture_mode,
        is_micro=is_micro, geometry_instruct_mode=geometry_instruct_mode,
    )  # fmt: skip
    settings = connect(api_key_file, base_url, proxy=proxy, ca_bundle=ca_bundle)
    follow = Follow(wait_, output, interval, timeout, json_output)
    submit_and_follow(settings, request, retry_submit, follow, "rodin-async generate")


def generate_texture(
    image: Annotated[
        Path,
        typer.Argument(
            metavar="IMAGE", exists=True, dir_okay=False, help="The image whose look to apply."
        ),
    ],
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", exists=True, dir_okay=False, help="The model to texture (≤ 10 MB)."
        ),
    ],
    prompt: Prompt = None,
    seed: Seed = None,
    reference_scale: Annotated[
        float | None,
        typer.Option(help="How strongly the image guides, above 0 (default 1)."),
    ] = None,
    geometry_file_format: Format = None,
    material: Annotated[
        TextureMaterial | None, typer.Option(help="Material (default PBR).", rich_help_panel=_MODEL)
    ] = None,
    resolution: Annotated[
        TextureResolution | None, typer.Option(help="Texture resolution.", rich_help_panel=_MODEL)
    ] = None,
    retry_submit: RetrySubmit = False,
    wait_: Wait = False,
    output: ResultsDir = None,
    interval: WaitInterval = 5.0,
    timeout: WaitTimeout = None,
    json_output: JsonJob = False,
    api_key_file: ApiKeyFile = None,
    base_url: BaseUrl = None,
    proxy: Proxy = None,
    ca_bundle: CaBundle = None,
) -> None:
    """Texture an existing model from an image (costs credits); --wait also downloads it.

    Exit status: 0 submitted (and downloaded), 1 failed, 2 bad arguments, 124 timed out.
    """
    request = TextureRequest(
        image=image, model=model, prompt=prompt, seed=seed, reference_scale=reference_scale,
        geometry_file_format=geometry_file_format, material=material, resolution=resolution,
    )  # fmt: skip
    settings = connect(api_key_file, base_url, proxy=proxy, ca_bundle=ca_bundle)
    follow = Follow(wait_, output, interval, timeout, json_output)
    submit_and_follow(settings, request, retry_submit, follow, "rodin-async generate-texture")


def submit_and_follow(
    settings: ClientSettings,
    request: GenerationRequest | TextureRequest,
    retry_submit: bool,
    follow: Follow,
    title: str,
) -> None:
    """Submit *request*, print the job, then hint the next step or wait and download."""

    def submit(rodin: AsyncRodin) -> Awaitable[GenerationJob]:
        return rodin.submit(request, retry_submit=retry_submit)

    job = call(settings.open, submit)
    _show_job(job, follow.json_output)
    if not (follow.wait or follow.output is not None):
        _hint_next(job)
        return
    wait_for(settings.open, job, follow.interval, follow.timeout)
    out = Output(error_console(), json_lines=follow.json_output)
    dest = follow.output or Path("rodin-results")
    tally = download_all(settings, Job([job.uuid], dest), out)
    raise typer.Exit(finish(tally, [job.uuid], out, title=title))


def _show_job(job: GenerationJob, json_output: bool) -> None:
    if json_output:
        print_json(
            {"uuid": job.uuid, "subscription_key": job.subscription_key, "jobs": job.job_uuids}
        )
        return
    typer.echo(f"task uuid:        {job.uuid}")
    typer.echo(f"subscription key: {job.subscription_key}")


def _hint_next(job: GenerationJob) -> None:
    console = error_console()
    console.print("next:", style="dim")
    console.print(f"  rodin-async wait {job.subscription_key}", markup=False, soft_wrap=True)
    console.print(f"  rodin-async download {job.uuid}", markup=False, soft_wrap=True)
