"""Side-by-side comparison of evaluated models with paired significance tests (TUI and CLI processes).

:func:`compare` puts, for every test set the first model shares with another, every metric of every
model side by side with its delta against the first model. Where both models have per-item
predictions of the same items, each delta gets a paired test (:data:`engine.results.item_metrics.PAIRED_TESTS`):
the exact McNemar test for accuracy-type metrics, a paired bootstrap for F1, EM, MCC, macro-F1….
Where a test cannot be run the reason is given instead — statistics are never invented.

Beside the statistics, per test set: the flipped items (right for one model, wrong for the other, with
both outputs), the comparability guard's warnings (:mod:`engine.results.provenance`), and for every
accuracy-type difference that is not significant the smallest difference the set could have detected.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.models.resolve import model_name_from
from engine.results.item_metrics import PairedTest, PredictionsError, item_arrays, jsonl_objects, paired_test
from engine.results.lmeval import read_samples
from engine.data.kinds import LM_EVAL_KIND
from engine.results.metrics_files import metric_direction, scan_results
from engine.results.records import DatasetResult, ResultRecord
from engine.results.provenance import guard_warnings
from engine.results.stats import ALPHA, POWER, detectable_difference, mcnemar_exact, paired_bootstrap
from engine.workspace import Workspace

#: Dataset-level numbers compared after the task metrics.
_DATASET_FIELDS = ("format_success_rate", "latency_mean_s", "tokens_mean")


class CompareError(ValueError):
    """The comparison cannot be made at all (unknown model, unreadable metrics file, one model)."""


@dataclass
class PairStat:
    """One model's delta against the first model on one metric, with its paired test.

    ``test`` is ``mcnemar`` (``b``: items the first model got right and this one wrong, ``c`` the
    reverse) or ``bootstrap`` (``ci_low``/``ci_high``: the confidence interval of the delta). When
    no test could be run, ``unavailable`` says why and the statistics are None.
    """

    model: str
    delta: float | None
    test: str | None = None
    p_value: float | None = None
    significant: bool | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    b: int | None = None
    c: int | None = None
    n: int | None = None
    #: The delta recomputed from the predictions (equals ``delta`` up to the files' rounding).
    paired_delta: float | None = None
    #: McNemar tests that are not significant: the smallest difference this set could have detected
    #: (power :data:`engine.results.stats.POWER`, the observed discordance (b + c) / n).
    detectable: float | None = None
    #: True when the models disagree on too few items for any difference to be detectable.
    undetectable: bool = False
    unavailable: str | None = None


@dataclass
class MetricComparison:
    """One metric: the value of every model and each other model's delta and test."""

    metric: str
    direction: str | None  # "higher" | "lower" | None: which way is better
    values: dict[str, float | None]
    pairs: list[PairStat]


@dataclass
class FlipSide:
    """One model's answer to a flipped item."""

    extracted: Any
    pred: Any
    output: Any


@dataclass
class FlipItem:
    index: int
    prompt: Any
    gold: Any
    reference: FlipSide
    model: FlipSide


@dataclass
class Flips:
    """Items of one test set the reference got right and ``model`` wrong (``reference_only``), and the reverse."""

    dataset: str
    file: str
    reference: str
    model: str
    reference_only: list[FlipItem]
    model_only: list[FlipItem]


