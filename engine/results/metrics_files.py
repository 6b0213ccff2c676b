"""Reading metrics files — llmtui's and the old research scripts' — into one normalised shape (TUI and CLI processes).

Both writers use the same top-level schema (``model_name``, ``evaluated_at``, ``summary``,
``datasets`` keyed by test file name, ``quantization``, ``hardware``). The old scripts' files (no
``llmtui_version`` key) differ in ways this module smooths over:

* accuracy-like numbers are percentages (``88.0``); llmtui's are fractions (``0.88``);
* some metric keys have other names (``f1_pos``, ``MCC``, ``NoAns_Accuracy``, ``AvNA_Accuracy``);
* ``model_name`` may be a path, Windows-style included (``Models\\Qwen3-8B-…``);
* datasets may be missing, fields null, the OpenMath metrics only ``avg_abs_diff``.

Nothing in a file makes the reader raise: an unreadable file becomes a record with ``error`` set,
odd fields become ``warnings``.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data.tasks import builtin_tasks_for_display
from engine.models.folder import TRAINING_METADATA, dig
from engine.models.resolve import model_name_from
from engine.results.lmeval import attach, lm_eval_records
from engine.results.records import DatasetResult, ResultRecord
from engine.workspace import UnsafeNameError, Workspace

#: Built-in test-set name (file stem) → task kind, in the one order tables show the built-in tasks in.
BUILTIN_TEST_SET_KINDS = {task.file_stem: task.kind for task in builtin_tasks_for_display()}
#: Old-script metric keys → llmtui's.
LEGACY_METRIC_NAMES = {
    "f1_pos": "f1",
    "MCC": "mcc",
    "NoAns_Accuracy": "NoAns_accuracy",
    "AvNA_Accuracy": "AvNA",
}
#: Metrics the old scripts wrote as percentages (after renaming), by task kind.
LEGACY_PERCENT_METRICS = {
    "squad_v2": frozenset({"EM", "F1", "HasAns_EM", "HasAns_F1", "NoAns_accuracy", "AvNA"}),
}
#: Keys inside ``metrics`` that are descriptions or counts, not metrics.
NON_METRIC_KEYS = frozenset({"task", "support"})


def dataset_name_from_file(file_name: str) -> str:
    """``test-boolq.parquet`` → ``boolq`` (the name the old scripts used in column names)."""
    name = file_name[:-len(".parquet")] if file_name.endswith(".parquet") else file_name
    return name[len("test-"):] if name.startswith("test-") else name


def load_metrics_file(path: Path | str) -> ResultRecord:
    """Read one metrics file into a :class:`ResultRecord`; never raises on the file's content."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return ResultRecord(path=path, name=path.stem, source="unreadable",
                            error=f"{path.name}: cannot read as JSON ({_short(exc)})")
    if not isinstance(data, dict):
        return ResultRecord(path=path, name=path.stem, source="unreadable",
                            error=f"{path.name}: expected a JSON object at the top level, "
                                  f"found {type(data).__name__}")
    return _FileReader(path, data).record()


def scan_results(ws: Workspace) -> list[ResultRecord]:
    """Every ``Testing/metrics/*.json`` of the workspace as records, with the lm-evaluation-harness
    results of ``Testing/lm-eval`` added (engine.results.lmeval), sorted by model name.

    Two files naming the same model are both kept; the second is shown under its file name.
    """
    folder = ws.metrics_dir
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    records = [load_metrics_file(p) for p in paths if not p.name.startswith(".")]
    by_name: dict[str, list[ResultRecord]] = {}
    for record in records:
        by_name.setdefault(record.name, []).append(record)
    for name, group in by_name.items():
        # The file named after the model (llmtui's naming) keeps the name; the others show their file's.
        keeper = next((r for r in group if r.path.stem == name), group[0])
        for record in group:
            if record is not keeper:
                record.warnings.append(f"{record.path.name}: names the same model as {keeper.path.name}; "
                                       f"shown as {record.path.stem}")
                record.name = record.path.stem
    records = attach(records, lm_eval_records(ws))
    return sorted(records, key=lambda r: r.name.casefold())


