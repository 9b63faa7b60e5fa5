"""A tiny stand-in for the Rodin API's ``POST /api/v2/download``, for the benchmark.

Its lists point at the nginx that serves the corpus, so every tool downloads the same
bytes from the same server. The bearer key is checked like the real API does.

    python api_server.py --listing listing.json --key KEY --port PORT

``listing.json`` maps each task uuid to its files: ``{"uuid": [{"name": ..., "url": ...}]}``.
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build_app(listing: dict[str, list[dict[str, str]]], key: str) -> Starlette:
    expected = f"Bearer {key}"

    async def download(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != expected:
            return JSONResponse(
                {"error": "UNAUTHORIZED", "message": "Active API key is required."}, 401
            )
        try:
            body = await request.json()
            uuid = body["task_uuid"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "INVALID_REQUEST", "message": "task_uuid?"}, 400)
        files = listing.get(uuid)
        if files is None:
            return JSONResponse({"error": "TASK_NOT_FOUND", "message": uuid}, 404)
        return JSONResponse({"error": "OK", "list": files}, 201)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/api/v2/download", download, methods=["POST"]),
            Route("/health", health),
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listing", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    with open(args.listing, encoding="utf-8") as f:
        listing = json.load(f)
    uvicorn.run(
        build_app(listing, args.key),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
