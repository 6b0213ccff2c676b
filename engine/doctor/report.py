"""``llmtui doctor``'s report (CLI process; any process may call it): every check, in order, one area per module."""

from __future__ import annotations

import time
from typing import Callable

from engine.doctor.check import ERROR, Check
from engine.doctor.disk import check_disk_models, check_hf_cache
from engine.doctor.facts import CudaProbe, Facts, run_cuda_probe
from engine.doctor.gpu import (check_bf16, check_bitsandbytes, check_cuda_runtime, check_driver, check_flash_attention,
                               check_gptqmodel_kernels, check_gpus, check_torch_cuda)
from engine.doctor.software import check_llmtui, check_packages, check_python, check_vllm
from engine.doctor.workspace import check_jobs, check_model_folders, check_state_folder, check_workspace
from engine.jobs.gpu import GpuInventory, NvmlInventory
from engine.workspace import Workspace

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
