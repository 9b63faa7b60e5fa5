"""A real packet path on one machine: a network namespace joined by a veth pair (root only).

Loopback moves 64 KiB segments between sockets without ever building an Ethernet frame;
a NIC does not. Here nginx runs inside a namespace the harness creates, on its own address,
and every byte reaches the tools (in the host namespace) through a veth pair with an MTU
of 1500. By default segmentation offloads are switched off on nginx's side, so TCP sends
real 1500-byte packets, one softirq and one socket wake-up at a time, as a real link does.
``tc ... tbf`` on nginx's egress caps the rate (0.5 Gbit/s, 1 Gbit/s, ...).

Teardown always runs (``try``/``finally``, SIGTERM turned into an exit); a run killed with
SIGKILL leaves its namespace behind, and ``run.py --cleanup`` removes it: every namespace
named ``rabench-*``, the processes inside it (ours: nothing else runs there), its veth pair.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

PREFIX = "rabench"
SUBNET = "10.213.{n}"  # a /30 per namespace: host side .1, namespace side .2
MTU = 1500


def _run(*argv: str, check: bool = True) -> str:
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip() or p.returncode}")
    return p.stdout


def missing_prerequisites(*, offload: bool) -> str | None:
    """What a packet-path run would lack on this machine (root, ip, tc, ethtool), or None."""
    if os.geteuid() != 0:
        return "a network namespace needs root (run the benchmark as root)"
    tools = ["ip", "tc"] + ([] if offload else ["ethtool"])
    absent = [t for t in tools if not shutil.which(t)]
    if absent:
        return (
            f"{', '.join(absent)} not found (apt-get install -y iproute2 ethtool; "
            "--netns-offload does without ethtool)"
        )
    return None


def parse_rate(text: str) -> int | None:
    """Bits per second from ``500mbit``, ``1gbit``, ``0.5gbit``; None for ``none``."""
    if text in ("none", "uncapped", "0"):
        return None
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:bit)?", text.strip().lower())
    if not found:
        raise ValueError(f"not a rate: {text!r} (like 500mbit, 1gbit, none)")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[found.group(2)]
    return int(float(found.group(1)) * scale)


def rate_label(bits: int | None) -> str:
    if bits is None:
        return "uncapped"
    return f"{bits / 1e9:g} Gbit/s" if bits >= 10**9 else f"{bits / 1e6:g} Mbit/s"


class Namespace:
    """``rabench-<n>``: a namespace, a veth pair with MTU 1500, addresses 10.213.<n>.1/.2.

    Args:
        offload: Keep TSO/GSO on nginx's side (64 KiB segments cross the pair, as on
            loopback); off by default, so 1500-byte packets do.
    """

    def __init__(self, *, offload: bool = False) -> None:
        if os.geteuid() != 0:
            raise PermissionError("a network namespace needs root (run the benchmark as root)")
        self.n = _free_index()
        self.name = f"{PREFIX}-{self.n}"
        self.host_if, self.ns_if = f"{PREFIX}{self.n}h", f"{PREFIX}{self.n}n"
        self.host_address = f"{SUBNET.format(n=self.n)}.1"
        self.address = f"{SUBNET.format(n=self.n)}.2"  # where nginx listens
        self.offload = offload
        self.rate: int | None = None
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    @property
    def exec_prefix(self) -> list[str]:
        """Prepend to a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _create(self) -> None:
        _run("ip", "netns", "add", self.name)
        _run(
            "ip",
            "link",
            "add",
            self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            self.ns_if,
            "netns",
            self.name,
        )
        _run("ip", "link", "set", self.host_if, "mtu", str(MTU))
        _run("ip", "-n", self.name, "link", "set", self.ns_if, "mtu", str(MTU))
        _run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_if)
        _run("ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.ns_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("ip", "-n", self.name, "link", "set", self.ns_if, "up")
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        if not self.offload:
            if not shutil.which("ethtool"):
                raise RuntimeError(
                    "ethtool is needed to switch segmentation offloads off "
                    "(apt-get install -y ethtool), or pass --netns-offload"
                )
            _run(*self.exec_prefix, "ethtool", "-K", self.ns_if, "tso", "off", "gso", "off")

    def shape(self, rate: int | None) -> None:
        """Cap what nginx sends at *rate* bits/s with a token bucket; None removes the cap."""
        self.rate = rate
        if rate is None:
            _run("tc", "-n", self.name, "qdisc", "del", "dev", self.ns_if, "root", check=False)
            return
        burst = max(32 * 1024, rate // 8 // 500)  # 2 ms of traffic
        _run(
            "tc",
            "-n",
            self.name,
            "qdisc",
            "replace",
            "dev",
            self.ns_if,
            "root",
            "tbf",
            "rate",
            str(rate),
            "burst",
            str(burst),
            "latency",
            "50ms",
        )

    def describe(self) -> str:
        offload = "TSO/GSO on" if self.offload else "TSO/GSO off (1500-byte packets)"
        return (
            f"namespace {self.name}: nginx on {self.address}, veth {self.host_if}<->{self.ns_if}, "
            f"MTU {MTU}, {offload}"
        )

    def close(self) -> None:
        remove(self.name, self.host_if)


def _free_index() -> int:
    taken = set(leftovers())
    addresses = _run("ip", "-o", "addr") + _run("ip", "route")
    for n in range(1, 250):
        if f"{PREFIX}-{n}" not in taken and f"{SUBNET.format(n=n)}." not in addresses:
            return n
    raise RuntimeError("no free 10.213.<n>.0/30 subnet for a benchmark namespace")


def leftovers() -> list[str]:
    """The benchmark namespaces that exist now."""
    names = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{PREFIX}-")]


def remove(name: str, host_if: str | None = None) -> None:
    """End the processes inside namespace *name*, then delete it and its veth pair."""
    pids = [int(p) for p in _run("ip", "netns", "pids", name, check=False).split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
            time.sleep(0.05)
        if not pids:
            break
    _run("ip", "netns", "del", name, check=False)  # takes the namespace's veth end along
    if host_if:
        _run("ip", "link", "del", host_if, check=False)  # gone with its peer; just in case


def cleanup(say: Callable[[str], None]) -> int:
    """``--cleanup``: remove every leftover benchmark namespace; return how many."""
    if os.geteuid() != 0:
        say("namespaces: --cleanup needs root to look for them")
        return 0
    names = leftovers()
    for name in names:
        n = name.rsplit("-", 1)[1]
        remove(name, f"{PREFIX}{n}h")
        say(f"removed namespace {name} (and its processes and veth pair)")
    if not names:
        say("no leftover benchmark namespaces")
    return len(names)