def training_peaks(ws: Workspace, model: str) -> tuple[float | None, float | None]:
    """Training peak memory (reserved, allocated) in GB from ``Models/{model}/training_metadata.json``.

    Reads llmtui's ``hardware_info.vram_peaks.overall.peak_*_gb`` and the old scripts'
    ``hardware_info.vram_peaks.overall_max_*_gb``; (None, None) when absent or unreadable.
    """
    try:
        meta_path = ws.model_dir(model) / TRAINING_METADATA
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, UnsafeNameError):
        return None, None
    peaks = dig(meta, "hardware_info", "vram_peaks")
    if not isinstance(peaks, dict):
        return None, None
    overall = peaks.get("overall") if isinstance(peaks.get("overall"), dict) else {}
    reserved = _finite(overall.get("peak_reserved_gb", peaks.get("overall_max_reserved_gb")))
    allocated = _finite(overall.get("peak_allocated_gb", peaks.get("overall_max_allocated_gb")))
    return reserved, allocated


#: The old scripts' ``metrics_summary.csv`` columns, kept first and in this order.
LEGACY_SUMMARY_COLUMNS = (
    "model",
    "train_peak_vram_reserved_gb", "train_peak_vram_allocated_gb",
    "eval_peak_vram_reserved_gb", "eval_peak_vram_allocated_gb",
    "ai2_arc__macro_f1", "ai2_arc__latency_mean_s",
    "OpenMathInstruct-2__avg_abs_diff", "OpenMathInstruct-2__latency_mean_s",
    "squad_v2__F1", "squad_v2__latency_mean_s",
)
_MODEL_COLUMNS = ("quant_tag", "evaluated_at", "overall_accuracy", "total_samples", "latency_mean_s")
_DATASET_TRAILING_COLUMNS = ("format_success_rate", "latency_mean_s", "tokens_mean", "total_samples")
_UNRANKED = frozenset({"model", "quant_tag", "evaluated_at", "total_samples", "tokens_mean", "source"})
_LOWER_IS_BETTER = ("latency", "vram", "abs_diff")


#: Metrics that are rates (fractions in [0, 1]; shown as percentages when asked). MCC is a correlation.
RATE_METRICS = frozenset({"accuracy", "f1", "macro_f1", "balanced_accuracy", "EM", "F1", "HasAns_EM", "HasAns_F1",
                          "NoAns_accuracy", "AvNA", "parseable_rate", "format_success_rate", "overall_accuracy"})


def is_rate(key: str) -> bool:
    """Whether a results column (``boolq__accuracy``, ``overall_accuracy``) holds a rate."""
    return key.rpartition("__")[2] in RATE_METRICS


def from_percent(number: float) -> float:
    """A percentage as a fraction without the division's float noise (24.54 → 0.2454, not
    0.24539999999999998): 15 significant digits are all a double holds exactly."""
    return float(f"{number / 100:.15g}")


def metric_direction(metric: str) -> str | None:
    """``"lower"`` when a smaller value is better (latency, memory, absolute error), ``"higher"`` for
    scores, None for columns that are not ranked (names, counts, token counts)."""
    if metric in _UNRANKED or metric.endswith(("_total", "invalid_predictions")):
        return None
    return "lower" if any(part in metric for part in _LOWER_IS_BETTER) else "higher"


@dataclass(frozen=True)
class Column:
    """A results-table column: ``key`` is the CSV header (``boolq__mcc``)."""

    key: str
    dataset: str | None
    metric: str

    @property
    def direction(self) -> str | None:
        return metric_direction(self.metric)