@dataclass
class DatasetComparison:
    file: str
    name: str
    kind: str | None
    models: list[str]
    metrics: list[MetricComparison]
    #: Per model (other than the first): why its paired statistics are unavailable on this set.
    unavailable: dict[str, str] = field(default_factory=dict)
    #: Per model (other than the first): the comparability guard's warnings on this set.
    guard: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Comparison:
    """The whole comparison as plain data (``to_dict`` for JSON)."""

    models: list[str]
    baseline: str
    resamples: int
    seed: int
    confidence: float
    alpha: float
    datasets: list[DatasetComparison]
    skipped_datasets: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Per test set and compared model: the flipped items (whole prompts and outputs).
    flips: list[Flips] = field(default_factory=list)
    power: float = POWER

    @property
    def guard_warnings(self) -> list[str]:
        """Every comparability-guard warning, prefixed with its test set and model pair."""
        return [f"{d.name}: {model} vs {self.baseline}: {message}" for d in self.datasets
                for model, messages in d.guard.items() for message in messages]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(ws: Workspace, names: list[str], *, resamples: int = 1000, seed: int = 0,
            confidence: float = 0.95, records: list[ResultRecord] | None = None) -> Comparison:
    """Compare ``names`` (the first is the reference) on every test set they share.

    Raises :class:`CompareError` for an unknown model, an unreadable metrics file, fewer than two
    models or one named twice. Everything else — missing predictions, different items, a stale
    predictions file — makes only the statistics unavailable, with the reason.
    """
    if len(names) < 2:
        raise CompareError("name at least two models to compare")
    if resamples < 1000:
        raise CompareError(f"use at least 1,000 bootstrap resamples (got {resamples})")
    records = scan_results(ws) if records is None else records
    chosen = [find_record(records, name) for name in names]
    duplicates = {r.name for r in chosen if sum(o is r for o in chosen) > 1}
    if duplicates:
        raise CompareError(f"model named more than once: {', '.join(sorted(duplicates))}")
    baseline = chosen[0]
    result = Comparison(models=[r.name for r in chosen], baseline=baseline.name, resamples=resamples,
                        seed=seed, confidence=confidence, alpha=ALPHA, datasets=[])
    for record in chosen:
        result.warnings.extend(record.warnings)
    for file_name in _dataset_order(chosen):
        holders = [r for r in chosen if file_name in r.datasets]
        if baseline not in holders:
            result.skipped_datasets[file_name] = f"not evaluated for {baseline.name}, the reference"
            continue
        if len(holders) < 2:
            result.skipped_datasets[file_name] = f"evaluated only for {baseline.name}"
            continue
        comparer = _DatasetComparer(ws, file_name, holders, resamples, seed, confidence)
        comparison = comparer.run()
        result.datasets.append(comparison)
        result.flips.extend(comparer.flips)
        for model, reason in comparison.unavailable.items():
            if reason.startswith("items differ"):
                comparison.guard.setdefault(model, []).insert(0, reason)
    result.warnings.extend(result.guard_warnings)
    return result


