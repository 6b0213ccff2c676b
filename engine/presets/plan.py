"""What an experiment would do: output names and steps (train, PTQ, eval), and — for ``llmtui plan`` — the
target modules and prompt format its base model gives, as plain data (TUI and CLI processes; no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

    def to_dict(self) -> dict[str, Any]:
        return {"output_name": self.output_name, "output_dir": self.output_dir,
                "steps": [asdict(s) for s in self.steps]}


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
        for out, index in outputs:
            steps.append(Step("eval", out, f"evaluate {out} on {sets}", after=[index],
                              options=config.eval.request().options()))
    return Plan(name, str(ws.model_dir(name)), steps)


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
