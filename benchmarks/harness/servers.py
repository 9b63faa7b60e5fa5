"""The servers a run talks to: a private nginx for the files, a stand-in for the Rodin API.

nginx serves the corpus over plain HTTP, over HTTPS (TLS 1.3, HTTP/1.1 only) and over HTTPS
offering HTTP/2 (ALPN ``h2,http/1.1``), each on its own port, with a certificate from a test
CA made by trustme. It binds only to loopback, or to an address inside a network namespace
the harness created (see `netns`). The API stand-in always listens on loopback, plain HTTP:
the API host is not what is measured; the file transfers are.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .corpus import Corpus

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"
WORK_PREFIX = "rodin-async-bench-"  # the run's temp folder: servers' confs, logs, job files

# The transports a corpus can be served over, as URL scheme and what nginx offers.
TRANSPORTS = {
    "http": "plain HTTP/1.1",
    "https": "HTTPS: TLS 1.3, HTTP/1.1 only",
    "h2": "HTTPS: TLS 1.3, HTTP/2 offered (ALPN h2,http/1.1)",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes],
    what: str,
    host: str = "127.0.0.1",
    timeout: float = 20,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout} s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- leftovers


def make_work_dir() -> Path:
    """The run's temp folder; it records its owner and every server started, for --cleanup."""
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    os.chmod(work, 0o755)  # nginx's worker may run as another user
    (work / "owner").write_text(f"{os.getpid()}\n")
    return work


def spawn(work: Path, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a server and record its pid in *work* (`remove_leftovers`; tools are recorded too)."""
    proc = subprocess.Popen(argv, **options)
    with open(work / "pids", "a") as f:
        f.write(f"{proc.pid}\n")
    return proc


def remove_leftovers(say: Callable[[str], None]) -> None:
    """``--cleanup``: the temp folders of runs that died, and the servers they recorded.

    A recorded pid is ended only if its command line names that folder (so a recycled pid
    is never hit), and a folder whose owner still runs is left alone.
    """
    for work in sorted(Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*")):
        owner = _pids(work / "owner")  # none: not a run's folder (the corpus lives nearby)
        if not owner or _alive(owner):
            continue
        servers = [pid for pid in _pids(work / "pids") if str(work) in _cmdline(pid)]
        for pid in servers + _children(servers):  # nginx's worker outlives a killed master
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            say(f"ended server process {pid} of {work}")
        shutil.rmtree(work, ignore_errors=True)
        say(f"removed {work}")


def _pids(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []


def _alive(pids: list[int]) -> bool:
    """Whether any of *pids* still runs (a zombie, killed but not yet reaped, does not)."""
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
    return False


def _children(parents: list[int]) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) in parents:
                found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class ServerCert:
    cert_file: Path  # PEM: the server's chain
    key_file: Path


class LocalCA:
    """A throwaway CA (trustme), written to ``ca.pem``: what clients are told to trust."""

    def __init__(self, work: Path) -> None:
        import trustme  # the bench extra; only HTTPS runs need it

        self._ca = trustme.CA(organization_name="rodin-async benchmark CA")
        self.folder = work / "tls"
        self.folder.mkdir()
        os.chmod(self.folder, 0o755)
        self.ca_file = self.folder / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, name: str, hosts: list[str]) -> ServerCert:
        """A certificate for *hosts* (names or IP addresses), readable by nginx's worker."""
        leaf = self._ca.issue_cert(*hosts)
        made = ServerCert(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        leaf.private_key_and_cert_chain_pem.write_to_path(str(made.cert_file))
        leaf.private_key_pem.write_to_path(str(made.key_file))
        for path in (self.ca_file, made.cert_file, made.key_file):
            os.chmod(path, 0o644)  # a throwaway key; nginx's worker may run as another user
        return made


# --------------------------------------------------------------------------- nginx


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_version(binary: str) -> tuple[int, ...]:
    p = subprocess.run([binary, "-v"], capture_output=True, text=True)
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", p.stderr + p.stdout)
    return tuple(int(x) for x in found.groups()) if found else (0, 0, 0)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {work}/tmp/client;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    types {{ }}
    default_type application/octet-stream;
{servers}
}}
"""

SERVER_BLOCK = """\
    server {{
        listen {host}:{port}{listen_flags};
{tls}        root {root};
    }}