@dataclass
class ResultsTable:
    """The results table as plain data: one row per readable metrics file, values keyed by column."""

    columns: list[Column]
    rows: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.key for c in self.columns], "rows": self.rows,
                "warnings": self.warnings, "errors": self.errors}


def dataset_matches(pattern: str, dataset: str) -> bool:
    """A ``--datasets`` entry selects a test set by file name, name, or part of the name
    (``arc`` → ``ai2_arc``, ``openmath`` → ``OpenMathInstruct-2``), ignoring case."""
    wanted = dataset_name_from_file(pattern.strip()).casefold()
    return bool(wanted) and wanted in dataset.casefold()


def results_table(ws: Workspace, records: list[ResultRecord] | None = None, *,
                  models: list[str] | None = None, datasets: list[str] | None = None,
                  columns: list[str] | None = None) -> ResultsTable:
    """The results table: the old scripts' summary columns first, then every other column with a
    value. ``models`` are names or shell-style patterns; ``datasets`` as in :func:`dataset_matches`;
    ``columns`` are shell-style patterns of column keys (``model`` is always kept)."""
    records = scan_results(ws) if records is None else records
    table = ResultsTable(columns=[], rows=[])
    readable = []
    for record in records:
        if record.error:
            table.errors.append(record.error)
        else:
            readable.append(record)
            table.warnings.extend(record.warnings)
    if models:
        readable = [r for r in readable if any(fnmatch.fnmatchcase(r.name.casefold(), m.casefold())
                                               for m in models)]
        for pattern in models:
            if not any(fnmatch.fnmatchcase(r.name.casefold(), pattern.casefold()) for r in records):
                table.warnings.append(f"no results match the model {pattern!r}")
    names = _ordered_dataset_names(readable)
    if datasets:
        names = [n for n in names if any(dataset_matches(p, n) for p in datasets)]
        for pattern in datasets:
            if not any(dataset_matches(pattern, n) for n in _ordered_dataset_names(readable)):
                table.warnings.append(f"no results for the dataset {pattern!r}")
    table.rows = [_row(ws, record) for record in readable]
    table.columns = _columns(table.rows, names, filtered=bool(datasets))
    if columns:
        table.columns = [c for c in table.columns if c.key == "model" or
                         any(fnmatch.fnmatchcase(c.key, pattern) for pattern in columns)]
        if len(table.columns) == 1:
            table.warnings.append(f"no columns match {', '.join(map(repr, columns))}")
    keys = [c.key for c in table.columns]
    table.rows = [{key: row.get(key) for key in keys} for row in table.rows]
    return table


def _ordered_dataset_names(records: list[ResultRecord]) -> list[str]:
    present = {d.name for r in records for d in r.datasets.values()}
    builtin = [n for n in BUILTIN_TEST_SET_KINDS if n in present]
    return builtin + sorted(present - set(builtin), key=str.casefold)


def _row(ws: Workspace, record: ResultRecord) -> dict[str, Any]:
    train_reserved, train_allocated = training_peaks(ws, record.name)
    row: dict[str, Any] = {
        "model": record.name,
        "train_peak_vram_reserved_gb": train_reserved,
        "train_peak_vram_allocated_gb": train_allocated,
        "eval_peak_vram_reserved_gb": record.eval_peak_vram_reserved_gb,
        "eval_peak_vram_allocated_gb": record.eval_peak_vram_allocated_gb,
        "quant_tag": record.quant_tag,
        "evaluated_at": record.evaluated_at,
        "overall_accuracy": record.overall_accuracy,
        "total_samples": record.total_samples,
        "latency_mean_s": record.latency_mean_s,
    }
    for result in record.datasets.values():
        prefix = f"{result.name}__"
        for metric, value in result.metrics.items():
            row[prefix + metric] = value
        trailing = (result.format_success_rate, result.latency_mean_s, result.tokens_mean,
                    result.total_samples)
        for column, value in zip(_DATASET_TRAILING_COLUMNS, trailing):
            row[prefix + column] = value
    return row


