"""What several doctor checks share, each read once (CLI process): the GPUs, torch's build read as text, and torch's
view of the GPUs from a short child process (``python -m engine.runs.cuda_probe``)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from engine.jobs.gpu import DriverInfo, GpuInventory, GpuReading
from engine.jobs.process import python_command, python_env
from engine.workspace import Workspace

PROBE_MODULE = "engine.runs.cuda_probe"
PROBE_TIMEOUT_S = 120.0


CudaProbe = Callable[[], dict[str, Any]]


def run_cuda_probe(timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """torch's view of the GPUs from ``python -m engine.runs.cuda_probe`` (``error`` set when it failed)."""
    try:
        done = subprocess.run(python_command(PROBE_MODULE), capture_output=True, text=True, timeout=timeout_s,
                              env=python_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"probe_error": f"{type(exc).__name__}: {exc}"}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"probe_error": f"exit code {done.returncode}: {tail}"}


class Facts:
    """What several checks share, each read once when first needed (its time counts to that check).

    The CUDA probe (seconds: it imports torch) starts in a thread as soon as NVML lists a GPU, so it
    runs while the checks before the ones that need it are made.
    """

    def __init__(self, ws: Workspace, inventory: GpuInventory, probe: CudaProbe):
        self.ws = ws
        self.inventory = inventory
        self._probe = probe
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._probing: Future | None = None

    @cached_property
    def driver(self) -> DriverInfo:
        return self.inventory.driver()

    @cached_property
    def gpus(self) -> list[GpuReading]:
        gpus = self.inventory.gpus() if self.driver.available else []
        if gpus and self._probing is None:
            self._probing = self._pool.submit(self._probe)
        return gpus

    @cached_property
    def torch_build(self) -> dict[str, Any] | None:
        return torch_build_info()

    @cached_property
    def probe(self) -> dict[str, Any]:
        """torch's CUDA facts; empty when NVML lists no GPU (then nothing needs them)."""
        if not self.gpus or self._probing is None:
            return {}
        try:
            return self._probing.result()
        except Exception as exc:  # a stand-in probe that raises, or a thread failure
            return {"probe_error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def distribution_version(*names: str) -> tuple[str, str] | None:
    """(distribution name, version) of the first of ``names`` that is installed."""
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def torch_build_info() -> dict[str, Any] | None:
    """torch's version and the CUDA it was built for, read from ``torch/version.py`` without importing torch."""
    folder = package_dir("torch")
    if folder is None:
        return None
    values: dict[str, Any] = {}
    try:
        tree = ast.parse((folder / "version.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        tree = ast.parse("")
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        if target in ("__version__", "cuda", "hip"):
            try:
                values[target] = ast.literal_eval(value)
            except ValueError:
                pass
    return {"version": values.get("__version__", "?"), "cuda": values.get("cuda"), "hip": values.get("hip")}


def version_tuple(text: str | None) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else None


def dotted(version: tuple[int, int] | None) -> str:
    return f"{version[0]}.{version[1]}" if version else "?"
