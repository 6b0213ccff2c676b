"""Model lineage (base → fine-tunes → PTQ variants) and the degradation matrix over it (CLI / TUI).

Parents come from the model scan's records (engine.models.scan: a PTQ variant's quantization metadata
names its source, a fine-tune's training metadata its base). :func:`lineage_matrix` puts a model and
every descendant in rows and each test set's headline metric in columns; each cell holds the value, the
delta against the row's parent and the paired test of that delta (engine.results.compare).
:func:`estimate_discordance` reads the same parent → child pairs to plan a comparison's power.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.data.kinds import headline_metric
from engine.models.scan import ModelRecord, scan_models
from engine.results.compare import CompareError, compare, find_record
from engine.results.metrics_files import scan_results
from engine.results.records import ResultRecord
from engine.results.stats import ALPHA, DEFAULT_DISCORDANCE
from engine.workspace import Workspace


class LineageError(ValueError):
    """The model is unknown, so it has no lineage (names it, with close matches)."""


@dataclass
class LineageCell:
    """One model on one test set: its headline value, the delta against its parent and the paired test."""

    value: float | None = None
    delta: float | None = None
    p_value: float | None = None
    significant: bool | None = None
    test: str | None = None
    unavailable: str | None = None
    #: The comparability guard's warnings for this parent → child pair on this set.
    warnings: list[str] = field(default_factory=list)


@dataclass
class LineageRow:
    model: str
    parent: str | None
    depth: int
    tested: bool
    cells: dict[str, LineageCell]


@dataclass
class LineageMatrix:
    root: str
    #: Test set name → the headline metric shown for it.
    columns: dict[str, str]
    rows: list[LineageRow]
    alpha: float = ALPHA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parents(ws: Workspace, models: list[ModelRecord] | None = None) -> dict[str, str]:
    """Model name → its parent's name, for every model folder that names one."""
    models = scan_models(ws) if models is None else models
    return {m.name: m.parent for m in models if m.parent and m.parent != m.name}


def descendants(parent_of: dict[str, str], root: str) -> list[tuple[str, int]]:
    """``(name, depth)`` of ``root`` and everything made from it, depth-first, children by name."""
    children: dict[str, list[str]] = {}
    for child, parent in parent_of.items():
        children.setdefault(parent, []).append(child)
    order, seen = [], set()

    def visit(name: str, depth: int) -> None:
        if name in seen:  # a metadata cycle must not loop forever
            return
        seen.add(name)
        order.append((name, depth))
        for child in sorted(children.get(name, []), key=str.casefold):
            visit(child, depth + 1)

    visit(root, 0)
    return order


def lineage_matrix(ws: Workspace, root: str, *, resamples: int = 1000, seed: int = 0) -> LineageMatrix:
    """The degradation matrix of ``root`` and its descendants (LineageError when ``root`` is unknown).
    Every row, the root's included, is compared with its parent when both are evaluated."""
    models = scan_models(ws)
    records = scan_results(ws)
    known = {m.name for m in models} | {r.name for r in records if not r.error}
    if root not in known:
        import difflib

        close = difflib.get_close_matches(root, sorted(known), n=3)
        raise LineageError(f"no model {root!r} in Models/ or Testing/" +
                           (f"; did you mean {', '.join(close)}?" if close else ""))
    parent_of = parents(ws, models)
    by_name = {r.name: r for r in records if not r.error}
    order = descendants(parent_of, root)
    columns: dict[str, str] = {}
    for name, _ in order:
        for dataset in by_name[name].datasets.values() if name in by_name else []:
            metric = headline_metric(dataset.kind, dataset.metrics)
            if metric is not None:
                columns.setdefault(dataset.name, metric)
    rows = []
    for name, depth in order:
        parent = parent_of.get(name)  # the root's too: its row shows what it lost or gained from it
        record = by_name.get(name)
        cells = {dataset: LineageCell(value=_value(record, dataset, metric)) for dataset, metric in columns.items()}
        if record is not None and parent in by_name:
            _fill_deltas(ws, records, parent, name, columns, cells, resamples, seed)
        rows.append(LineageRow(model=name, parent=parent, depth=depth, tested=record is not None, cells=cells))
    return LineageMatrix(root=root, columns=columns, rows=rows)


def _value(record: ResultRecord | None, dataset_name: str, metric: str) -> float | None:
    dataset = record.dataset(dataset_name) if record else None
    return dataset.metrics.get(metric) if dataset else None


def _fill_deltas(ws: Workspace, records: list[ResultRecord], parent: str, child: str, columns: dict[str, str],
                 cells: dict[str, LineageCell], resamples: int, seed: int) -> None:
    try:
        comparison = compare(ws, [parent, child], resamples=resamples, seed=seed, records=records)
    except CompareError as exc:
        for cell in cells.values():
            cell.unavailable = str(exc)
        return
    for dataset in comparison.datasets:
        cell = cells.get(dataset.name)
        metric = next((m for m in dataset.metrics if m.metric == columns.get(dataset.name)), None)
        if cell is None or metric is None:
            continue
        pair = metric.pairs[0]
        cell.delta, cell.p_value, cell.significant = pair.delta, pair.p_value, pair.significant
        cell.test, cell.unavailable = pair.test, pair.unavailable
        cell.warnings = dataset.guard.get(child, [])


@dataclass
class DiscordanceEstimate:
    """The share of items on which a parent and its child disagree, pooled over evaluated pairs."""

    discordance: float
    items: int
    pairs: list[str]
    estimated: bool

    def describe(self) -> str:
        if not self.estimated:
            return f"D = {self.discordance:g} (the default: no evaluated parent → child pair to estimate it from)"
        return (f"D = {self.discordance:.3f}, estimated from {self.items} paired items of "
                f"{', '.join(self.pairs)}")


def estimate_discordance(ws: Workspace, models: list[str] | None = None,
                         dataset: str | None = None) -> DiscordanceEstimate:
    """Pooled (b + c) / n of McNemar's accuracy test over parent → child pairs with predictions.

    With ``models``: for each, the pair it forms with its parent, else the nearest evaluated pair above
    it (its parent and grandparent, …). Without: every evaluated pair in the workspace. ``dataset``
    restricts to one test set (a name or file name). No pair → :data:`DEFAULT_DISCORDANCE`.
    """
    records = scan_results(ws)
    evaluated = {r.name for r in records if not r.error}
    parent_of = parents(ws)
    if models:
        edges = []
        for model in models:
            name = model
            try:
                name = find_record(records, model).name
            except CompareError:
                pass
            seen = set()
            while name in parent_of and name not in seen:
                seen.add(name)
                if name in evaluated and parent_of[name] in evaluated:
                    edges.append((parent_of[name], name))
                    break
                name = parent_of[name]
    else:
        edges = [(p, c) for c, p in sorted(parent_of.items()) if c in evaluated and p in evaluated]
    discordant = total = 0
    used = []
    for parent, child in dict.fromkeys(edges):
        try:
            comparison = compare(ws, [parent, child], records=records)
        except CompareError:
            continue
        for result in comparison.datasets:
            if dataset and dataset not in (result.name, result.file):
                continue
            accuracy = next((m for m in result.metrics if m.metric in ("accuracy", "acc")), None)
            pair = accuracy.pairs[0] if accuracy else None
            if pair is None or pair.test != "mcnemar" or pair.b is None:
                continue
            discordant += pair.b + pair.c
            total += pair.n
            if f"{parent} → {child}" not in used:
                used.append(f"{parent} → {child}")
    if total == 0 or discordant == 0:
        return DiscordanceEstimate(DEFAULT_DISCORDANCE, 0, [], estimated=False)
    return DiscordanceEstimate(discordant / total, total, used, estimated=True)