def _columns(rows: list[dict[str, Any]], dataset_names: list[str], *, filtered: bool) -> list[Column]:
    def has_value(key: str) -> bool:
        return any(row.get(key) is not None for row in rows)

    columns: list[Column] = []
    for key in LEGACY_SUMMARY_COLUMNS:
        dataset, _, metric = key.rpartition("__")
        if dataset and filtered and dataset not in dataset_names:
            continue
        columns.append(Column(key, dataset or None, metric))
    taken = {c.key for c in columns}
    columns += [Column(k, None, k) for k in _MODEL_COLUMNS if has_value(k)]
    for name in dataset_names:
        prefix = f"{name}__"
        keys = dict.fromkeys(k for row in rows for k in row if k.startswith(prefix))
        trailing = [prefix + k for k in _DATASET_TRAILING_COLUMNS]
        for key in [k for k in keys if k not in trailing] + trailing:
            if key not in taken and has_value(key):
                columns.append(Column(key, name, key[len(prefix):]))
    return columns


class _FileReader:
    """Pulls fields out of one parsed file, collecting a warning for every odd value."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.warnings: list[str] = []
        self.is_legacy = "llmtui_version" not in data

    def record(self) -> ResultRecord:
        data = self.data
        raw_name = data.get("model_name")
        name = model_name_from(raw_name)
        if name is None:
            self.warn("model_name", raw_name, "a model name or path; using the file name")
            name = self.path.stem
        summary = self.section(data, "summary")
        hardware = self.section(data, "hardware")
        quantization = data.get("quantization")
        if not isinstance(quantization, dict):
            quantization = summary.get("quantization") if isinstance(summary.get("quantization"), dict) else {}
        record = ResultRecord(
            path=self.path, name=name, source="legacy" if self.is_legacy else "llmtui",
            raw_model_name=raw_name,
            evaluated_at=self.text(data, "evaluated_at", "evaluated_at"),
            overall_accuracy=self.rate(summary, "overall_accuracy", "summary.overall_accuracy"),
            total_samples=self.count(summary, "total_samples", "summary.total_samples"),
            latency_mean_s=self.latency_mean(summary.get("latency_seconds"), "summary.latency_seconds"),
            eval_peak_vram_reserved_gb=self.first_number(
                (hardware, "peak_vram_reserved_gb", "hardware"), (summary, "peak_vram_reserved_gb", "summary")),
            eval_peak_vram_allocated_gb=self.first_number(
                (hardware, "peak_vram_allocated_gb", "hardware"), (summary, "peak_vram_allocated_gb", "summary")),
            quantization=quantization,
            llmtui_version=self.text(data, "llmtui_version", "llmtui_version"),
            extractor_version=self.count(data, "extractor_version", "extractor_version"),
            prompt_format=data["prompt_format"] if isinstance(data.get("prompt_format"), dict) else None,
            eval_config=data["eval_config"] if isinstance(data.get("eval_config"), dict) else None,
        )
        datasets = data.get("datasets")
        if datasets is None:
            self.warnings.append(f"{self.path.name}: no 'datasets' section")
        elif not isinstance(datasets, dict):
            self.warn("datasets", datasets, "an object keyed by test file name")
        else:
            for file_name, entry in datasets.items():
                if not isinstance(entry, dict):
                    self.warn(f"datasets.{file_name}", entry, "an object")
                    continue
                record.datasets[file_name] = self.dataset(file_name, entry)
        record.warnings = self.warnings
        return record

    def dataset(self, file_name: str, entry: dict[str, Any]) -> DatasetResult:
        where = f"datasets.{file_name}"
        name = dataset_name_from_file(file_name)
        kind = entry.get("type") if isinstance(entry.get("type"), str) else BUILTIN_TEST_SET_KINDS.get(name)
        latency = entry.get("latency_seconds")
        tokens = self.section(entry, "tokens_generated", where)
        result = DatasetResult(
            file=file_name, name=name, kind=kind,
            total_samples=self.count(entry, "total_samples", f"{where}.total_samples"),
            correct=self.count(entry, "correct", f"{where}.correct"),
            incorrect=self.count(entry, "incorrect", f"{where}.incorrect"),
            format_success_rate=self.rate(entry, "format_success_rate", f"{where}.format_success_rate"),
            latency_mean_s=self.latency_mean(latency, f"{where}.latency_seconds"),
            latency_sum_s=self.number(latency, "sum", f"{where}.latency_seconds.sum")
            if isinstance(latency, dict) else None,
            tokens_mean=self.number(tokens, "mean", f"{where}.tokens_generated.mean"),
            dataset_sha256=self.text(entry, "dataset_sha256", f"{where}.dataset_sha256"),
        )
        metrics = entry.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):
            self.warn(f"{where}.metrics", metrics, "an object")
            metrics = {}
        result.metrics["accuracy"] = self.rate(entry, "accuracy", f"{where}.accuracy")
        percent_metrics = LEGACY_PERCENT_METRICS.get(kind or "", frozenset()) if self.is_legacy else frozenset()
        for key, value in (metrics or {}).items():
            if key in NON_METRIC_KEYS:
                continue
            if isinstance(value, (dict, list)):
                result.details[key] = value
                continue
            metric = LEGACY_METRIC_NAMES.get(key, key) if self.is_legacy else key
            number = self.number(metrics, key, f"{where}.metrics.{key}")
            if number is not None and metric in percent_metrics:
                number = from_percent(number)
            if metric == "accuracy" and result.metrics.get("accuracy") is not None:
                continue  # the dataset-level value already holds it
            result.metrics[metric] = number
        return result

    # -- field helpers -------------------------------------------------------------------------
    def section(self, data: dict[str, Any], key: str, parent: str = "") -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.warn(f"{parent}.{key}" if parent else key, value, "an object")
            return {}
        return value

    def warn(self, where: str, value: Any, expected: str) -> None:
        self.warnings.append(f"{self.path.name}: {where} should be {expected}, found {_short(value)}")

    def number(self, data: dict[str, Any], key: str, where: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        number = _finite(value)
        if number is None:
            self.warn(where, value, "a number")
        return number

    def count(self, data: dict[str, Any], key: str, where: str) -> int | None:
        number = self.number(data, key, where)
        if number is None:
            return None
        if number < 0 or number != int(number):
            self.warn(where, data.get(key), "a whole number of items")
            return None
        return int(number)

    def rate(self, data: dict[str, Any], key: str, where: str) -> float | None:
        """A rate as a fraction: the old scripts wrote percentages."""
        number = self.number(data, key, where)
        if number is not None and self.is_legacy:
            number = from_percent(number)
        return number

    def first_number(self, *places: tuple[dict[str, Any], str, str]) -> float | None:
        for data, key, section in places:
            number = self.number(data, key, f"{section}.{key}")
            if number is not None:
                return number
        return None

    def latency_mean(self, latency: Any, where: str) -> float | None:
        if latency is None:
            return None
        if not isinstance(latency, dict):
            self.warn(where, latency, "an object")
            return None
        mean = self.number(latency, "mean", f"{where}.mean")
        if mean is None and isinstance(latency.get("per_prompt"), list):
            values = [v for v in map(_finite, latency["per_prompt"]) if v is not None]
            mean = sum(values) / len(values) if values else None
        return mean

    def text(self, data: dict[str, Any], key: str, where: str) -> str | None:
        value = data.get(key)
        if value is None or isinstance(value, str):
            return value
        self.warn(where, value, "text")
        return None


def _finite(value: Any) -> float | None:
    """``value`` if it is a finite number (an int stays an int); None for null, booleans, text and
    NaN/inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
