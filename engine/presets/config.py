"""Experiment presets: typed sections, TOML load/save, and validation with field-level messages (any process).

A preset is data only (TOML read with ``tomllib``); nothing in it is ever executed.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from engine.data.tasks import BUILTIN_TASKS
from engine.presets.knobs import (ConfigError, Problem, build_section, did_you_mean, field_specs, knob,
                                   section_dict)
from engine.presets.requests import TRACKERS, EvalRequest, QuantizeRequest
from engine.presets.targets import keyword_problem
from engine.presets.naming import TRAIN_QUANT_METHODS, QuantizationSpec, model_name, ptq_spec, qlora_spec

PEFT_METHODS = ("NoPeft", "LoRa", "DoRa", "VeRa")
FINETUNING_METHODS = ("SFT",)
BUILTIN_TASK_NAMES = tuple(BUILTIN_TASKS)
DTYPES = ("auto", "float32", "bfloat16", "float16")


SLURM_TIME_FORMATS = ("minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours",
                      "days-hours:minutes", "days-hours:minutes:seconds")


def slurm_time_problem(value: str) -> str | None:
    """Why ``value`` is not a Slurm time limit (``sbatch --time``), or None when it is one ('' = none set)."""
    if value == "" or value in ("infinite", "UNLIMITED") or re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", value):
        return None
    return f"{value!r} is not a Slurm time limit (formats: {', '.join(SLURM_TIME_FORMATS)})"


@dataclass
class ModelSection:
    base: str = knob("Qwen/Qwen3-0.6B", help="hub id or local model folder")
    trust_remote_code: bool = knob(False, help="run the model repo's own code (off unless needed)")
    dtype: str = knob("auto", choices=DTYPES, help="weights dtype for training")


@dataclass
class DataSection:
    dataset: str = knob("openmath", help=" | ".join((*BUILTIN_TASKS, "none", "custom")))
    trunc_train: int = knob(0, min=0, help="train rows to use (0 = all)")
    trunc_eval: int = knob(0, min=0, help="eval rows to use (0 = all)")


@dataclass
class PeftSection:
    method: str = knob("LoRa", choices=PEFT_METHODS)
    r: int = knob(256, min=1, max=4096)
    alpha: float = knob(16.0, above=0)
    dropout: float = knob(0.1, min=0, below=1)
    target_modules: list[str] = knob(["attention"], help="attention | all-linear | module names")
    vera_d_initial: float = knob(0.1, above=0)


@dataclass
class QuantSection:
    method: str = knob("NoQuant", choices=TRAIN_QUANT_METHODS)
    merge_after_train: bool = knob(False, help="merge adapters into the base and save full weights")


@dataclass
class TrainSection:
    finetuning: str = knob("SFT", choices=FINETUNING_METHODS)
    learning_rate: float = knob(1e-5, above=0, below=1)
    per_device_train_batch_size: int = knob(1, min=1, max=4096)
    gradient_accumulation_steps: int = knob(8, min=1, max=4096)
    num_train_epochs: float = knob(1.0, above=0)
    max_steps: int = knob(-1, min=-1, help="-1 = run num_train_epochs")
    warmup_ratio: float = knob(0.06, min=0, below=1)
    weight_decay: float = knob(0.0, min=0)
    max_grad_norm: float = knob(1.0, min=0)
    lr_scheduler_type: str = knob("linear", choices=("linear", "cosine", "constant", "constant_with_warmup"))
    logging_steps: int = knob(10, min=1)
    gradient_checkpointing: bool = knob(True)
    packing: bool = knob(False)
    assistant_only_loss: bool = knob(False)
    max_length: int = knob(1024, min=16)
    group_by_length: bool = knob(False)
    seed: int = knob(42, min=0)
    gpus: int = knob(1, min=1, max=64, help="processes for data-parallel training (per node on Slurm)")
    nodes: int = knob(1, min=1, max=1024, help="Slurm nodes for multi-node data-parallel training")
    slurm_time: str = knob("", check=slurm_time_problem, help="Slurm time limit of the training job ('' = [slurm] time)")
    # 250 steps: a 7-8B LoRA step (batch 1 x accumulation 8 x 1024 tokens) takes about 3-5 s on one GPU,
    # so the newest checkpoint is at most ~15-20 min old; a 0.6B model saves every few minutes.
    save_steps: int = knob(250, min=0, help="optimizer steps between checkpoints (0 = none)")
    save_total_limit: int = knob(2, min=1, max=1000, help="checkpoints kept while training (oldest deleted)")
    resume: str = knob("auto", choices=("auto", "never"),
                        help="auto: continue from this run's newest complete checkpoint")
    keep_checkpoints: bool = knob(False, help="keep the checkpoints in the model folder after training")
    report_to: list[str] = knob([], choices=TRACKERS, one_or_list=True,
                                 help="experiment trackers: tensorboard, wandb, mlflow, trackio ([] = none)")


#: A ``[[ptq]]`` step is a quantize request.
PtqStep = QuantizeRequest


@dataclass
class EvalSection(EvalRequest):
    """``[eval]``: the evaluation request every output of the pipeline gets, and whether there is one."""

    after: bool = knob(False, flag=False, help="queue evaluation of every output")

    def request(self) -> EvalRequest:
        return EvalRequest.from_options(self.options())


SECTIONS: dict[str, type] = {
    "model": ModelSection, "data": DataSection, "peft": PeftSection, "quant": QuantSection,
    "train": TrainSection, "eval": EvalSection,
}


@dataclass
class ExperimentConfig:
    """A whole experiment: every knob of the legacy scripts' trainer, PTQ steps and evaluation."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    peft: PeftSection = field(default_factory=PeftSection)
    quant: QuantSection = field(default_factory=QuantSection)
    train: TrainSection = field(default_factory=TrainSection)
    ptq: list[PtqStep] = field(default_factory=list)
    eval: EvalSection = field(default_factory=EvalSection)

    def quant_spec(self) -> QuantizationSpec:
        return qlora_spec() if self.quant.method == "QLORA" else QuantizationSpec()

    def output_name(self) -> str:
        """The model folder name this experiment trains into."""
        return model_name(self.model.base, self.data.dataset, self.train.finetuning,
                          self.peft.method, self.peft.r, self.quant_spec())

    def ptq_specs(self) -> list[QuantizationSpec]:
        return [ptq_spec(s.method, s.resolved_bits(), s.group_size or None, s.calibration or None) for s in self.ptq]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: section_dict(getattr(self, name)) for name in SECTIONS}
        data["ptq"] = [section_dict(step) for step in self.ptq]
        if not data["ptq"]:
            del data["ptq"]
        return data

    def to_toml(self) -> str:
        """TOML text with the sections in a fixed order and ``[[ptq]]`` steps as tables."""
        data = self.to_dict()
        chunks = [tomli_w.dumps({name: data[name]}) for name in ("model", "data", "peft", "quant", "train")]
        chunks += ["[[ptq]]\n" + tomli_w.dumps(step) for step in data.get("ptq", [])]
        chunks.append(tomli_w.dumps({"eval": data["eval"]}))
        return "\n".join(chunk.strip("\n") + "\n" for chunk in chunks)


