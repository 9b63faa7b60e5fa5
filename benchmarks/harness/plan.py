"""The plan: which corpora over which transports, which runs, and in what order.

For every transport (HTTP, HTTPS, HTTPS with HTTP/2 offered) and corpus: one API stand-in,
then every tool round-robin per repetition. Then, on the mix: the concurrency sweep, the
core-scaling run, and (``--netns``, root) the packet-path runs at each rate.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import netns, report
from .corpus import CORPORA, QUICK_TASKS, Corpus
from .measurement import Command, describe_run, library_fingerprint, run_once, summarize
from .servers import TRANSPORTS, ApiServer, FakeServer, LocalCA, Nginx, list_all
from .tools import TOOL_KEYS, TOOLS, Launch, Tool, available, write_job

# Left out of every tool's environment: they would change what a run measures.
ENV_DROPPED = ("RODIN_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}

Say = Callable[[str], None]


@dataclass(frozen=True)
class Stage:
    """One corpus served over one transport: what all its runs share."""

    key: str  # its name in results.json and the tables: "mix", "mix https", ...
    corpus: Corpus
    job: Path
    pids: list[int]  # the servers' processes (their CPU is reported)
    env: dict[str, str]
    ca_file: Path | None
    info: dict[str, Any]  # transport, rate, ... (copied into the results)


@dataclass
class Bench:
    """What every run of one invocation shares."""

    args: argparse.Namespace
    work: Path
    key: str
    say: Say
    cli_options: frozenset[str]
    corpora: dict[str, Corpus] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # tool name -> why it can't run

    @property
    def out_dir(self) -> Path:
        return self.work / "out"

    def show(self, table: str, runs: dict[str, list[dict[str, Any]]]) -> None:
        """Print a finished table and its noise notes."""
        self.say(f"\n{table}\n\n{report.notes(runs)}\n")

    def prepared(self, cname: str) -> Corpus:
        """The corpus, generated if missing (checked once per invocation)."""
        if cname not in self.corpora:
            ntasks = QUICK_TASKS if self.args.quick and cname == "mix" else CORPORA[cname][0]
            corpus = Corpus(self.args.corpus_dir, cname, ntasks)
            self.say(f"\n== corpus {cname}: preparing")
            corpus.ensure(self.say)
            os.sync()
            self.corpora[cname] = corpus
        return self.corpora[cname]

    def usable(self, tools: list[Tool]) -> list[Tool]:
        """The tools that can run here; the others are recorded (and said) as skipped."""
        ok = []
        for t in tools:
            why = self.skipped.get(t.name) or available(t)
            if not why:
                ok.append(t)
            elif t.name not in self.skipped:
                self.skipped[t.name] = why
                self.say(f"SKIPPED {t.name}: {why}")
        return ok

    def command(self, tool: Tool, stage: Stage, cpus: str | None = None, **launch: Any) -> Command:
        spec = Launch(
            stage.job,
            self.out_dir,
            ca_file=stage.ca_file,
            cli_options=self.cli_options,
            cli_extra=tuple(self.args.cli_extra),
        )
        spec = replace(spec, **launch)
        return Command(tool.argv(spec), stage.env | tool.env(spec), cpus)

    def round_robin(
        self, stage: Stage, variants: list[tuple[str, Command]], reps: int, tag: str
    ) -> dict[str, list[dict[str, Any]]]:
        """Every variant once per repetition; who goes first rotates each repetition."""
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in variants}
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        for rep in range(reps):
            k = rep % len(variants)
            for label, cmd in variants[k:] + variants[:k]:
                log = logs / f"{tag}-{label}-{rep}.log".replace(" ", "_").replace("/", "_")
                library = library_fingerprint()
                r = run_once(
                    cmd,
                    self.out_dir,
                    stage.corpus.files,
                    stage.pids,
                    log,
                    self.args.timeout,
                    self.work / "pids",
                )
                r |= {"argv": cmd.argv, "library": library, "rep": rep}
                self.say(describe_run(f"rep {rep} {label}", r, stage.corpus.total_bytes))
                runs[label].append(r)
        return runs

    def _summaries(self, stage: Stage, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        c = stage.corpus
        return {k: summarize(v, c.total_bytes, len(c.files)) for k, v in runs.items()}

    def compare_tools(self, stage: Stage, tools: list[Tool], reps: int) -> dict[str, Any]:
        self.say(f"== {stage.key}: {len(tools)} tools x {reps} reps, round-robin")
        variants = [(t.name, self.command(t, stage)) for t in tools]
        runs = self.round_robin(stage, variants, reps, stage.key)
        summary = self._summaries(stage, runs)
        for t in tools:
            summary[t.name]["kind"] = t.kind
        return self._header(stage, reps) | {"summary": summary, "runs": runs} | stage.info

    def sweep(self, stage: Stage, tool: Tool, js: list[int], reps: int) -> dict[str, Any]:
        self.say(f"== concurrency sweep: {tool.name} -j {js} x {reps} reps, round-robin")
        variants = [(str(j), self.command(tool, stage, concurrency=j)) for j in js]
        runs = self.round_robin(stage, variants, reps, "sweep")
        return self._header(stage, reps) | {
            "tool": tool.name,
            "summary": self._summaries(stage, runs),
            "runs": runs,
        }

    def scaling(self, stage: Stage, tools: list[Tool], cores: list[int], reps: int) -> dict:
        """Each tool pinned (taskset) to the first n CPUs, for each n in *cores*."""
        cpusets = {str(n): ",".join(str(i) for i in range(n)) for n in cores}
        self.say(f"== core scaling on {stage.key}: {[t.name for t in tools]} on {cpusets}")
        variants = [
            (f"{t.name} @ {n}", self.command(t, stage, cpus, processes=int(n)))
            for n, cpus in cpusets.items()
            for t in tools
        ]
        runs = self.round_robin(stage, variants, reps, "scaling")
        flat = self._summaries(stage, runs)
        summary = {t.name: {n: flat[f"{t.name} @ {n}"] for n in cpusets} for t in tools}
        return self._header(stage, reps) | {
            "cpusets": cpusets,
            "summary": summary,
            "runs": runs,
            "processes_passed": "--processes" in self.cli_options,
            "transport": stage.info["transport"],
        }

    def _header(self, stage: Stage, reps: int) -> dict[str, Any]:
        c = stage.corpus
        return {
            "corpus": c.name,
            "nfiles": len(c.files),
            "bytes": c.total_bytes,
            "ntasks": len(c.tasks),
            "reps": reps,
        }

    @contextlib.contextmanager
    def stage(
        self,
        corpus: Corpus,
        files_url: str,
        pids: list[int],
        ca: LocalCA | None,
        info: dict[str, Any],
    ) -> Iterator[Stage]:
        """Serve *corpus*'s listings from an API stand-in pointing at *files_url*."""
        key = _stage_key(corpus.name, info)
        tag = key.replace(" ", "-").replace("/", "_")
        api: ApiServer | FakeServer
        if self.args.server_mode == "fake":
            api = FakeServer(corpus, self.key, self.work, tag)
        else:
            api = ApiServer(corpus, files_url, self.key, self.work, tag)
        try:
            files, list_s = list_all(api.base_url, self.key, corpus.tasks)
            job = self.work / f"job-{tag}"
            write_job(job, corpus, api.base_url, files, self.out_dir)
            self.say(
                f"\n== {key}: {len(corpus.files)} files, {corpus.total_bytes / 1e9:.2f} GB over "
                f"{info['transport_label']}; API {api.base_url} (listing all {len(corpus.tasks)} "
                f"tasks one by one took {list_s:.2f} s)"
            )
            env = self._env() | {"RODIN_BASE_URL": api.base_url}
            tls = ca.ca_file if ca and files_url.startswith("https:") else None
            yield Stage(
                key, corpus, job, pids + api.pids, env, tls, info | {"listing_seconds": list_s}
            )
        finally:
            api.close()

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(ENV_DROPPED) and k.lower() not in PROXY_VARS
        }
        return env | {"RODIN_API_KEY": self.key}


