"""A study as one table (in jobs/: it reads the study's plan, its queue statuses and its search): a row per variant (PTQ follow-ups included), each test set's headline metric with its delta
against the row's reference and the paired p-value adjusted across the whole table, cost columns, Pareto flags
(CLI and TUI processes).

The reference of a row is the study's ``reference`` when it names one, else the row's parent in the
study's lineage (a fine-tune's base, a PTQ output's source). The paired tests are
:func:`engine.results.compare.compare`'s (one call per reference, with all its rows); their p-values are
adjusted together (:data:`engine.results.stats.CORRECTIONS`: Holm by default, Benjamini–Hochberg on
request). A row is Pareto-optimal on size (on latency) when no other row has a mean headline value at
least as high and a size (mean latency) at most as large, one of the two strictly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
import csv
import io
from typing import Any, Callable

from engine.data.kinds import headline_metric
from engine.data.tasks import DatasetError, get_task
from engine.files import read_json_file, write_json
from engine.jobs.study_run import STATUS_ORDER, StudyPlan
from engine.jobs.study_search import search_trials
from engine.results.compare import CompareError, compare
from engine.results.metrics_files import ResultRecord, dataset_name_from_file, load_metrics_file, training_peaks
from engine.models.folder import TRAINING_METADATA
from engine.models.scan import inspect_model
from engine.results.export import format_delta, latex_escape, markdown_escape, markdown_table
from engine.results.stats import ALPHA, CORRECTIONS
from engine.workspace import Workspace

#: Why a cell is empty, by the row's status.
_REASONS = {"missing": "not run", "failed": "failed", "running": "running", "queued": "queued"}


@dataclass
class StudyCell:
    metric: str | None
    value: float | None = None
    delta: float | None = None
    p: float | None = None
    p_adjusted: float | None = None
    reason: str | None = None  # why value (or p) is missing


@dataclass
class StudyRow:
    name: str
    parent: str | None
    reference: str | None
    status: str
    run: str | None  # the study run that makes it (None for the root)
    cells: dict[str, StudyCell]
    size_bytes: int | None = None
    params_trained: int | None = None
    train_time_s: float | None = None
    train_peak_gb: float | None = None
    eval_tokens_per_s: float | None = None
    latency_s: float | None = None
    pareto_size: bool = False
    pareto_latency: bool = False


@dataclass
class StudyTable:
    study: str
    file: str
    correction: str
    alpha: float
    columns: dict[str, str]  # test set → headline metric
    rows: list[StudyRow]
    counts: dict[str, int]
    reference: str | None = None  # the study's named reference (None: each row's parent)
    trials: list[dict[str, Any]] = field(default_factory=list)
    objective: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, name: str) -> StudyRow | None:
        return next((r for r in self.rows if r.name == name), None)


def study_table(ws: Workspace, plan: StudyPlan, *, resamples: int = 1000, seed: int = 0) -> StudyTable:
    """The study's table from what is on disk now (metrics files, model folders, the queue's statuses)."""
    study = plan.study
    rows = _rows(plan)
    records: dict[str, ResultRecord] = {}
    for row in rows:
        path = ws.metrics_file(row.name)
        if path.is_file():
            record = load_metrics_file(path)
            if not record.error:
                records[row.name] = record
    columns: dict[str, str] = {}
    for row in rows:
        for dataset in records[row.name].datasets.values() if row.name in records else []:
            metric = headline_metric(dataset.kind, dataset.metrics)
            if metric is not None:
                columns.setdefault(dataset.name, metric)
    for name, metric in _planned_columns(ws, plan).items():  # sets no row has results on yet
        columns.setdefault(name, metric)
    for row in rows:
        record = records.get(row.name)
        for name, metric in columns.items():
            dataset = record.dataset(name) if record else None
            cell = StudyCell(metric, value=dataset.metrics.get(metric) if dataset else None)
            if record is None:
                cell.reason = _REASONS.get(row.status, "not evaluated")
            elif dataset is None:
                cell.reason = "not evaluated on this test set"
            row.cells[name] = cell
        _costs(ws, row, record)
    _paired_tests(ws, study.name, rows, records, columns, resamples, seed)
    _adjust(rows, study.correction)
    _pareto(rows, columns)
    table = StudyTable(study.name, str(study.path), study.correction, ALPHA, columns, rows, plan.counts(),
                       study.reference)
    if study.search is not None:
        table.trials, table.objective = search_trials(ws, study), study.search.objective
    return table


def _planned_columns(ws: Workspace, plan: StudyPlan) -> dict[str, str]:
    """The test sets the runs' evaluations name, as metrics files will record them, with their headline metric."""
    columns: dict[str, str] = {}
    names = dict.fromkeys(name for run in plan.study.runs if run.config.eval.after for name in run.config.eval.datasets)
    for name in names:
        try:
            task = get_task(name, ws.datasets_dir)
        except DatasetError:
            continue
        metric = headline_metric(task.kind)
        if metric is not None:
            columns[dataset_name_from_file(task.test_file)] = metric
    return columns


def _rows(plan: StudyPlan) -> list[StudyRow]:
    study = plan.study
    rows: list[StudyRow] = []
    producer: dict[str, str] = {}  # output → the job key that writes it
    for key, job in plan.jobs.items():
        if job.kind in ("train", "quantize"):
            producer[job.target] = key
    names: list[tuple[str, str | None]] = [(plan.root, None)] if plan.root else []
    names += [(output, run.name) for run in plan.runs for output in run.outputs]
    for name, run in dict.fromkeys(names):
        chain, node = [], name
        while node is not None and node in producer:  # the jobs that make this model, nearest first
            chain.append(producer[node])
            node = plan.parents.get(node) if plan.parents.get(node) != node else None
        keys = [*reversed(chain), f"eval:{name}"]
        statuses = [plan.jobs[k].status for k in keys if k in plan.jobs]
        status = "done" if statuses and statuses[-1] == "done" else \
            next((s for s in STATUS_ORDER if s in statuses and s != "done"), "missing")
        parent = plan.parents.get(name)
        reference = study.reference if study.reference and study.reference != name else parent
        rows.append(StudyRow(name, parent, reference, status, run, {}))
    return rows


def _costs(ws: Workspace, row: StudyRow, record: ResultRecord | None) -> None:
    folder = ws.model_dir(row.name)
    if folder.is_dir():
        row.size_bytes = inspect_model(ws, folder, set()).size_bytes or None
        meta = read_json_file(folder / TRAINING_METADATA)[0]
        if isinstance(meta, dict):
            info, stats = meta.get("model_info") or {}, meta.get("training_stats") or {}
            row.params_trained = info.get("trainable_params")
            row.train_time_s = stats.get("train_runtime_s")
            row.train_peak_gb = training_peaks(ws, row.name)[0]
    if record is not None:
        row.latency_s = record.latency_mean_s
        raw = read_json_file(record.path)[0]
        throughput = raw.get("throughput") if isinstance(raw, dict) else None
        if isinstance(throughput, dict):
            row.eval_tokens_per_s = throughput.get("tokens_per_second")