def config_from_dict(data: dict[str, Any], source: str = "<preset>",
                     custom_datasets: tuple[str, ...] = ()) -> ExperimentConfig:
    """Build and validate a config from plain data; raise :class:`ConfigError` listing every problem."""
    problems: list[Problem] = []
    built: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "ptq":
            if not isinstance(raw, list):
                problems.append(Problem("ptq", "must be an array of tables ([[ptq]])"))
                continue
            built["ptq"] = [build_section(PtqStep, step, f"ptq[{i}]", problems) for i, step in enumerate(raw)]
        elif key in SECTIONS:
            built[key] = build_section(SECTIONS[key], raw, key, problems)
        else:
            problems.append(Problem(key, f"unknown section{did_you_mean(key, [*SECTIONS, 'ptq'])}"))
    config = ExperimentConfig(**built)
    problems.extend(cross_check(config, custom_datasets))
    if problems:
        raise ConfigError(source, problems)
    return config


def cross_check(config: ExperimentConfig, custom_datasets: tuple[str, ...] = ()) -> list[Problem]:
    """Rules that involve more than one field or the workspace's datasets."""
    problems: list[Problem] = []
    datasets = (*BUILTIN_TASK_NAMES, *custom_datasets)
    if config.data.dataset not in (*datasets, "none"):
        hint = did_you_mean(config.data.dataset, [*datasets, "none"])
        problems.append(Problem("data.dataset", f"unknown dataset {config.data.dataset!r}; expected one of "
                                f"{', '.join((*datasets, 'none'))}{hint}"))
    if not config.model.base.strip():
        problems.append(Problem("model.base", "must name a hub id or a model folder"))
    if config.quant.method == "QLORA" and config.peft.method == "NoPeft":
        problems.append(Problem("quant.method", "QLORA trains adapters on a 4-bit base and needs peft.method "
                                "LoRa or DoRa (the legacy scripts silently switched to LoRa; set it explicitly)"))
    if config.quant.method == "QLORA" and config.peft.method == "VeRa":
        problems.append(Problem("peft.method", "VeRa cannot train on a QLORA 4-bit base (TRL casts the adapter "
                                "to bf16 and VeRA's shared float32 projections break); use LoRa or DoRa"))
    if config.peft.method != "NoPeft" and not config.peft.target_modules:
        problems.append(Problem("peft.target_modules", "must list at least one module for a PEFT method"))
    elif (issue := keyword_problem(config.peft.target_modules)) is not None:
        problems.append(Problem("peft.target_modules", issue))
    for i, step in enumerate(config.ptq):
        problems.extend(step.problems(f"ptq[{i}]"))
    if "none" in config.train.report_to and len(config.train.report_to) > 1:
        problems.append(Problem("train.report_to", f"'none' cannot be combined with other trackers "
                                                   f"({config.train.report_to})"))
    problems.extend(config.eval.problems(datasets))
    return problems


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` → (path, value); the value is read as a TOML literal, else as a string."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise ValueError(f"--set {text!r}: the key must be section.key (for example train.max_steps)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set section.key=value`` strings to raw preset data (``ptq.0.bits=8`` for PTQ steps)."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for part in path[:-1]:
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(f"--set {text!r}: no PTQ step {part}")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        if isinstance(node, list):
            raise ValueError(f"--set {text!r}: name a key inside the step (ptq.0.bits=8)")
        node[path[-1]] = value
    return data


def load_preset(path: Path | str, overrides: list[str] | None = None,
                custom_datasets: tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate a preset file; raise :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem("file", "not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem("file", f"cannot be read: {exc}")]) from None
    return load_preset_text(text, str(path), overrides, custom_datasets)


def load_preset_text(text: str, source: str = "<preset>", overrides: list[str] | None = None,
                     custom_datasets: tuple[str, ...] = ()) -> ExperimentConfig:
    """Parse and validate preset TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("toml", f"not valid TOML: {exc}")]) from None
    try:
        apply_overrides(data, overrides or [])
    except ValueError as exc:
        raise ConfigError(source, [Problem("--set", str(exc))]) from None
    return config_from_dict(data, source, custom_datasets)


def save_preset(config: ExperimentConfig, path: Path | str, base: str | None = None) -> Path:
    """Write the preset as TOML atomically, as the user wrote it: when there is a ``base`` text (by default
    the file already at ``path``) only the keys whose value differs from it change, keeping its comments,
    order and formatting, and no default it did not spell out is added. Without one, :meth:`to_toml`."""
    from engine.files import write_text

    path = Path(path)
    if base is None and path.exists():
        base = path.read_text(encoding="utf-8")
    return write_text(path, config.to_toml() if base is None else edit_preset_text(base, config))


def edit_preset_text(base: str, config: ExperimentConfig) -> str:
    """``base`` (valid preset TOML) changed to say ``config``, touching only the keys that differ.

    A key the text has is rewritten only when its value differs; a key it lacks is added only when the
    config's value is not the default. ``[[ptq]]`` steps keep their tables (and comments) when they move:
    each step takes the unused table whose values it equals, else the one at its position. New sections
    and steps go at the end.
    """
    import tomlkit

    doc = tomlkit.parse(base)
    plain = tomllib.loads(base)
    wanted = config.to_dict()
    for name, cls in SECTIONS.items():
        changes = _changed_keys(plain.get(name, {}), wanted[name], cls)
        if changes and name not in doc:
            _add_at_end(doc, name, tomlkit.table())
        _update_table(doc.get(name), changes)
    _update_ptq(doc, plain.get("ptq", []), wanted.get("ptq", []))
    text = tomlkit.dumps(doc)
    return text if text == base else text.rstrip("\n") + "\n"


def _changed_keys(had: dict[str, Any], want: dict[str, Any], cls: type) -> dict[str, Any]:
    defaults = {name: spec["default"] for name, spec in field_specs(cls).items()}
    return {key: value for key, value in want.items()
            if (had[key] != value if key in had else value != defaults[key])}


def _update_table(table: Any, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        table[key] = value


def _add_at_end(doc: Any, name: str, item: Any) -> None:
    """Append a table or array of tables after a blank line."""
    import tomlkit

    if not tomlkit.dumps(doc).endswith("\n\n"):
        doc.add(tomlkit.nl())
    doc.add(name, item)


def _update_ptq(doc: Any, had: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    import tomlkit

    if not want:
        if "ptq" in doc:
            del doc["ptq"]
        return
    defaults = {name: spec["default"] for name, spec in field_specs(PtqStep).items()}
    full = [{**defaults, **step} for step in had]
    unused = list(range(len(had)))
    picks: list[int | None] = [None] * len(want)
    for index, step in enumerate(want):  # unchanged steps keep their tables wherever they moved
        picks[index] = next((i for i in unused if full[i] == step), None)
        if picks[index] is not None:
            unused.remove(picks[index])
    for index in range(len(want)):  # edited steps take the table at their place, else a free one
        if picks[index] is None and unused:
            picks[index] = index if index in unused else unused[0]
            unused.remove(picks[index])
    if picks == list(range(len(had))):
        steps, tables = doc["ptq"], [doc["ptq"][i] for i in range(len(had))]
    else:  # moved, added or removed: lay the tables out again
        if "ptq" not in doc:
            _add_at_end(doc, "ptq", tomlkit.aot())
        steps = doc["ptq"]
        tables = [steps[i] if i is not None else tomlkit.table() for i in picks]
        while len(steps):
            del steps[0]
        for table in tables:
            steps.append(table)
    for position, (table, pick, step) in enumerate(zip(tables, picks, want)):
        _update_table(table, _changed_keys(had[pick] if pick is not None else {}, step, PtqStep))
        if pick is None and position < len(tables) - 1:
            table.add(tomlkit.nl())  # a blank line before the next step, like the others
