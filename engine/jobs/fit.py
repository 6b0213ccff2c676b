"""How much memory a queued job needs, from its preset and its model's ``config.json`` (worker process).

A pipeline job carries its preset: its step of the plan (train, quantize or eval with that target) is
estimated as ``llmtui plan`` shows it. A job queued on its own (``llmtui queue quantize|eval``) is estimated
from its model folder's config.json (an adapter's base's). The device kind is the GPU for a job that asked
for GPUs, else the CPU. None when no config.json can be found: such a job is scheduled as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.data.tasks import DatasetError, custom_tasks
from engine.jobs.settings import configured_vllm_python
from engine.models.estimate import (EVAL_AUTO_BATCH, EstimateError, ModelShape, eval_estimate, find_config,
                                    folder_config, quantize_estimate, step_estimate)
from engine.presets.config import ConfigError, load_preset_text
from engine.presets.plan import make_plan
from engine.workspace import Workspace


def _quantized_bits(folder: Path) -> int:
    try:
        return int(json.loads((folder / "quantization_metadata.json").read_text(encoding="utf-8"))["weights_bits"])
    except (OSError, ValueError, KeyError, TypeError):
        return 16


def job_memory(ws: Workspace, job: Any) -> float | None:
    """Bytes ``job`` (a :class:`engine.jobs.store.Job`) needs on each of its GPUs, or on the CPU."""
    device = "gpu" if job.gpus_requested else "cpu"
    try:
        if job.preset:
            config = load_preset_text(job.preset, custom_datasets=tuple(custom_tasks(ws.datasets_dir)))
            kinds = ("train", "snapshot") if job.kind == "train" else (job.kind,)
            step = next((s for s in make_plan(config, ws).steps if s.kind in kinds and s.target == job.target), None)
            path = find_config(ws, config.model.base)
            if step is None or path is None:
                return None
            return step_estimate(config, ModelShape.from_file(path), step, device,
                                 vllm=configured_vllm_python(ws) is not None).bytes
        folder = ws.model_dir(job.options.get("source") or job.target) if job.kind == "quantize" else \
            ws.model_dir(job.target)
        path = folder_config(folder)
        if path is None:
            return None
        shape = ModelShape.from_file(path)
        if job.kind == "quantize":
            return quantize_estimate(shape, device=device, method=str(job.options.get("method", "gptq")),
                                     bits=job.options.get("bits") or 4,
                                     samples=job.options.get("samples") or 128).bytes
        if job.kind == "eval":
            batch = job.options.get("batch_size")
            return eval_estimate(shape, device=device, bits=_quantized_bits(folder),
                                 batch=batch if isinstance(batch, int) and batch > 0 else EVAL_AUTO_BATCH,
                                 backend=str(job.options.get("backend", "auto")),
                                 vllm=configured_vllm_python(ws) is not None).bytes
    except (ConfigError, DatasetError, EstimateError, ValueError):
        return None  # an unreadable preset or config fails in the job itself, with its own message
    return None