"""

TLS_LINES = """\
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_cache shared:SSL:1m;
"""


class Nginx:
    """A private nginx serving the corpus root (its own conf, pid, logs, temp dirs).

    One listener per transport, all on *host*. *prefix* runs it elsewhere, e.g.
    ``ip netns exec NS`` to run it inside a network namespace.
    """

    def __init__(
        self,
        binary: str,
        root: Path,
        work: Path,
        transports: list[str],
        *,
        host: str = "127.0.0.1",
        tls: ServerCert | None = None,
        prefix: list[str] | None = None,
        name: str = "nginx",
    ) -> None:
        self.work = work / name
        (self.work / "tmp").mkdir(parents=True)
        self.host = host
        # A free port from loopback also serves inside a fresh namespace: nothing listens there.
        self.ports = {t: free_port() for t in transports}
        new_syntax = nginx_version(binary) >= (1, 25, 1)  # `http2 on;` replaced `listen ... http2`
        blocks = [self._server(t, p, root, tls, new_syntax) for t, p in self.ports.items()]
        conf = self.work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=self.work, servers="".join(blocks)))
        self.proc = spawn(
            work,
            [
                *(prefix or []),
                binary,
                "-c",
                str(conf),
                "-p",
                str(self.work),
                "-e",
                str(self.work / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.work / "stderr.log", "wb"),  # noqa: SIM115
        )
        for t, port in self.ports.items():
            wait_for_port(port, self.proc, f"nginx ({t})", host)

    def _server(
        self, transport: str, port: int, root: Path, tls: ServerCert | None, new_syntax: bool
    ) -> str:
        flags, lines = "", ""
        if transport != "http":
            if tls is None:
                raise ValueError(f"{transport} needs a certificate")
            flags = " ssl"
            lines = TLS_LINES.format(cert=tls.cert_file, key=tls.key_file)
            if transport == "h2":
                if new_syntax:
                    lines += "        http2 on;\n"
                else:
                    flags += " http2"
        return SERVER_BLOCK.format(
            host=self.host, port=port, listen_flags=flags, tls=lines, root=root
        )

    def url(self, transport: str) -> str:
        scheme = "http" if transport == "http" else "https"
        return f"{scheme}://{self.host}:{self.ports[transport]}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        stop(self.proc, signal.SIGQUIT)  # graceful stop of the master and its worker


# --------------------------------------------------------------------------- the API


class ApiServer:
    """benchmarks/tools/api_server.py: ``POST /api/v2/download`` lists pointing at nginx."""

    def __init__(self, corpus: Corpus, files_url: str, key: str, work: Path, tag: str) -> None:
        listing: dict[str, list[dict[str, str]]] = {t: [] for t in corpus.tasks}
        for spec in corpus.files:
            url = f"{files_url}/{corpus.name}/{spec.task}/{spec.name}"
            listing[spec.task].append({"url": url, "name": spec.name})
        path = work / f"listing-{tag}.json"
        path.write_text(json.dumps(listing))
        self.port = free_port()
        self.proc = spawn(
            work,
            [
                sys.executable,
                str(TOOLS_DIR / "api_server.py"),
                "--listing",
                str(path),
                "--key",
                key,
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"api-{tag}.log", "wb"),  # noqa: SIM115
        )
        wait_for_port(self.port, self.proc, "the API server")
        self.base_url = f"http://127.0.0.1:{self.port}/api/v2"

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    def close(self) -> None:
        stop(self.proc)


class FakeServer:
    """Fallback: ``rodin-async fake-server --root`` serves both the API and the files."""

    def __init__(self, corpus: Corpus, key: str, work: Path, tag: str) -> None:
        self.port = free_port()
        log_path = work / f"fake-{tag}.log"
        log = open(log_path, "wb")  # noqa: SIM115
        self.proc = spawn(
            work,
            [
                sys.executable,
                "-m",
                "rodin_async",
                "fake-server",
                "--root",
                str(corpus.dir),
                "--port",
                str(self.port),
                "--key",
                key,
                "--uuids-file",
                str(work / f"fake-{tag}-uuids.txt"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        wait_for_port(self.port, self.proc, "the fake server", timeout=60)
        # It announces "Fake Rodin API: <base url>   (result files on ...)" on stdout.
        deadline = time.monotonic() + 30
        while True:
            text = log_path.read_text(errors="replace")
            found = [ln for ln in text.splitlines() if ln.startswith("Fake Rodin API:")]
            if found:
                self.base_url = found[0].split()[3]
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the fake server did not announce its URL:\n{text[-800:]}")
            time.sleep(0.05)

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    def close(self) -> None:
        stop(self.proc, signal.SIGINT)


def list_all(base_url: str, key: str, tasks: list[str]) -> tuple[list[dict[str, str]], float]:
    """POST /download for every task, sequentially (a new connection each): the URL list for
    the tools that can't call the API, and how long listing took."""
    files = []
    t0 = time.perf_counter()
    for task in tasks:
        req = urllib.request.Request(
            f"{base_url}/download",
            data=json.dumps({"task_uuid": task}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.load(r)
        for item in body["list"]:
            files.append({"task": task, "name": item["name"], "url": item["url"]})
    return files, time.perf_counter() - t0
