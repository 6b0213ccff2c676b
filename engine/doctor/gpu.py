"""Doctor checks of the GPUs and CUDA (CLI process): the driver, the CUDA runtime torch was built for, each GPU and
who uses it, torch.cuda, bf16, bitsandbytes' library, GPTQModel's kernels, flash-attention."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from engine.doctor.check import ERROR, OK, SKIPPED, WARNING, Check, gib
from engine.doctor.facts import PROBE_MODULE, Facts, distribution_version, dotted, package_dir, version_tuple

#: GPTQModel compiles its CUDA kernels (Marlin, ExLlama, ...) with nvcc at first use and needs this release
#: or newer for their flags (``gptqmodel.utils.cpp.is_nvcc_compatible`` in GPTQModel 7.7).
GPTQMODEL_MIN_NVCC = (12, 8)


def check_driver(facts: Facts) -> Check:
    driver = facts.driver
    if not driver.available:
        return Check("nvidia driver", WARNING, f"no NVIDIA driver reachable through NVML ({driver.reason}); "
                                               "every job runs on the CPU",
                     "on a GPU machine install the NVIDIA driver (nvidia-smi must work) and nvidia-ml-py")
    return Check("nvidia driver", OK, f"driver {driver.driver_version}, supports CUDA up to "
                                      f"{dotted(driver.cuda_version)}")


def check_cuda_runtime(facts: Facts) -> Check:
    """torch's CUDA build against what the driver supports."""
    build = facts.torch_build
    name = "cuda runtime"
    if build is None:
        return Check(name, ERROR, "torch is not installed", "pip install torch")
    if not facts.driver.available:
        what = f"CUDA {build['cuda']}" if build.get("cuda") else "CPU-only"
        return Check(name, SKIPPED, f"no NVIDIA driver; torch is a {what} build")
    wanted = version_tuple(build.get("cuda"))
    if wanted is None:
        return Check(name, ERROR, f"torch {build['version']} is a CPU-only build on a machine with an NVIDIA driver",
                     f"install a torch built for CUDA ≤ {dotted(facts.driver.cuda_version)} "
                     "(https://pytorch.org/get-started/locally/)")
    supported = facts.driver.cuda_version
    if supported is None:
        return Check(name, WARNING, f"torch is built for CUDA {dotted(wanted)}; the driver did not say which CUDA "
                                    "it supports", "update the NVIDIA driver")
    if supported[0] < wanted[0]:
        return Check(name, ERROR, f"torch is built for CUDA {dotted(wanted)} but driver "
                                  f"{facts.driver.driver_version} supports CUDA up to {dotted(supported)}",
                     f"update the NVIDIA driver, or install a torch built for CUDA {supported[0]}.x")
    if supported < wanted:
        return Check(name, WARNING, f"torch is built for CUDA {dotted(wanted)}, the driver supports "
                                    f"{dotted(supported)}: it runs through CUDA minor-version compatibility, "
                                    "but kernels compiled at run time (PTX) may fail",
                     "update the NVIDIA driver")
    return Check(name, OK, f"torch is built for CUDA {dotted(wanted)}; the driver supports up to {dotted(supported)}")


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
        from engine.jobs.settings import load_worker_settings

        busy = load_worker_settings(facts.ws).busy_gpu_memory_fraction
    except Exception:  # a bad worker.toml is reported by the worker check
        busy = 0.1
    names = _process_names(sorted({p.pid for r in facts.gpus for p in r.processes}))
    checks = []
    for reading in facts.gpus:
        capability = dotted(reading.compute_capability) if reading.compute_capability else "?"
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
        listed = ", ".join(f"cuda:{d['index']} {d['name']} (compute {dotted(tuple(d['capability']))})"
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
    folder = package_dir("bitsandbytes")
    if folder is None:
        return Check(name, ERROR, "bitsandbytes is not installed (QLoRA, INT8 and NF4 need it)",
                     "pip install bitsandbytes")
    cpu, versions = _bnb_libraries(folder)
    wanted = version_tuple((facts.torch_build or {}).get("cuda"))
    same_major = [v for v in versions if wanted and v[0] == wanted[0]]
    shipped = ", ".join(dotted(v) for v in versions) or "none"
    if facts.gpus:
        loaded = facts.probe.get("bitsandbytes") or {}
        if loaded.get("cuda"):
            return Check(name, OK, f"loads {Path(loaded['library']).name} (CUDA builds shipped: {shipped})")
        why = loaded.get("error") or facts.probe.get("probe_error") or f"loaded {loaded.get('library') or 'nothing'}"
        return Check(name, ERROR, f"no CUDA library loaded on this GPU machine: {why}",
                     "pip install -U bitsandbytes (a build with a library for torch's CUDA "
                     f"{dotted(wanted)}), or set BNB_CUDA_VERSION")
    if not cpu:
        return Check(name, ERROR, f"no CPU library in {folder} (QLoRA, INT8 and NF4 cannot run on the CPU)",
                     "pip install -U bitsandbytes")
    detail = f"CPU library present (no CUDA device here); CUDA builds shipped: {shipped}"
    if wanted and not same_major:
        return Check(name, WARNING, f"{detail}; none for torch's CUDA {dotted(wanted)}",
                     "on a GPU machine install a bitsandbytes that ships a library for torch's CUDA")
    return Check(name, OK, detail + (f" (torch's CUDA {dotted(wanted)} is covered)" if wanted else ""))


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
    if distribution_version("gptqmodel") is None:
        return Check(name, ERROR, "gptqmodel is not installed (GPTQ and AWQ need it)", "pip install gptqmodel")
    nvcc, release = _nvcc()
    triton = distribution_version("triton")
    tools = (f"nvcc {dotted(release)} at {nvcc}" if nvcc else "no nvcc") + \
        (f", triton {triton[1]}" if triton else ", no triton")
    built = _built_kernels()
    cache = f"; built already: {', '.join(built)}" if built else ""
    if not facts.gpus:
        return Check(name, SKIPPED, f"no CUDA device: the CPU runs GPTQModel's torch kernels ({tools}{cache})")
    if nvcc is None or release is None or release < GPTQMODEL_MIN_NVCC:
        fallback = "Triton" if triton else "plain torch"
        return Check(name, WARNING, f"{tools}: GPTQModel cannot compile its Marlin/ExLlama CUDA kernels (needs nvcc ≥ "
                                    f"{dotted(GPTQMODEL_MIN_NVCC)}) and falls back to slower {fallback} kernels{cache}",
                     f"install the CUDA toolkit ≥ {dotted(GPTQMODEL_MIN_NVCC)} and set CUDA_HOME")
    return Check(name, OK, f"{tools}: CUDA kernels compile on first use (once, cached){cache}")


def check_flash_attention(facts: Facts) -> Check:
    name = "flash attention"
    package = distribution_version("flash-attn", "flash_attn")
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
