"""One typed request per job kind — :class:`TrainRequest`, :class:`QuantizeRequest`, :class:`EvalRequest` (any process).

A request owns its settings: their defaults and rules (knobs, :mod:`engine.presets.knobs`), the flags that
both its own subcommand (``llmtui quantize|eval``) and ``llmtui queue add`` build from it (:meth:`Request.add_flags`,
read back with :meth:`Request.from_flags`), the preset section it is read from (a ``[[ptq]]`` step is a
:class:`QuantizeRequest`; the ``[eval]`` section is an :class:`EvalRequest` plus ``after``), the options the queue
records and the argv of the job process it becomes (:meth:`Request.argv`). The plan, the queue, the command
line, the TUI form and the job process all use these, so a new setting is one field here.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from engine.data.tasks import DISPLAY_ORDER
from engine.presets.knobs import Problem, did_you_mean, knob, range_problem, type_name, type_problem
from engine.presets.naming import PTQ_METHODS

#: Evaluation backends: vLLM when configured and able to load the model (auto), the built-in engine, or vLLM.
EVAL_BACKENDS = ("auto", "hf", "vllm")
#: Experiment trackers the trainer can report to (transformers' ``report_to`` names).
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "trackio")
#: THE spelling of "choose for me" (the evaluation batch size, the evaluation backend).
AUTO = "auto"
#: Bits each PTQ method supports.
PTQ_BITS = {"GPTQ": (2, 3, 4, 8), "AWQ": (4,), "HQQ": (1, 2, 3, 4, 8), "INT8": (8,), "NF4": (4,)}
#: PTQ methods with a group size (bitsandbytes uses its own fixed blocks: int8 per row, nf4 blocks of 64).
GROUPED_PTQ_METHODS = ("GPTQ", "AWQ", "HQQ")
#: Group sizes every backend's kernels accept; 0 means one group per output channel.
PTQ_GROUP_SIZES = (0, 16, 32, 64, 128, 256, 512, 1024)


def default_bits(method: str) -> int:
    """THE default weight bits of a PTQ method: 4 where the method supports it (8 for INT8)."""
    allowed = PTQ_BITS.get(method.upper(), (4,))
    return 4 if 4 in allowed else allowed[0]


def ptq_problems(method: str, bits: int, group_size: int | None) -> dict[str, str]:
    """THE PTQ validation rule: ``{"bits"|"group_size": message}`` for what ``method`` does not support.

    ``method`` is upper case and one of PTQ_METHODS; bits 0 are the method's default; a ``None`` group size
    (or a method without groups) is not checked.
    """
    problems = {}
    bits = bits or default_bits(method)
    allowed = PTQ_BITS.get(method, ())
    if allowed and bits not in allowed:
        problems["bits"] = f"{method} supports bits {', '.join(map(str, allowed))}, not {bits}"
    if method in GROUPED_PTQ_METHODS and group_size is not None and group_size not in PTQ_GROUP_SIZES:
        problems["group_size"] = (f"{method} group size {group_size} is not supported; use "
                                  f"{', '.join(map(str, PTQ_GROUP_SIZES[1:]))} or 0 (per output channel)")
    return problems


def batch_size_problem(value: Any) -> str | None:
    """A batch size is a whole number ≥ 1 or ``"auto"`` (a preset's ``0`` is read as ``"auto"``)."""
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return f"{value!r} is not a positive integer or {AUTO!r}"


# ---------------------------------------------------------------------------------------------- flags


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number_parser(meta: dict[str, Any], kind: type = int):
    """THE parser of number flags (whole numbers, or any number for a float knob): the knob's own range rule
    says what is wrong."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if problem := range_problem(value, meta):
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


def _list_parser(meta: dict[str, Any]):
    def parse(text: str) -> list[str]:
        items = [part.strip() for part in text.split(",") if part.strip()]
        if problem := range_problem(items, meta):
            raise argparse.ArgumentTypeError(problem)
        return items
    return parse


def _batch_size_flag(text: str) -> int | str:
    if text == AUTO:
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:  # on the command line "auto" is the one way to ask for it
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer or {AUTO!r}")
    return value


def _choice_parser(choices: tuple):
    by_lower = {str(c).lower(): c for c in choices}
    return lambda text: by_lower.get(text.lower(), text)


@dataclass
class Request:
    """The flag, options and argv machinery every request shares (its fields are knobs)."""

    @classmethod
    def flag_fields(cls) -> list:
        return [f for f in fields(cls) if f.metadata.get("flag", True)]

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, typed, checked and described by the field's knob."""
        for f in cls.flag_fields():
            meta, name = f.metadata, type_name(f)
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            help_text = meta.get("help", "")
            if name == "bool":
                parser.add_argument(_flag(f.name), action="store_true", help=help_text)
                continue
            kwargs: dict[str, Any] = {"default": default, "help": help_text}
            if meta.get("required_flag"):
                kwargs = {"required": True, "help": help_text}
            if f.name == "batch_size":
                kwargs.update(type=_batch_size_flag, metavar=f"N|{AUTO}")
            elif name in ("int", "float"):
                kwargs.update(type=_number_parser(meta, int if name == "int" else float), metavar="N")
            elif name == "list[str]":
                kwargs.update(type=_list_parser(meta), metavar="LIST", default=list(default))
            elif meta.get("choices"):
                kwargs.update(type=_choice_parser(meta["choices"]), choices=meta["choices"],
                              metavar="|".join(str(c).lower() for c in meta["choices"]))
            parser.add_argument(_flag(f.name), **kwargs)

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> "Request":
        return cls(**{f.name: getattr(args, f.name) for f in cls.flag_fields()})

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Request":
        """The request a queued job recorded (:meth:`options`)."""
        known = {f.name for f in cls.flag_fields()}
        return cls(**{key: value for key, value in options.items() if key in known})

    def options(self) -> dict[str, Any]:
        """The request as plain data (the queue's ``options``, the plan's steps)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), list) else v) for f in self.flag_fields()}

    def argv(self) -> list[str]:
        """The flags that say this request to the job process (settings left at their default are left out,
        except those whose knob says ``always``)."""
        args: list[str] = []
        for f in self.flag_fields():
            value = getattr(self, f.name)
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if (value == default and not f.metadata.get("always")) or value is None or value is False \
                    or (isinstance(value, (str, list)) and not value):
                continue
            if value is True:
                args.append(_flag(f.name))
            else:
                text = ",".join(value) if isinstance(value, list) else str(value)
                args += [_flag(f.name), text.lower() if f.metadata.get("lower") else text]
        return args

    def field_problems(self, where: str) -> list[Problem]:
        """Each setting checked against its knob (a request built in code skips the flags' checks)."""
        found = []
        for f in self.flag_fields():
            value = getattr(self, f.name)
            if issue := type_problem(value, type_name(f)) or range_problem(value, f.metadata):
                found.append(Problem(f"{where}.{f.name}", issue))
        return found


def flag_problems(problems: list[Problem]) -> str:
    """Request problems phrased as command-line options (``ptq[0].group_size`` → ``--group-size``)."""
    return "; ".join(f"{_flag(p.where.rsplit('.', 1)[-1])}: {p.message}" for p in problems)


# ---------------------------------------------------------------------------------------------- the kinds


@dataclass
class EvalRequest(Request):
    """An evaluation: which test sets, how many items, how it is batched and run, where metrics are logged."""

    datasets: list[str] = knob([], help=f"comma-separated test sets: {','.join(DISPLAY_ORDER)} or custom names "
                                        "([] = every test set present)")
    limit: int = knob(0, min=0, help="items per test set (0 = all)")
    batch_size: int | str = knob(AUTO, check=batch_size_problem,
                                 help="prompts per generate call; auto starts high and halves on out-of-memory")
    backend: str = knob(AUTO, choices=EVAL_BACKENDS,
                        help="auto: vLLM when configured (LLMTUI_VLLM_PYTHON or vllm_python in .llmtui/worker.toml) "
                             "and it can load the model, else the built-in engine (hf)")
    threads: int = knob(0, min=0, help="torch CPU threads of the built-in engine (0 = as many as cores are free)")
    report_to: list[str] = knob([], choices=TRACKERS, one_or_list=True,
                                help="also log the metrics to the tracker runs the model's training used "
                                     "(tensorboard, wandb, mlflow)")
    force: bool = knob(False, preset=False, help="evaluate again models that already have a metrics file")

    def __post_init__(self) -> None:
        if self.batch_size == 0:  # presets written before "auto" was the one spelling
            self.batch_size = AUTO

    def problems(self, known_datasets: tuple[str, ...], section: str = "eval") -> list[Problem]:
        """Rules that involve the workspace's test sets or more than one setting."""
        found = []
        if "none" in self.report_to and len(self.report_to) > 1:
            found.append(Problem(f"{section}.report_to",
                                 f"'none' cannot be combined with other trackers ({self.report_to})"))
        for name in self.datasets:
            if name not in known_datasets:
                found.append(Problem(f"{section}.datasets",
                                     f"unknown test set {name!r}{did_you_mean(name, list(known_datasets))}"))
        return found


@dataclass
class QuantizeRequest(Request):
    """A post-training quantization (also a preset's ``[[ptq]]`` step)."""

    method: str = knob("GPTQ", choices=PTQ_METHODS, required_flag=True, always=True, lower=True,
                       help="the PTQ method (GPTQ and AWQ calibrate on text; HQQ, INT8 and NF4 are data-free)")
    bits: int = knob(0, min=0, max=8, always=True, help="weight bits (0 = the method's default: 8 for INT8, else 4): "
                                                       "gptq 2/3/4/8, awq 4, hqq 1/2/3/4/8")
    group_size: int = knob(64, min=0, max=4096, always=True,
                           help="gptq/awq/hqq group size (0 = per output channel); int8 and nf4 ignore it")
    calibration: str = knob("", help="gptq/awq calibration: a text file (one sample per line) or a dataset name "
                                     "('' = the source model's training dataset)")
    samples: int = knob(128, min=1, max=100000, always=True, help="calibration samples")

    def resolved_bits(self) -> int:
        return self.bits or default_bits(self.method)

    def argv(self) -> list[str]:
        return Request.argv(replace(self, bits=self.resolved_bits()))

    def problems(self, where: str = "ptq") -> list[Problem]:
        return [Problem(f"{where}.{key}", message)
                for key, message in ptq_problems(self.method.upper(), self.bits, self.group_size).items()]


@dataclass
class TrainRequest(Request):
    """A training run: a preset (frozen in the job's folder), ``--set`` overrides, and whether to replace the model."""

    overrides: list[str] = knob([], preset=False, help="override a preset value, e.g. train.max_steps=50")
    overwrite: bool = knob(False, preset=False, help="replace the model folder if it exists")

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser, *, overwrite: bool = True) -> None:
        parser.add_argument("preset", help="preset TOML file, or a preset name in the workspace's experiments/")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                            help="override a preset value (repeatable), e.g. --set train.max_steps=50")
        if overwrite:
            parser.add_argument("--overwrite", action="store_true", help="replace the model folder if it exists")

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> "TrainRequest":
        return cls(overrides=list(args.overrides), overwrite=bool(getattr(args, "overwrite", False)))

    def argv(self) -> list[str]:
        return [arg for text in self.overrides for arg in ("--set", text)] + (["--overwrite"] if self.overwrite else [])
