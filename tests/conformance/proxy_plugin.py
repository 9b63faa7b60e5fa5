"""A proxy.py plugin that appends every request it is asked to forward to a JSON-lines file.

proxy.py imports it in its own process (`--plugins tests.conformance.proxy_plugin.
RecordingPlugin`); the file is named by the RODIN_PROXY_LOG environment variable. Plain
HTTP requests are logged with their headers; HTTPS shows up as a CONNECT to host:port.
"""

from __future__ import annotations

import json
import os

from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


class RecordingPlugin(HttpProxyBasePlugin):
    """Logs method, host, port, path and headers of each request, then forwards it as is."""

    def handle_client_request(self, request: HttpParser) -> HttpParser | None:
        headers = {_text(k): _text(v) for k, v in (request.headers or {}).values()}
        entry = {
            "method": _text(request.method),
            "host": _text(request.host),
            "port": request.port,
            "path": _text(request.path),
            "headers": headers,
        }
        with open(os.environ["RODIN_PROXY_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
        return request
