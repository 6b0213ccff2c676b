"""Study files: a grid or a search of experiments in one TOML file, expanded into validated runs (any process).

A study file is data only. Its base preset is the file's own preset sections (``[model]``, ``[train]``…),
on top of ``[study] base = "PATH"`` when it names a preset (relative to the study file). ``[study.set]``
sets dotted keys for every run; ``[study.axes]`` maps dotted preset keys (``"peft.method"``, ``"ptq"``,
``"eval.datasets"``) to lists of values, combined as a product with each ``[[study.zip]]`` group (lists
of equal length, walked together); ``[[study.exclude]]`` drops the runs matching all its key = value
pairs; ``[[study.override]]`` (``when`` = pairs, ``set`` = keys) changes the runs that match. Each run is
validated like a preset (every problem at once, naming the axis values that caused it) and named by the
legacy rule; runs that rule names alike get the values that tell them apart as ``model.output_suffix``.
``[study.search]`` (``n_trials``, ``objective`` = "testset.metric", ``direction``, ``[study.search.space]``
of ``{low, high, log}`` or ``{choices}``) makes the study a search, whose runs are its trials.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.presets.config import ConfigError, ExperimentConfig, config_from_dict

#: Multiple-comparison corrections a study may name (engine.results.stats adjusts by these names).
CORRECTIONS = ("holm", "bh")
DIRECTIONS = ("maximize", "minimize")
_STUDY_KEYS = ("name", "base", "reference", "correction", "set", "axes", "zip", "exclude", "override", "search")
_SEARCH_KEYS = ("n_trials", "objective", "direction", "space", "seed", "parallel")
#: Short forms of keys in output-name suffixes (``lr0.001``); other keys use their last part.
_SUFFIX_KEYS = {"train.learning_rate": "lr", "train.num_train_epochs": "ep", "train.max_steps": "steps",
                "train.per_device_train_batch_size": "bs", "train.seed": "seed"}


class StudyError(ValueError):
    """A study file has problems; ``problems`` lists every one (``where: message``)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


@dataclass
class StudyRun:
    """One expanded experiment: its axis values, validated config and output name."""

    name: str
    values: dict[str, Any]
    config: ExperimentConfig

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.values.items()) or "base"

    @property
    def preset_text(self) -> str:
        return self.config.to_toml()


@dataclass
class SearchDimension:
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None


@dataclass
class SearchSpec:
    n_trials: int
    objective: str  # "testset.metric"
    direction: str
    space: list[SearchDimension]
    seed: int = 0
    parallel: int = 1

    @property
    def objective_parts(self) -> tuple[str, str]:
        dataset, _, metric = self.objective.rpartition(".")
        return dataset, metric