def find_record(records: list[ResultRecord], name: str) -> ResultRecord:
    """The metrics record for a model given by name, metrics file name, or model folder path."""
    wanted = model_name_from(name) or name
    if wanted.endswith(".json"):
        wanted = wanted[:-len(".json")]
    for match in (lambda r: r.name == wanted, lambda r: r.path.stem == wanted,
                  lambda r: r.name.casefold() == wanted.casefold()):
        found = [r for r in records if match(r)]
        if found:
            record = found[0]
            if record.error:
                raise CompareError(f"cannot compare {name!r}: {record.error}")
            return record
    close = difflib.get_close_matches(wanted, [r.name for r in records], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise CompareError(f"no metrics file for model {name!r} in Testing/metrics{hint}")


def _dataset_order(records: list[ResultRecord]) -> list[str]:
    return list(dict.fromkeys(f for r in records for f in r.datasets))


class _DatasetComparer:
    """Compares the models holding one test set."""

    def __init__(self, ws: Workspace, file_name: str, records: list[ResultRecord], resamples: int,
                 seed: int, confidence: float) -> None:
        self.ws = ws
        self.file_name = file_name
        self.records = records
        self.results = [r.datasets[file_name] for r in records]
        self.kind = next((d.kind for d in self.results if d.kind), None)
        self.resamples = resamples
        self.seed = seed
        self.confidence = confidence
        self.flips: list[Flips] = []

    def run(self) -> DatasetComparison:
        first = self.results[0]
        arrays: dict[str, dict[str, np.ndarray]] = {}
        unavailable: dict[str, str] = {}
        guard = {record.name: warnings for record in self.records[1:]
                 if (warnings := guard_warnings(self.records[0], record, self.file_name))}
        base_rows, base_reason = self.predictions(self.records[0], first)
        for record, dataset in zip(self.records[1:], self.results[1:]):
            rows, reason = self.predictions(record, dataset)
            reason = base_reason or reason or _items_differ(self.records[0].name, base_rows,
                                                            record.name, rows)
            if reason is None:
                self.flips.append(_flips(first, self.records[0].name, record.name, base_rows, rows))
                try:
                    if self.records[0].name not in arrays:
                        arrays[self.records[0].name] = item_arrays(self.kind, base_rows)
                    arrays[record.name] = item_arrays(self.kind, rows)
                except PredictionsError as exc:
                    reason = f"predictions unusable: {exc}"
            if reason:
                unavailable[record.name] = reason
        metrics = [self.metric(name, arrays, unavailable) for name in self.metric_names()]
        return DatasetComparison(file=self.file_name, name=first.name, kind=self.kind,
                                 models=[r.name for r in self.records], metrics=metrics,
                                 unavailable=unavailable, guard=guard)

    def metric_names(self) -> list[str]:
        names = dict.fromkeys(m for d in self.results for m in d.metrics)
        return list(names) + list(_DATASET_FIELDS)

    def metric(self, name: str, arrays: dict[str, dict[str, np.ndarray]],
               unavailable: dict[str, str]) -> MetricComparison:
        values = {r.name: _value(d, name) for r, d in zip(self.records, self.results)}
        base = self.records[0].name
        pairs = []
        for record in self.records[1:]:
            pair = PairStat(model=record.name, delta=_delta(values[record.name], values[base]))
            test = paired_test(self.kind, name, arrays.get(base))
            if record.name in unavailable and (test is not None or self.kind == LM_EVAL_KIND):
                pair.unavailable = unavailable[record.name]  # lm-eval's tests are known only from samples
            elif test is None:
                pair.unavailable = f"no paired test for {name}"
            else:
                self.run_test(test, arrays[base], arrays[record.name], pair)
                if pair.test == "mcnemar" and pair.significant is False and name != "format_success_rate":
                    # What this set could have detected: power at the observed discordance (b + c) / n.
                    discordance = (pair.b + pair.c) / pair.n
                    pair.detectable = detectable_difference(pair.n, discordance) if discordance else None
                    pair.undetectable = pair.detectable is None
            pairs.append(pair)
        return MetricComparison(metric=name, direction=metric_direction(name), values=values,
                                pairs=pairs)

    def run_test(self, test: PairedTest, items_a: dict[str, np.ndarray], items_b: dict[str, np.ndarray],
                 pair: PairStat) -> None:
        try:
            if test.test == "mcnemar":
                correct_a, subset = test.correctness(items_a)
                correct_b, _ = test.correctness(items_b)
                if subset is not None:
                    correct_a, correct_b = correct_a[subset], correct_b[subset]
                outcome = mcnemar_exact(correct_a, correct_b)
                pair.b, pair.c, pair.n = outcome.b, outcome.c, outcome.n
            else:
                outcome = paired_bootstrap(test.metric, items_a, items_b, resamples=self.resamples,
                                           seed=self.seed, confidence=self.confidence)
                pair.ci_low, pair.ci_high, pair.n = outcome.ci_low, outcome.ci_high, outcome.n
        except ValueError as exc:  # no items in the subset, metric undefined everywhere
            pair.unavailable = f"cannot be tested: {exc}"
            return
        pair.test = test.test
        pair.p_value = outcome.p_value
        pair.significant = outcome.significant
        pair.paired_delta = outcome.delta

    def predictions(self, record: ResultRecord,
                    dataset: DatasetResult) -> tuple[list[dict[str, Any]] | None, str | None]:
        """(rows ordered by index, None) or (None, why they cannot be used)."""
        if dataset.kind == LM_EVAL_KIND:
            return self.lm_eval_samples(dataset)
        path = self.predictions_path(record)
        if not path.is_file():
            origin = " (its metrics file was written by the old research scripts)" \
                if record.source == "legacy" else ""
            return None, f"no per-item predictions for {record.name}{origin}: {self.relative(path)} is missing"
        try:
            rows = _read_jsonl(path)
        except PredictionsError as exc:
            return None, f"{self.relative(path)}: {exc}"
        correct = sum(1 for row in rows if row.get("correct") is True)
        expected = (dataset.total_samples, dataset.correct)
        if (expected[0] is not None and expected[0] != len(rows)) or \
                (expected[1] is not None and expected[1] != correct):
            return None, (f"{self.relative(path)} does not match the metrics file ({len(rows)} items, "
                          f"{correct} correct; the metrics file says {expected[0]} and {expected[1]}); "
                          f"re-run the evaluation")
        return rows, None

    def lm_eval_samples(self, dataset: DatasetResult) -> tuple[list[dict[str, Any]] | None, str | None]:
        path = dataset.samples_path
        if path is None or not path.is_file():
            return None, f"{dataset.name}: no samples file beside its results (run lm-eval with --log_samples)"
        try:
            rows = read_samples(path)
        except PredictionsError as exc:
            return None, f"{self.relative(path)}: {exc}"
        if dataset.total_samples is not None and dataset.total_samples != len(rows):
            return None, (f"{self.relative(path)} has {len(rows)} documents; its results file says "
                          f"{dataset.total_samples}")
        return rows, None

    def predictions_path(self, record: ResultRecord) -> Path:
        # The evaluator names both files after the same safe model name.
        stem = self.file_name[:-len(".parquet")] if self.file_name.endswith(".parquet") else self.file_name
        return self.ws.predictions_dir / record.path.stem / f"{stem}.jsonl"

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.ws.root))
        except ValueError:
            return str(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for number, row, index in jsonl_objects(path, "index"):
        if index in rows:
            raise PredictionsError(f"item index {index} appears twice (line {number})")
        rows[index] = row
    return [rows[i] for i in sorted(rows)]


def _items_differ(name_a: str, rows_a: list[dict[str, Any]] | None, name_b: str,
                  rows_b: list[dict[str, Any]] | None) -> str | None:
    """Why the two predictions files are not about the same items, or None when they are."""
    if rows_a is None or rows_b is None:
        return None
    indexes_a = [row["index"] for row in rows_a]
    indexes_b = [row["index"] for row in rows_b]
    if indexes_a != indexes_b:
        only_a = sorted(set(indexes_a) - set(indexes_b))
        only_b = sorted(set(indexes_b) - set(indexes_a))
        return (f"items differ: {name_a} has {len(indexes_a)} items and {name_b} {len(indexes_b)} "
                f"(indexes only in {name_a}: {_few(only_a)}; only in {name_b}: {_few(only_b)}); "
                f"paired statistics need the same items")
    # lm-evaluation-harness rows carry the document's hash; llmtui's the exact prompt.
    fields = ("doc_hash", "gold") if rows_a and "doc_hash" in rows_a[0] else ("prompt", "gold")
    mismatched = [(a["index"], fieldname) for a, b in zip(rows_a, rows_b)
                  for fieldname in fields if a.get(fieldname) != b.get(fieldname)]
    if mismatched:
        index, fieldname = mismatched[0]
        count = len({i for i, _ in mismatched})
        return (f"items differ: item {index} has a different {fieldname} in {name_a} and {name_b} "
                f"({count} item{'s' if count > 1 else ''} differ); paired statistics need the same items")
    return None


def _flips(dataset: DatasetResult, reference: str, model: str, rows_a: list[dict[str, Any]],
           rows_b: list[dict[str, Any]]) -> Flips:
    """The items (same indexes, in order) where exactly one of the two models is right."""
    def side(row: dict[str, Any]) -> FlipSide:
        return FlipSide(extracted=row.get("extracted"), pred=row.get("pred"), output=row.get("output"))

    flips = Flips(dataset=dataset.name, file=dataset.file, reference=reference, model=model,
                  reference_only=[], model_only=[])
    for a, b in zip(rows_a, rows_b):
        if a.get("correct") is True and b.get("correct") is False:
            target = flips.reference_only
        elif a.get("correct") is False and b.get("correct") is True:
            target = flips.model_only
        else:
            continue
        target.append(FlipItem(index=a["index"], prompt=a.get("prompt"), gold=a.get("gold"),
                               reference=side(a), model=side(b)))
    return flips


def _few(values: list[int], limit: int = 5) -> str:
    if not values:
        return "none"
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _value(dataset: DatasetResult, name: str) -> float | None:
    if name in dataset.metrics:
        return dataset.metrics[name]
    return getattr(dataset, name, None) if name in _DATASET_FIELDS else None


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference
