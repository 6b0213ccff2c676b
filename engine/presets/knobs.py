"""Typed settings ("knobs"): a dataclass field's default, type and rules in one place, and the one reader that
checks plain data against them (any process).

Preset sections (:mod:`engine.presets.config`) and job requests (:mod:`engine.presets.requests`) are
dataclasses of knobs; forms, command-line flags and validation messages are all derived from them.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def knob(default: Any, *, min: float | None = None, max: float | None = None, above: float | None = None,
         below: float | None = None, choices: tuple | None = None, check: Any = None, one_or_list: bool = False,
         preset: bool = True, help: str = "", **flag_rules: Any) -> Any:
    """A field with its rules. ``one_or_list``: a list[str] knob that also takes a single string
    (``report_to = "tensorboard"``); ``preset=False``: a request setting that no preset holds (``force``);
    ``flag_rules`` say how a request's flag and argv show it (:class:`engine.presets.requests.Request`)."""
    meta = {"min": min, "max": max, "above": above, "below": below, "choices": choices, "check": check,
            "one_or_list": one_or_list, "preset": preset, "help": help, **flag_rules}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def preset_fields(cls: type) -> list:
    """The fields of ``cls`` a preset holds."""
    return [f for f in fields(cls) if f.metadata.get("preset", True)]


def type_name(f) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def field_specs(section: type) -> dict[str, dict[str, Any]]:
    """Per preset field: default, python type name and the validation metadata (for forms)."""
    specs = {}
    for f in preset_fields(section):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        specs[f.name] = {"default": default, "type": f.type, **f.metadata}
    return specs


def section_dict(section: Any) -> dict[str, Any]:
    """A section's preset fields as plain data."""
    return {f.name: (list(v) if isinstance(v := getattr(section, f.name), list) else v)
            for f in preset_fields(type(section))}


@dataclass
class Problem:
    """One thing wrong with a preset or request: where (``section.key``) and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(ValueError):
    """A preset has problems; ``problems`` lists every one of them."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def type_problem(value: Any, name: str) -> str | None:
    if name == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if name == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if name == "float":
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "must be a number"
    if name == "str":
        return None if isinstance(value, str) else "must be a string"
    if name == "list[str]":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "must be a list of strings"
    return None


def range_problem(value: Any, meta: dict[str, Any]) -> str | None:
    if meta.get("check") is not None and (problem := meta["check"](value)):
        return problem
    if meta.get("choices") is not None and isinstance(value, list):
        return next(filter(None, (range_problem(v, meta) for v in value)), None)
    if meta.get("choices") is not None and value not in meta["choices"]:
        hint = did_you_mean(str(value), [str(c) for c in meta["choices"]])
        return f"{value!r} is not one of {', '.join(map(str, meta['choices']))}{hint}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("min") is not None and value < meta["min"]:
            return f"{value!r} is below the minimum {meta['min']}"
        if meta.get("max") is not None and value > meta["max"]:
            return f"{value!r} is above the maximum {meta['max']}"
        if meta.get("above") is not None and value <= meta["above"]:
            return f"{value!r} must be greater than {meta['above']}"
        if meta.get("below") is not None and value >= meta["below"]:
            return f"{value!r} must be less than {meta['below']}"
    return None


def did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = [o for o in options if o.lower() == word.lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


def build_section(cls: type, raw: Any, where: str, problems: list[Problem]) -> Any:
    """``cls`` from a preset table (unknown keys, wrong types and values out of range become ``problems``)."""
    if not isinstance(raw, dict):
        problems.append(Problem(where, "must be a table"))
        return cls()
    known = {f.name: f for f in preset_fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spot = f"{where}.{key}"
        if key not in known:
            problems.append(Problem(spot, f"unknown key{did_you_mean(key, list(known))}"))
            continue
        f = known[key]
        name = type_name(f)
        if f.metadata.get("one_or_list") and isinstance(value, str):
            value = [value]
        issue = type_problem(value, name) or range_problem(value, f.metadata)
        if issue:
            problems.append(Problem(spot, issue))
            continue
        values[key] = float(value) if name == "float" else value
    return cls(**values)
