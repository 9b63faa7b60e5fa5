"""The corpora: files of random bytes on disk, and the check that a run fetched them exactly."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KIB, MIB = 1024, 1024 * 1024

# name -> (number of tasks, {file name: size}). Every task has the same files.
CORPORA: dict[str, tuple[int, dict[str, int]]] = {
    # The typical Rodin result mix: 200 tasks x 5 files = 1000 files, 2.36 GB.
    "mix": (
        200,
        {
            "base_basic_pbr.glb": 8 * MIB,
            "base_basic_pbr.fbx": 2 * MIB,
            "texture_diffuse.png": 1 * MIB,
            "preview.webp": 200 * KIB,
            "meta.json": 50 * KIB,
        },
    ),
    # Per-file overhead: 1000 x 256 KiB, in the same 200 tasks x 5 files shape as the mix.
    "small": (200, {f"tile_{i}.png": 256 * KIB for i in range(5)}),
    # Few big transfers: 4 x 256 MiB (one file per task).
    "large": (4, {"model.glb": 256 * MIB}),
}
QUICK_TASKS = 20  # --quick: the first 20 tasks of the mix


@dataclass(frozen=True)
class FileSpec:
    task: str
    name: str
    size: int
    sha256: str

    @property
    def rel(self) -> str:
        return f"{self.task}/{self.name}"


def stable_task_names(corpus: str, count: int) -> list[str]:
    """uuid-shaped task names (the folders look like the real thing), the same every run."""
    tag = hashlib.sha256(corpus.encode()).hexdigest()[:8]
    return [f"{tag}-{i:04x}-4000-8000-{i:012x}" for i in range(count)]


class Corpus:
    """Files of random bytes under ``root/<corpus>/<task>/<name>``, with a manifest of sizes and
    hashes. Content is slices of a random pool at random offsets (plus a unique random prefix),
    which makes gigabytes in seconds; every file is distinct and incompressible."""

    POOL = 64 * MIB
    PIECE = 8 * MIB

    def __init__(self, root: Path, name: str, ntasks: int) -> None:
        self.root = root
        self.name = name
        self.dir = root / name
        full_tasks, files = CORPORA[name]
        self.tasks = stable_task_names(name, full_tasks)[:ntasks]
        self.file_sizes = files
        self.manifest_path = root / f"{name}.manifest.json"
        self.files: list[FileSpec] = []

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def ensure(self, log: Callable[[str], None]) -> None:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        pool: bytes | None = None
        made = 0
        t0 = time.perf_counter()
        files = []
        for task in self.tasks:
            for name, size in self.file_sizes.items():
                rel = f"{task}/{name}"
                path = self.dir / rel
                known = manifest.get(rel)
                if not (
                    known and known[0] == size and path.is_file() and path.stat().st_size == size
                ):
                    if pool is None:
                        pool = os.urandom(self.POOL)
                    manifest[rel] = [size, self._write(path, size, pool)]
                    made += size
                files.append(FileSpec(task, name, size, manifest[rel][1]))
        self.files = files
        if made:
            tmp = self.manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest))
            tmp.replace(self.manifest_path)
            log(
                f"  generated {made / 1e9:.2f} GB of corpus '{self.name}' in "
                f"{time.perf_counter() - t0:.1f} s under {self.dir}"
            )

    def _write(self, path: Path, size: int, pool: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
        h = hashlib.sha256()
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            head = os.urandom(min(16, size))
            f.write(head)
            h.update(head)
            left = size - len(head)
            while left:
                n = min(left, self.PIECE)
                off = int.from_bytes(os.urandom(4), "little") % (len(pool) - n + 1)
                piece = memoryview(pool)[off : off + n]
                f.write(piece)
                h.update(piece)
                left -= n
        os.chmod(tmp, 0o644)
        tmp.replace(path)
        return h.hexdigest()


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(out: Path, files: list[FileSpec]) -> dict[str, Any]:
    """Compare every expected output with the corpus: size, then SHA-256 (2 threads)."""
    missing, wrong_size, wrong_hash, to_hash = [], [], [], []
    for spec in files:
        path = out / spec.task / spec.name
        try:
            size = path.stat().st_size
        except OSError:
            missing.append(spec.rel)
            continue
        if size != spec.size:
            wrong_size.append(spec.rel)
        else:
            to_hash.append(spec)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        digests = pool.map(lambda s: _sha256_file(out / s.task / s.name), to_hash)
        for spec, digest in zip(to_hash, digests, strict=True):
            if digest != spec.sha256:
                wrong_hash.append(spec.rel)
    ok = not (missing or wrong_size or wrong_hash)
    return {
        "ok": ok,
        "missing": len(missing),
        "wrong_size": len(wrong_size),
        "wrong_hash": len(wrong_hash),
        "examples": (missing + wrong_size + wrong_hash)[:5],
    }