def _paired_tests(ws: Workspace, study_name: str, rows: list[StudyRow], records: dict[str, ResultRecord],
                  columns: dict[str, str], resamples: int, seed: int) -> None:
    """Fill each cell's delta and p from :func:`compare`, per reference with all its rows at once. Results are
    kept in ``.llmtui/studies/{name}.pairs.json`` under the pair's file signatures (size and mtime of both
    metrics files and predictions folders), so only pairs whose files changed are compared again."""
    cache_path = ws.state_dir / "studies" / f"{study_name}.pairs.json"
    cached = read_json_file(cache_path)[0]
    cached = cached if isinstance(cached, dict) and cached.get("version") == _CACHE_VERSION else {}
    pairs: dict[str, Any] = {}
    changed = False
    by_reference: dict[str, list[StudyRow]] = {}
    for row in rows:
        if row.reference and row.name in records:
            by_reference.setdefault(row.reference, []).append(row)
    signatures = {name: _signature(ws, record) for name, record in records.items()}
    for reference, group in by_reference.items():
        if reference not in records:
            for row in group:
                for cell in row.cells.values():
                    if cell.value is not None:
                        cell.reason = f"{reference} (the reference) is not evaluated"
            continue
        keys = {row.name: json.dumps([reference, row.name, signatures[reference], signatures[row.name],
                                      sorted(columns.items()), resamples, seed]) for row in group}
        stale = [row for row in group if keys[row.name] not in cached.get("pairs", {})]
        changed = changed or bool(stale)
        if stale:
            fresh = _compare_group(ws, reference, stale, records, columns, resamples, seed)
            for row in stale:
                cached.setdefault("pairs", {})[keys[row.name]] = fresh[row.name]
        for row in group:
            pairs[keys[row.name]] = found = cached["pairs"][keys[row.name]]
            for dataset, (delta, p, reason) in found.items():
                cell = row.cells.get(dataset)
                if cell is not None:
                    cell.delta, cell.p = delta, p
                    cell.reason = reason if p is None and reason else cell.reason
    if changed or len(pairs) != len(cached.get("pairs", {})):
        try:
            write_json(cache_path, {"version": _CACHE_VERSION, "pairs": pairs})
        except OSError:  # a read-only workspace still gets its table, computed each time
            pass


_CACHE_VERSION = 1


def _signature(ws: Workspace, record: ResultRecord) -> list[Any]:
    """What the pair's statistics depend on: the metrics file and the predictions folder's files."""
    stats = []
    try:
        info = record.path.stat()
        stats.append([record.path.name, info.st_size, info.st_mtime_ns])
        with os.scandir(ws.predictions_dir / record.path.stem) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                info = entry.stat()
                stats.append([entry.name, info.st_size, info.st_mtime_ns])
    except OSError:
        pass
    return stats


def _compare_group(ws: Workspace, reference: str, group: list[StudyRow], records: dict[str, ResultRecord],
                   columns: dict[str, str], resamples: int, seed: int) -> dict[str, dict[str, list[Any]]]:
    """Row name → test set → [delta, p, why p is missing]."""
    out: dict[str, dict[str, list[Any]]] = {row.name: {} for row in group}
    try:
        comparison = compare(ws, [reference, *(r.name for r in group)], resamples=resamples, seed=seed,
                             records=[records[reference], *(records[r.name] for r in group)],
                             only_metrics=set(columns.values()))
    except CompareError as exc:
        return {row.name: {name: [None, None, str(exc)] for name in columns} for row in group}
    for dataset in comparison.datasets:
        metric = next((m for m in dataset.metrics if m.metric == columns.get(dataset.name)), None)
        for pair in metric.pairs if metric is not None else []:
            out[pair.model][dataset.name] = [pair.delta, pair.p_value, pair.unavailable]
    return out


def _adjust(rows: list[StudyRow], correction: str) -> None:
    cells = [cell for row in rows for cell in row.cells.values() if cell.p is not None]
    for cell, adjusted in zip(cells, CORRECTIONS[correction]([cell.p for cell in cells])):
        cell.p_adjusted = adjusted


def _mean(values: list[float | None]) -> float | None:
    return sum(values) / len(values) if values and all(v is not None for v in values) else None  # type: ignore


def pareto_flags(points: list[tuple[float | None, float | None]]) -> list[bool]:
    """For (score, cost) points: True where no other point has score ≥ and cost ≤, one strictly (None: False)."""
    flags = []
    for score, cost in points:
        if score is None or cost is None:
            flags.append(False)
            continue
        flags.append(not any(s is not None and c is not None and s >= score and c <= cost and (s > score or c < cost)
                             for s, c in points))
    return flags


def _pareto(rows: list[StudyRow], columns: dict[str, str]) -> None:
    scores = [_mean([row.cells[c].value for c in columns]) if columns else None for row in rows]
    for flag, row in zip(pareto_flags([(s, r.size_bytes) for s, r in zip(scores, rows)]), rows):
        row.pareto_size = flag
    for flag, row in zip(pareto_flags([(s, r.latency_s) for s, r in zip(scores, rows)]), rows):
        row.pareto_latency = flag


# ------------------------------------------------------------------------------------- text formats


def study_cell_text(cell: StudyCell) -> str:
    """``0.8125 (+0.0625, p=0.031)``: the value, its delta against the row's reference and the adjusted p."""
    if cell.value is None:
        return cell.reason or ""
    if cell.delta is None:
        return f"{cell.value:.4f}"
    p = f", p={cell.p_adjusted:.3g}" if cell.p_adjusted is not None else ""
    return f"{cell.value:.4f} ({format_delta(cell.delta)}{p})"


def _size(value: int | None) -> str:
    return f"{value / 1e6:.1f} MB" if value else ""


def _pareto_mark(row: StudyRow) -> str:
    return "".join(mark for flag, mark in ((row.pareto_size, "S"), (row.pareto_latency, "L")) if flag)


def study_rows(table: StudyTable) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "status", *table.columns, "size", "trained params", "train s", "tokens/s", "Pareto"]
    rows = [[row.name, row.status, *(study_cell_text(row.cells[c]) for c in table.columns), _size(row.size_bytes),
             "" if row.params_trained is None else f"{row.params_trained:,}",
             "" if row.train_time_s is None else f"{row.train_time_s:.1f}",
             "" if row.eval_tokens_per_s is None else f"{row.eval_tokens_per_s:.1f}", _pareto_mark(row)]
            for row in table.rows]
    return headers, rows


def study_notes(table: StudyTable) -> list[str]:
    name = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[table.correction]
    notes = [f"Cells: headline metric (delta against the row's reference, paired p-value adjusted across the "
             f"table by {name}); Pareto: S = not dominated on mean headline vs size, L = vs latency."]
    notes.append(f"Reference: {table.reference}" if table.reference else "Reference: each row's parent "
                 "(a fine-tune's base model, a PTQ output's source).")
    if table.trials:
        notes += [f"trial {t['number']}: {t['state']}, {t['params']}, {table.objective} = {t['value']}"
                  for t in table.trials]
    return notes


def study_markdown(table: StudyTable) -> str:
    headers, rows = study_rows(table)
    body = markdown_table([markdown_escape(h) for h in headers], [":---", ":---"] + ["---:"] * (len(headers) - 2),
                     [[markdown_escape(x) for x in row] for row in rows])
    return body + "\n" + "".join(f"- {markdown_escape(n)}\n" for n in study_notes(table))


def study_latex(table: StudyTable, *, label: str = "tab:study") -> str:
    headers, rows = study_rows(table)
    name = {"holm": "Holm", "bh": "Benjamini--Hochberg"}[table.correction]
    caption = (rf"Study {latex_escape(table.study)}: headline metric ($\Delta$ against the reference, paired "
               rf"p-value adjusted by {name}); Pareto S: vs size, L: vs latency.")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{ll{'r' * (len(headers) - 2)}}}",
             r"\toprule", " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule",
             *(" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows),
             r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def study_csv(table: StudyTable) -> str:
    """One line per row; per test set its value, delta, p and adjusted p at full precision."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "parent", "reference", "status",
                     *(f"{c}__{k}" for c in table.columns for k in ("value", "delta", "p", "p_adjusted")),
                     "size_bytes", "params_trained", "train_time_s", "train_peak_gb", "eval_tokens_per_s",
                     "latency_s", "pareto_size", "pareto_latency"])
    for row in table.rows:
        writer.writerow([row.name, row.parent or "", row.reference or "", row.status,
                         *(format_csv(getattr(row.cells[c], k)) for c in table.columns
                           for k in ("value", "delta", "p", "p_adjusted")),
                         *(format_csv(v) for v in (row.size_bytes, row.params_trained, row.train_time_s,
                                                   row.train_peak_gb, row.eval_tokens_per_s, row.latency_s)),
                         row.pareto_size, row.pareto_latency])
    return out.getvalue()


def format_csv(value: Any) -> str:
    return "" if value is None else str(value)


#: Export format name → renderer.
STUDY_RENDERERS: dict[str, Callable[[StudyTable], str]] = {
    "csv": study_csv, "markdown": study_markdown, "latex": study_latex,
}
