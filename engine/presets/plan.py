"""What an experiment would do: output names and steps (train, PTQ, eval), and — for ``llmtui plan`` — the
target modules and prompt format its base model gives, as plain data (TUI and CLI processes; no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.presets.config import ExperimentConfig
from engine.presets.naming import ptq_output_name
from engine.workspace import Workspace


@dataclass
class Step:
    """One step of a pipeline. ``after`` holds the indexes of the steps it waits for."""

    kind: str  # "train" | "snapshot" | "quantize" | "eval"
    target: str  # the model folder name the step writes (train/quantize) or reads (eval)
    description: str
    after: list[int] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    output_name: str
    output_dir: str
    steps: list[Step]
    training: dict[str, Any] | None = None  # padding_free / loss_chunk_tokens as the run will use them

    def to_dict(self) -> dict[str, Any]:
        return {"output_name": self.output_name, "output_dir": self.output_dir,
                "steps": [asdict(s) for s in self.steps], "training": self.training}


def training_efficiency(config: ExperimentConfig) -> dict[str, Any]:
    """What the run's batches and loss will be, and why (the job process decides padding-free for good once the
    model is loaded: :mod:`engine.runs.packing`)."""
    t = config.train
    if t.padding_free:
        packed = ("no padding where the model's attention keeps packed examples apart (sdpa, eager, flash; "
                  "checked when it loads), else padded")
    else:
        packed = "padded batches"
    if t.loss_chunk_tokens:
        loss = f"chunked loss, {t.loss_chunk_tokens} tokens at a time (Liger's kernel on CUDA when installed)"
    else:
        loss = "TRL's own fused LM head"
    return {"padding_free": {"value": t.padding_free, "plan": packed},
            "loss_chunk_tokens": {"value": t.loss_chunk_tokens, "plan": loss}}


def make_plan(config: ExperimentConfig, ws: Workspace) -> Plan:
    """The ordered steps of ``config``: train (or a base snapshot), each PTQ step, then evaluation."""
    name = config.output_name()
    steps: list[Step] = []
    if config.data.dataset == "none":
        steps.append(Step("snapshot", name, f"save a snapshot of {config.model.base} (no training)"))
    else:
        adapter = "" if config.peft.method == "NoPeft" else (
            ", merge adapters" if config.quant.merge_after_train else ", save the adapter")
        quant = " with QLoRA (4-bit NF4 base)" if config.quant.method == "QLORA" else ""
        steps.append(Step("train", name, f"{config.train.finetuning} {config.peft.method} on "
                          f"{config.data.dataset}{quant}{adapter} → Models/{name}"))
    outputs = [(name, 0)]
    for step, spec in zip(config.ptq, config.ptq_specs()):
        out = ptq_output_name(name, spec)
        steps.append(Step("quantize", out, f"{spec.method} {spec.weights_bits}-bit PTQ of {name} → Models/{out}",
                          after=[0], options={"source": name, **step.options()}))
        outputs.append((out, len(steps) - 1))
    if config.eval.after:
        sets = ", ".join(config.eval.datasets) or "all test sets"
        request = config.eval.request()
        # lm-eval tasks are a job of their own beside the built-in test sets' (an eval job runs one or the other)
        built_in = replace(request, lm_eval_tasks=[], num_fewshot=-1, apply_chat_template=False, check_backends=0)
        lm_eval = replace(request, datasets=[]) if request.lm_eval_tasks else None
        for out, index in outputs:
            steps.append(Step("eval", out, f"evaluate {out} on {sets}", after=[index], options=built_in.options()))
            if lm_eval is not None:
                steps.append(Step("eval", out, f"evaluate {out} on lm-eval {', '.join(lm_eval.lm_eval_tasks)}",
                                  after=[index], options=lm_eval.options()))
    training = None if config.data.dataset == "none" else training_efficiency(config)
    return Plan(name, str(ws.model_dir(name)), steps, training)


def model_preview(config: ExperimentConfig, ws: Workspace) -> dict[str, Any]:
    """The base model's resolved ``target_modules`` and ``prompt_format``, read from its folder's files when
    ``model.base`` is a local folder; for a hub id both say they are resolved at training time."""
    from pathlib import Path

    from engine.data.prompts import folder_prompt_format
    from engine.presets.targets import AT_TRAINING_TIME, preview

    from engine.models.resolve import ModelNotFoundError, resolve_model_ref

    try:
        resolved = resolve_model_ref(ws, config.model.base)
    except ModelNotFoundError:  # training's preflight reports it; the plan still shows the rest
        resolved = config.model.base
    folder = Path(resolved) if Path(resolved).is_dir() else None
    targets = preview(list(config.peft.target_modules), folder) if config.peft.method != "NoPeft" else None
    prompt_format = folder_prompt_format(folder) if folder is not None else None
    return {"base_folder": str(folder) if folder else None, "target_modules": targets,
            "prompt_format": prompt_format if prompt_format is not None else AT_TRAINING_TIME}
