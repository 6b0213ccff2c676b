"""torch's own view of the GPUs, printed as one JSON object (a short child process of ``llmtui doctor``).

``llmtui doctor`` never imports torch itself; when NVML lists a GPU it runs ``python -m
engine.runs.cuda_probe`` and reads: whether ``torch.cuda`` works, each device's compute capability and
native bf16, the dtype llmtui's training would choose (:func:`engine.runs.device.choose_device`),
whether PyTorch's SDPA flash kernel is enabled, which native library bitsandbytes loaded, and whether Liger's
fused linear cross-entropy (the training loss's CUDA kernel, :mod:`engine.runs.chunked_loss`) loads.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def probe() -> dict[str, Any]:
    """The facts above; an exception while asking becomes an ``error`` string, never a crash."""
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": False,
                             "devices": [], "error": ""}
    try:
        facts["cuda_available"] = bool(torch.cuda.is_available())
        if facts["cuda_available"]:
            from engine.runs.device import choose_device

            for index in range(torch.cuda.device_count()):
                with torch.cuda.device(index):
                    properties = torch.cuda.get_device_properties(index)
                    facts["devices"].append({
                        "index": index, "name": properties.name, "capability": [properties.major, properties.minor],
                        "memory_total": int(properties.total_memory),
                        "bf16": bool(torch.cuda.is_bf16_supported(including_emulation=False))})
            choice = choose_device("auto")
            facts["training"] = {"weights_dtype": choice.weights_dtype, "mixed": choice.mixed or "no"}
            facts["cudnn"] = torch.backends.cudnn.version()
            facts["sdpa_flash"] = bool(torch.backends.cuda.flash_sdp_enabled())
    except Exception as exc:  # a broken driver or runtime: say so instead of failing the probe
        facts["error"] = f"{type(exc).__name__}: {exc}"
    facts["bitsandbytes"] = _bitsandbytes()
    from engine.runs.chunked_loss import liger_status

    loads, why = liger_status()
    facts["liger"] = {"loads": loads, "detail": why}
    return facts


def _bitsandbytes() -> dict[str, Any]:
    """Which native library bitsandbytes loaded (its CPU library, a CUDA one, or none with the reason)."""
    try:
        from bitsandbytes import cextension
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    lib = cextension.lib
    backend = str(getattr(cextension, "BNB_BACKEND", ""))
    # A library that failed to load is replaced by a mock that answers every attribute; it keeps the reason.
    failure = lib.__dict__.get("error_msg")
    if failure is not None or "_lib" not in lib.__dict__:
        return {"backend": backend, "library": "", "cuda": False,
                "error": str(failure or f"no native library loaded ({type(lib).__name__})").strip()}
    return {"backend": backend, "library": str(lib.__dict__["_lib"]._name), "cuda": bool(lib.compiled_with_cuda),
            "error": ""}


if __name__ == "__main__":
    from engine.jobs.process import stdout_to_stderr

    with stdout_to_stderr():  # libraries' banners must not mix with the JSON
        facts = probe()
    sys.stdout.write(json.dumps(facts) + "\n")