def _stage_key(corpus: str, info: dict[str, Any]) -> str:
    if info.get("netns"):
        return f"{corpus} netns {info['rate_text']}"
    return corpus if info["transport"] == "http" else f"{corpus} {info['transport']}"


def _loopback_info(transport: str) -> dict[str, Any]:
    return {"transport": transport, "transport_label": TRANSPORTS[transport], "netns": False}


# --------------------------------------------------------------------------- the plan


def run_loopback(
    bench: Bench,
    nginx: Nginx | None,
    ca: LocalCA | None,
    tools: list[Tool],
    results: dict[str, Any],
    save: Callable[[], None],
) -> None:
    args = bench.args
    for transport in args.transport:
        plan = list(args.corpus)
        if "mix" not in plan and (_sweeps_on(args, transport) or _scales_on(args, transport)):
            plan.append("mix")  # the sweep and the scaling run use the mix
        for cname in plan:
            corpus = bench.prepared(cname)
            url = nginx.url(transport) if nginx else ""
            pids = [nginx.pid] if nginx else []
            with bench.stage(corpus, url, pids, ca, _loopback_info(transport)) as stage:
                if cname in args.corpus:
                    c = bench.compare_tools(stage, tools, _reps(args, cname))
                    results["corpora"][stage.key] = c
                    save()
                    bench.show(report.corpus_table(stage.key, c), c["runs"])
                if cname == "mix":
                    run_mix_extras(bench, stage, transport, results, save)