@dataclass
class Study:
    path: Path
    name: str
    base: dict[str, Any]
    runs: list[StudyRun]
    reference: str | None = None
    correction: str = "holm"
    search: SearchSpec | None = None
    custom_datasets: tuple[str, ...] = field(default_factory=tuple)

    def trial_run(self, number: int, params: dict[str, Any]) -> StudyRun:
        """The run of search trial ``number`` with the sampled ``params`` (StudyError when invalid)."""
        data = copy.deepcopy(self.base)
        for key, value in params.items():
            set_key(data, key, value)
        set_key(data, "model.output_suffix", f"trial{number}")
        try:
            config = config_from_dict(data, f"{self.path} trial {number}", self.custom_datasets)
        except ConfigError as exc:
            raise StudyError(str(self.path), [f"trial {number} ({params}): {p}" for p in exc.problems]) from None
        return StudyRun(config.output_name(), {"trial": number, **params}, config)


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``section.key`` (or a whole section such as ``ptq``; ``ptq.0.bits`` for one PTQ step) in raw preset data."""
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f"{dotted}: no element {part}")
            node = node[int(part)]
        else:
            child = node.setdefault(part, {})
            if not isinstance(child, (dict, list)):
                raise KeyError(f"{dotted}: {part} is not a table")
            node = child
    if isinstance(node, list):
        raise KeyError(f"{dotted}: name a key inside the element")
    node[parts[-1]] = copy.deepcopy(value)


def get_key(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def load_study(path: Path | str, custom_datasets: tuple[str, ...] = ()) -> Study:
    """Read, expand and validate a study file; raise :class:`StudyError` listing every problem."""
    path = Path(path)
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(source, ["file: not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(source, [f"file: cannot be read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(source, [f"toml: not valid TOML: {exc}"]) from None
    spec = raw.pop("study", None)
    if not isinstance(spec, dict):
        raise StudyError(source, ["study: a study file needs a [study] table"])
    problems: list[str] = [f"study.{k}: unknown key" for k in spec if k not in _STUDY_KEYS]
    base = _base_data(path, spec.get("base"), raw, problems)
    for key, value in _table(spec, "set", problems).items():
        _set_or_note(base, key, value, "study.set", problems)
    correction = spec.get("correction", "holm")
    if correction not in CORRECTIONS:
        problems.append(f"study.correction: {correction!r} is not one of {', '.join(CORRECTIONS)}")
    reference = spec.get("reference")
    if reference is not None and not isinstance(reference, str):
        problems.append("study.reference: must be a model name")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        problems.append(f"study.name: {name!r} may hold only letters, digits, '-', '_' and '.'")
        name = path.stem
    search = _search_spec(spec.get("search"), problems) if "search" in spec else None
    if search is not None and ("axes" in spec or "zip" in spec):
        problems.append("study.search: a search has a [study.search.space], not axes or zip groups")
    if any(p.startswith(("study.base", "study.set", "study.search")) for p in problems):
        raise StudyError(source, problems)  # no runs to expand; other problems are reported with the runs'
    study = Study(path, name, base, [], reference, correction, search, tuple(custom_datasets))
    if search is None:
        study.runs = _expand(study, spec, problems)
    else:  # the base must be a valid preset on its own: trials only change the searched keys
        _validated(base, {}, source, custom_datasets, problems)
    if problems:
        raise StudyError(source, problems)
    return study


def _base_data(path: Path, base: Any, inline: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, str):
            problems.append("study.base: must be a path to a preset (relative to the study file)")
        else:
            preset = (path.parent / base).resolve() if not Path(base).is_absolute() else Path(base)
            try:
                data = tomllib.loads(preset.read_text(encoding="utf-8"))
            except FileNotFoundError:
                problems.append(f"study.base: {base!r} not found (looked at {preset})")
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                problems.append(f"study.base: {base!r} cannot be read: {exc}")
    for section, value in inline.items():  # the study file's own preset sections win over the base's
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **value}
        else:
            data[section] = value
    return data


def _table(spec: dict[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"study.{key}: must be a table of dotted keys")
        return {}
    return value


def _tables(spec: dict[str, Any], key: str, problems: list[str]) -> list[dict[str, Any]]:
    value = spec.get(key, [])
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(f"study.{key}: must be tables ([[study.{key}]])")
        return []
    return value


def _set_or_note(data: dict[str, Any], key: str, value: Any, where: str, problems: list[str]) -> None:
    try:
        set_key(data, key, value)
    except KeyError as exc:
        problems.append(f"{where}: {exc.args[0]}")


def _search_spec(raw: Any, problems: list[str]) -> SearchSpec | None:
    if not isinstance(raw, dict):
        problems.append("study.search: must be a table")
        return None
    problems.extend(f"study.search.{k}: unknown key" for k in raw if k not in _SEARCH_KEYS)
    n_trials, objective = raw.get("n_trials"), raw.get("objective")
    direction, seed, parallel = raw.get("direction", "maximize"), raw.get("seed", 0), raw.get("parallel", 1)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        problems.append(f"study.search.n_trials: must be a whole number ≥ 1 (got {n_trials!r})")
    if not isinstance(objective, str) or "." not in objective:
        problems.append(f"study.search.objective: must be 'testset.metric', such as 'boolq.accuracy' (got {objective!r})")
    if direction not in DIRECTIONS:
        problems.append(f"study.search.direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append("study.search.seed: must be an integer")
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        problems.append("study.search.parallel: must be a whole number ≥ 1")
    space = []
    raw_space = raw.get("space")
    if not isinstance(raw_space, dict) or not raw_space:
        problems.append("study.search.space: name at least one dotted key with { low, high } or { choices }")
        raw_space = {}
    for key, dim in raw_space.items():
        where = f"study.search.space.{key!r}"
        if not isinstance(dim, dict):
            problems.append(f"{where}: must be {{ low = …, high = …, log = … }} or {{ choices = [...] }}")
            continue
        if "choices" in dim:
            if not isinstance(dim["choices"], list) or not dim["choices"]:
                problems.append(f"{where}.choices: must be a non-empty list")
                continue
            space.append(SearchDimension(key, choices=list(dim["choices"])))
            continue
        low, high, log = dim.get("low"), dim.get("high"), dim.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low < high:
            problems.append(f"{where}: needs numbers low < high (got low={low!r}, high={high!r})")
            continue
        if log and low <= 0:
            problems.append(f"{where}: a log range needs low > 0 (got {low!r})")
            continue
        space.append(SearchDimension(key, float(low), float(high), bool(log),
                                     integer=isinstance(low, int) and isinstance(high, int)))
    if problems:
        return None
    return SearchSpec(n_trials, objective, direction, space, seed, parallel)


def _axes(spec: dict[str, Any], problems: list[str]) -> list[list[dict[str, Any]]]:
    """Each axis (a plain key, or a zip group) as its list of ``{key: value}`` choices."""
    axes = []
    for key, values in _table(spec, "axes", problems).items():
        if not isinstance(values, list) or not values:
            problems.append(f"study.axes.{key!r}: must be a non-empty list of values")
            continue
        axes.append([{key: value} for value in values])
    for index, group in enumerate(_tables(spec, "zip", problems)):
        lengths = {key: len(v) if isinstance(v, list) else -1 for key, v in group.items()}
        if not group or min(lengths.values()) < 1 or len(set(lengths.values())) != 1:
            problems.append(f"study.zip[{index}]: needs lists of one same length (got {lengths})")
            continue
        axes.append([dict(zip(group, values)) for values in zip(*group.values())])
    return axes


def _matches(values: dict[str, Any], data: dict[str, Any], rule: dict[str, Any]) -> bool:
    return all((values[k] if k in values else get_key(data, k)) == v for k, v in rule.items())


def _expand(study: Study, spec: dict[str, Any], problems: list[str]) -> list[StudyRun]:
    known = len(problems)
    axes = _axes(spec, problems)
    excludes = _tables(spec, "exclude", problems)
    overrides = _tables(spec, "override", problems)
    for index, rule in enumerate(overrides):
        if not isinstance(rule.get("when"), dict) or not isinstance(rule.get("set"), dict):
            problems.append(f"study.override[{index}]: needs when = {{…}} and set = {{…}} tables")
    if len(problems) > known:
        return []
    expanded: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for combination in itertools.product(*axes):
        values = {k: v for choice in combination for k, v in choice.items()}
        data = copy.deepcopy(study.base)
        for key, value in values.items():
            _set_or_note(data, key, value, f"study.axes.{key!r}", problems)
        if any(_matches(values, data, rule) for rule in excludes):
            continue
        for rule in overrides:
            if _matches(values, data, rule["when"]):
                for key, value in rule["set"].items():
                    _set_or_note(data, key, value, f"study.override when {rule['when']}", problems)
        expanded.append((values, data))
    expanded = _merge_shared_training(expanded)
    _suffix_collisions(expanded)
    runs, seen = [], {}
    for values, data in expanded:
        config = _validated(data, values, str(study.path), study.custom_datasets, problems)
        if config is None:
            continue
        run = StudyRun(config.output_name(), values, config)
        if run.name in seen:
            problems.append(f"runs {seen[run.name].label} and {run.label} are both named {run.name}")
            continue
        seen[run.name] = run
        runs.append(run)
    if not runs and not problems:
        problems.append("study: every run is excluded")
    return runs


def _validated(data: dict[str, Any], values: dict[str, Any], source: str, custom: tuple[str, ...],
               problems: list[str]) -> ExperimentConfig | None:
    try:
        return config_from_dict(copy.deepcopy(data), source, custom)
    except ConfigError as exc:
        label = ", ".join(f"{k}={_show(v)}" for k, v in values.items()) or "the base"
        problems.extend(f"run {label}: {p}" for p in exc.problems)
        return None


def _merge_shared_training(expanded: list[tuple[dict[str, Any], dict[str, Any]]]
                           ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Runs that differ only in their PTQ follow-ups share one training: one run with every follow-up."""
    merged: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for values, data in expanded:
        key = json.dumps({k: v for k, v in data.items() if k != "ptq"}, sort_keys=True, default=str)
        if key not in merged:
            merged[key] = (dict(values), data)
            continue
        kept_values, kept = merged[key]
        steps = kept.setdefault("ptq", [])
        steps.extend(step for step in data.get("ptq", []) if step not in steps)
        for k, v in values.items():
            if kept_values.get(k) != v:
                seen = kept_values[k] if isinstance(kept_values.get(k), _Merged) else _Merged([kept_values.get(k)])
                if v not in seen:
                    seen.append(v)
                kept_values[k] = seen
    return list(merged.values())


class _Merged(list):
    """The values of an axis that only changed PTQ follow-ups, on the run that merged them."""


def _suffix_collisions(expanded: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Give runs the legacy rule names alike the values that tell them apart, as ``model.output_suffix``."""
    groups: dict[str, list[int]] = {}
    for index, (_, data) in enumerate(expanded):
        try:
            name = config_from_dict(copy.deepcopy(data)).output_name()
        except ConfigError:
            continue  # reported when the run is validated
        groups.setdefault(name, []).append(index)
    for members in groups.values():
        if len(members) < 2:
            continue
        keys = [k for k in expanded[members[0]][0]
                if len({repr(expanded[i][0].get(k)) for i in members}) > 1]
        for i in members:
            values, data = expanded[i]
            suffix = "-".join(_suffix_part(k, values.get(k)) for k in keys)
            set_key(data, "model.output_suffix", suffix)


def _suffix_part(key: str, value: Any) -> str:
    short = _SUFFIX_KEYS.get(key, key.rsplit(".", 1)[-1].replace("_", ""))
    text = _show(value) if isinstance(value, (int, float, str, bool)) else \
        hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    return short + "".join(c if c.isalnum() or c in ".+=" else "=" for c in text)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    return str(value)
