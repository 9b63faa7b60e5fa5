"""Options several commands share, and the client they configure."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

import typer

from rodin_async import RetryPolicy
from rodin_async._shard import ClientSettings

from ._common import CliError
from ._inputs import resolve_key

_CONNECTION = "Connection"

ApiKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--api-key-file",
        help="Read the API key from this file's first line (default: $RODIN_API_KEY). "
        "There is no --api-key option: keys typed in a command stay in shell history.",
        dir_okay=False,
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        envvar="RODIN_BASE_URL",
        help="The API root (default: https://hyperhuman.deemos.com/api/v2).",
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
Proxy = Annotated[
    str | None,
    typer.Option(
        "--proxy",
        metavar="URL",
        help="Send API and file requests through this proxy (http://host:port). Without it, "
        "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY apply.",
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
CaBundle = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        metavar="FILE",
        help="Also trust the CA certificates in this PEM file (a private CA, a TLS-inspecting "
        "proxy), besides the default ones. SSL_CERT_FILE or SSL_CERT_DIR, when set, replace "
        "the default ones instead.",
        exists=True,
        dir_okay=False,
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")
]


def connect(
    key_file: Path | None,
    base_url: str | None,
    *,
    proxy: str | None = None,
    ca_bundle: Path | None = None,
    max_concurrency: int = 8,
    retry: RetryPolicy | None = None,
) -> ClientSettings:
    """The settings of the clients a command opens (``.open()``); they pickle, so worker
    processes build theirs from them. The key and the CAs are read now, to fail early.

    Raises:
        CliError: No API key could be found, or the CA bundle can't be used.
    """
    key = resolve_key(key_file)
    if ca_bundle is not None:
        check_ca_bundle(ca_bundle)
    # Only what was given: the library's defaults (env proxies, default CAs) otherwise.
    return ClientSettings(
        key,
        base_url=base_url,
        max_concurrency=max_concurrency,
        retry=retry,
        proxy=proxy,
        ca_bundle=str(ca_bundle) if ca_bundle is not None else None,
    )


def check_ca_bundle(ca_bundle: Path) -> None:
    """Fail now if *ca_bundle* can't be read or holds no PEM certificate.

    Raises:
        CliError: The file can't be used; the message says why.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # bare: the default CAs load later
    try:
        context.load_verify_locations(cafile=ca_bundle)
    except ssl.SSLError as exc:  # before OSError: it is one
        reason = f"not a PEM file of CA certificates ({exc.reason})"
        raise CliError(f"can't use --ca-bundle {str(ca_bundle)!r}: {reason}") from exc
    except OSError as exc:
        raise CliError(f"can't use --ca-bundle {str(ca_bundle)!r}: {exc.strerror}") from exc