def run_mix_extras(
    bench: Bench, stage: Stage, transport: str, results: dict[str, Any], save: Callable[[], None]
) -> None:
    args = bench.args
    if _sweeps_on(args, transport):
        tool = next(t for t in TOOLS if t.name == TOOL_KEYS[args.sweep_tool])
        s = bench.sweep(stage, tool, args.sweep, args.sweep_reps)
        results["sweep"] = s
        save()
        bench.show(report.sweep_table(s), s["runs"])
    if _scales_on(args, transport):
        s = bench.scaling(stage, bench.usable(args.scaling_tools), args.scaling, args.scaling_reps)
        results["scaling"] = s
        save()
        bench.show(report.scaling_table(s), s["runs"])


def run_netns(
    bench: Bench,
    stack: contextlib.ExitStack,
    nginx_bin: str,
    ca: LocalCA,
    results: dict[str, Any],
    save: Callable[[], None],
) -> None:
    """nginx inside a fresh namespace, HTTPS through the veth pair, at each rate."""
    args = bench.args
    ns = netns.Namespace(offload=args.netns_offload)
    stack.callback(ns.close)
    bench.say(f"\n{ns.describe()}")
    cert = ca.issue("netns", [ns.address])
    nginx = Nginx(
        nginx_bin,
        args.corpus_dir,
        bench.work,
        ["https"],
        host=ns.address,
        tls=cert,
        prefix=ns.exec_prefix,
        name="nginx-netns",
    )
    stack.callback(nginx.close)
    corpus = bench.prepared(args.netns_corpus)
    tools = bench.usable(args.netns_tools)
    for text, bits in args.netns:
        ns.shape(bits)
        info = {
            "transport": "https",
            "netns": True,
            "rate": bits,
            "rate_text": text,
            "rate_label": netns.rate_label(bits),
            "netns_note": ns.describe(),
            "transport_label": f"HTTPS via veth (MTU 1500), {netns.rate_label(bits)}",
        }
        with bench.stage(corpus, nginx.url("https"), [nginx.pid], ca, info) as stage:
            c = bench.compare_tools(stage, tools, args.netns_reps)
            results["corpora"][stage.key] = c
            save()
            bench.show(report.corpus_table(stage.key, c), c["runs"])
    ns.shape(None)


def _reps(args: argparse.Namespace, cname: str) -> int:
    return args.reps_large if cname == "large" else args.reps


def _sweeps_on(args: argparse.Namespace, transport: str) -> bool:
    return bool(args.sweep) and transport == args.transport[0]


def _scales_on(args: argparse.Namespace, transport: str) -> bool:
    return bool(args.scaling) and transport == args.scaling_transport
