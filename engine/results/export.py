"""The results table, a comparison and a lineage (degradation) matrix as CSV, Markdown (GitHub), LaTeX
(booktabs) and JSON text; flipped items as plain text (TUI and CLI processes).

Numbers keep full precision in CSV and JSON; Markdown and LaTeX show 4 decimals and mark the best
value of each column (higher or lower is better per :func:`engine.results.metrics_files.metric_direction`) in bold.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable

from engine.results.compare import Comparison, FlipItem, Flips, PairStat
from engine.results.lineage import LineageCell, LineageMatrix
from engine.results.metrics_files import ResultsTable

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}"}
MISSING = "–"
#: Marks a test set whose runs the comparability guard warns about (engine.results.provenance).
WARNING_MARK = "⚠"


def format_cell(value: Any) -> str:
    """Floats with 4 decimals, ints (counts) as they are, text as is, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in str(text))


def markdown_escape(text: str) -> str:
    return str(text).replace("|", r"\|").replace("\n", " ")


def best_rows(values: list[Any], direction: str | None) -> set[int]:
    """Row positions holding the best value (ties at the shown precision included); none when
    the column is not ranked or fewer than two rows have a number."""
    numbers = [(i, v) for i, v in enumerate(values)
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if direction is None or len(numbers) < 2:
        return set()
    pick = max if direction == "higher" else min
    best = format_cell(pick(v for _, v in numbers))
    return {i for i, v in numbers if format_cell(v) == best}


# --- the results table -----------------------------------------------------------------------------

def results_csv(table: ResultsTable) -> str:
    """CSV with the column keys as header (the old scripts' summary columns first); full precision."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = [c.key for c in table.columns]
    writer.writerow(keys)
    for row in table.rows:
        writer.writerow(["" if row.get(k) is None else row[k] for k in keys])
    return out.getvalue()


def results_json(table: ResultsTable) -> str:
    return json.dumps(table.to_dict(), indent=2, default=str) + "\n"


def _results_cells(table: ResultsTable) -> tuple[list[list[str]], set[tuple[int, int]]]:
    """Formatted cells and the (row, column) positions of each column's best value."""
    cells = [[format_cell(row.get(c.key)) or MISSING for c in table.columns] for row in table.rows]
    best = {(i, j) for j, column in enumerate(table.columns)
            for i in best_rows([row.get(column.key) for row in table.rows], column.direction)}
    return cells, best


def _text_column(key: str) -> bool:
    return key in ("model", "quant_tag", "evaluated_at")


def results_markdown(table: ResultsTable) -> str:
    """A GitHub-flavoured Markdown table; the best value of each column in bold."""
    cells, best = _results_cells(table)
    rows = [[f"**{markdown_escape(x)}**" if (i, j) in best else markdown_escape(x)
             for j, x in enumerate(row)] for i, row in enumerate(cells)]
    aligns = [":---" if _text_column(c.key) else "---:" for c in table.columns]
    return markdown_table([markdown_escape(c.key) for c in table.columns], aligns, rows)


def results_latex(table: ResultsTable, *, caption: str = "Evaluation results.",
                  label: str = "tab:results") -> str:
    """A booktabs table: dataset names grouped over their columns, the best value per column bold."""
    columns = table.columns
    cells, best = _results_cells(table)
    groups: list[tuple[str | None, int, int]] = []  # (dataset, first column, last column), 1-based
    for j, column in enumerate(columns, start=1):
        if groups and groups[-1][0] == column.dataset:
            groups[-1] = (column.dataset, groups[-1][1], j)
        else:
            groups.append((column.dataset, j, j))
    group_row = " & ".join(
        (rf"\multicolumn{{{last - first + 1}}}{{c}}{{{latex_escape(name)}}}" if last > first
         else latex_escape(name)) if name else "" for name, first, last in groups)
    rules = " ".join(rf"\cmidrule(lr){{{first}-{last}}}" for name, first, last in groups if name)
    body = [" & ".join(rf"\textbf{{{latex_escape(x)}}}" if (i, j) in best else latex_escape(x)
                       for j, x in enumerate(row)) + r" \\" for i, row in enumerate(cells)]
    spec = "".join("l" if _text_column(c.key) else "r" for c in columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if any(name for name, _, _ in groups):
        lines += [group_row + r" \\", rules]
    lines += [" & ".join(latex_escape(c.metric) for c in columns) + r" \\", r"\midrule", *body,
              r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(caption)}}}",
              rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --- a comparison ----------------------------------------------------------------------------------

def format_p(pair: PairStat) -> str:
    """The p-value with ``*`` when significant, ``n/a`` when the test could not run, ``–`` when the
    metric has no paired test."""
    if pair.p_value is None:
        return MISSING if pair.unavailable and pair.unavailable.startswith("no paired test") else "n/a"
    text = "<0.001" if pair.p_value < 0.001 else f"{pair.p_value:.3f}"
    return text + (" *" if pair.significant else "")


def format_interval(pair: PairStat) -> str:
    if pair.test == "bootstrap" and pair.ci_low is not None:
        return f"[{pair.ci_low:+.4f}, {pair.ci_high:+.4f}]"
    if pair.test == "mcnemar":
        detectable = ""
        if pair.detectable is not None:
            detectable = f", detectable ±{pair.detectable:.3f}"
        elif pair.undetectable:
            detectable = ", detectable: none"  # too few discordant items for any difference
        return f"b={pair.b}, c={pair.c}{detectable}"
    return ""


def format_delta(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:+d}" if isinstance(value, int) else f"{value:+.4f}"


def comparison_rows(comparison: Comparison) -> tuple[list[str], list[list[str]], list[list[int]]]:
    """Headers, cell rows and, per row, the positions of the best model values (for bolding)."""
    others = comparison.models[1:]
    headers = ["dataset", "metric", *comparison.models]
    for model in others:
        prefix = f"{model}: " if len(others) > 1 else ""
        headers += [f"{prefix}Δ", f"{prefix}{_interval_title(comparison)}", f"{prefix}p"]
    rows, best = [], []
    for dataset in comparison.datasets:
        # A visible marker on every row of a test set the comparability guard warns about.
        shown_name = f"{WARNING_MARK} {dataset.name}" if dataset.guard else dataset.name
        for metric in dataset.metrics:
            values = [metric.values.get(m) for m in comparison.models]
            row = [shown_name, metric.metric, *[format_cell(v) or MISSING for v in values]]
            by_model = {p.model: p for p in metric.pairs}
            for model in others:
                pair = by_model.get(model)
                row += [format_delta(pair.delta), format_interval(pair), format_p(pair)] if pair \
                    else [MISSING, "", MISSING]
            rows.append(row)
            best.append(sorted(2 + i for i in best_rows(values, metric.direction)))
    return headers, rows, best


def comparison_notes(comparison: Comparison) -> list[str]:
    """The legend and every reason a statistic is unavailable or a dataset was left out."""
    notes = [f"Δ is each model minus {comparison.baseline}. * p < {comparison.alpha:g}. Accuracy-type "
             f"metrics: exact McNemar test (b = items only {comparison.baseline} got right, c = the "
             f"reverse); others: paired bootstrap, {comparison.resamples} resamples, seed "
             f"{comparison.seed}, {comparison.confidence:.0%} percentile interval. detectable: the smallest "
             f"accuracy difference the test set could detect (power {comparison.power:.0%}, normal "
             f"approximation to McNemar's test at the observed discordance), shown where p ≥ {comparison.alpha:g}."]
    if comparison.guard_warnings:
        notes.append(f"{WARNING_MARK} comparability: " + "; ".join(comparison.guard_warnings))
    for dataset in comparison.datasets:
        notes += [f"{dataset.name}, {model}: statistics unavailable — {reason}"
                  for model, reason in dataset.unavailable.items()]
    notes += [f"{file_name} not compared: {reason}" for file_name, reason in comparison.skipped_datasets.items()]
    return notes


def comparison_markdown(comparison: Comparison) -> str:
    headers, rows, best = comparison_rows(comparison)
    for row, positions in zip(rows, best):
        for j in positions:
            row[j] = f"**{row[j]}**"
    aligns = [":---", ":---"] + ["---:"] * (len(headers) - 2)
    table = markdown_table([markdown_escape(h) for h in headers], aligns,
                      [[markdown_escape(x) for x in row] for row in rows])
    return table + "\n" + "".join(f"- {markdown_escape(n)}\n" for n in comparison_notes(comparison))


def comparison_latex(comparison: Comparison, *, caption: str | None = None,
                     label: str = "tab:comparison") -> str:
    headers, rows, best = comparison_rows(comparison)
    body = []
    for row, positions in zip(rows, best):
        cells = [latex_escape(x).replace(" *", r"$^{*}$") for x in row]
        for j in positions:
            cells[j] = rf"\textbf{{{cells[j]}}}"
        body.append(" & ".join(cells) + r" \\")
    caption = latex_escape(caption or comparison_notes(comparison)[0]).replace("Δ", r"$\Delta$")
    spec = "ll" + "r" * (len(headers) - 2)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h).replace("Δ", r"$\Delta$") for h in headers) + r" \\",
             r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
             rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             r"\end{table}"]
    return "\n".join(lines) + "\n"


def comparison_csv(comparison: Comparison) -> str:
    """Long format: one line per dataset, metric and compared model, full precision."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = ["dataset", "metric", "reference_model", "reference_value", "model", "value", "delta",
              "test", "p_value", "significant", "ci_low", "ci_high", "b", "c", "n", "unavailable"]
    writer.writerow(fields)
    for dataset in comparison.datasets:
        for metric in dataset.metrics:
            for pair in metric.pairs:
                record = {"dataset": dataset.name, "metric": metric.metric,
                          "reference_model": comparison.baseline,
                          "reference_value": metric.values.get(comparison.baseline),
                          "value": metric.values.get(pair.model), **vars(pair)}
                writer.writerow(["" if record.get(f) is None else record[f] for f in fields])
    return out.getvalue()


def comparison_json(comparison: Comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2, default=str) + "\n"


# --- flipped items --------------------------------------------------------------------------------

def shorten(value: Any, limit: int, *, keep_end: bool = False) -> str:
    """One line of at most ``limit`` characters (whitespace runs collapsed, the cut marked with …).
    ``keep_end`` keeps the end instead: a prompt's question comes after its shared system text."""
    text = " ".join(str(value).split()) if value is not None else MISSING
    if len(text) <= limit:
        return text
    return "…" + text[len(text) - limit + 1:] if keep_end else text[:limit - 1] + "…"


def flips_text(comparison: Comparison, limit: int | None = None, width: int = 100) -> str:
    """Per test set and model: the items only the reference got right, then those only the model got
    right; prompts and outputs shortened to one line each, at most ``limit`` items per direction."""
    lines = []
    for flips in comparison.flips:
        for title, items in ((f"{flips.reference} right, {flips.model} wrong", flips.reference_only),
                             (f"{flips.model} right, {flips.reference} wrong", flips.model_only)):
            shown = items[:limit] if limit is not None else items
            more = f", first {len(shown)} shown" if len(shown) < len(items) else ""
            lines.append(f"{flips.dataset}: {title}: {len(items)} item{'s' if len(items) != 1 else ''}{more}")
            lines += [line for item in shown for line in _flip_lines(flips, item, width)]
        lines.append("")
    return "\n".join(lines)


def _flip_lines(flips: Flips, item: FlipItem, width: int) -> list[str]:
    label = max(len(flips.reference), len(flips.model))

    def side(name: str, answer) -> str:
        pred = answer.extracted if answer.extracted is not None else answer.pred
        head = f"    {name:<{label}}  answer {shorten(pred, 24)}  output "
        return head + shorten(answer.output, max(20, width - len(head)))
    prompt = shorten(item.prompt, max(20, width - 50), keep_end=True)
    return [f"  #{item.index}  gold {shorten(item.gold, 30)}  prompt {prompt}",
            side(flips.reference, item.reference), side(flips.model, item.model)]


# --- a lineage (degradation) matrix ----------------------------------------------------------------

def lineage_cell_text(cell: LineageCell, *, star: str = "*") -> str:
    """``0.8400 (-0.0200, p=0.031*)``: the value, then the delta against the parent and its p-value."""
    if cell.value is None:
        return MISSING
    text = format_cell(cell.value)
    if cell.delta is None:
        return text
    p = ("p<0.001" if cell.p_value < 0.001 else f"p={cell.p_value:.3f}") if cell.p_value is not None else "p n/a"
    warn = f" {WARNING_MARK}" if cell.warnings else ""
    return f"{text} ({format_delta(cell.delta)}, {p}{star if cell.significant else ''}){warn}"


def lineage_rows(matrix: LineageMatrix) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "parent", *[f"{name} {metric}" for name, metric in matrix.columns.items()]]
    rows = [["  " * row.depth + row.model + ("" if row.tested else " (untested)"), row.parent or MISSING,
             *[lineage_cell_text(row.cells[name]) for name in matrix.columns]] for row in matrix.rows]
    return headers, rows


def lineage_notes(matrix: LineageMatrix) -> list[str]:
    notes = [f"Each cell: the headline metric, then (Δ against the row's parent, paired p-value); "
             f"* p < {matrix.alpha:g}; {WARNING_MARK}: the comparability guard warns about the pair."]
    for row in matrix.rows:
        for name, cell in row.cells.items():
            for warning in cell.warnings:
                notes.append(f"{row.model} vs {row.parent} on {name}: {warning}")
            if cell.unavailable and cell.delta is not None and cell.p_value is None:
                notes.append(f"{row.model} vs {row.parent} on {name}: {cell.unavailable}")
    return notes


def lineage_markdown(matrix: LineageMatrix) -> str:
    headers, rows = lineage_rows(matrix)
    rows = [[row[0].replace("  ", "&nbsp;&nbsp;"), *row[1:]] for row in rows]
    table = markdown_table([markdown_escape(h) for h in headers], [":---", ":---"] + ["---:"] * (len(headers) - 2),
                      [[markdown_escape(x) for x in row] for row in rows])
    return table + "\n" + "".join(f"- {markdown_escape(n)}\n" for n in lineage_notes(matrix))


def lineage_latex(matrix: LineageMatrix, *, label: str = "tab:lineage") -> str:
    headers, rows = lineage_rows(matrix)
    body = []
    for row, source in zip(rows, matrix.rows):
        name = r"\quad " * source.depth + latex_escape(source.model)
        cells = [latex_escape(lineage_cell_text(source.cells[n], star="STAR")).replace("STAR", "$^{*}$")
                 .replace(WARNING_MARK, r"$^{\dagger}$") for n in matrix.columns]
        body.append(" & ".join([name, latex_escape(row[1]), *cells]) + r" \\")
    caption = (rf"Degradation matrix of {latex_escape(matrix.root)}: headline metric, ($\Delta$ against the "
               rf"parent, paired p-value); $^{{*}}$ p < {matrix.alpha:g}; $^{{\dagger}}$ comparability warning.")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{ll{'r' * len(matrix.columns)}}}",
             r"\toprule", " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule", *body,
             r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
             rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def lineage_json(matrix: LineageMatrix) -> str:
    return json.dumps(matrix.to_dict(), indent=2, default=str) + "\n"


def _interval_title(comparison: Comparison) -> str:
    return f"{comparison.confidence:.0%} CI / b, c"


def markdown_table(headers: list[str], aligns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


#: Export format name → renderer, for the results table and for a comparison.
RESULTS_RENDERERS: dict[str, Callable[[ResultsTable], str]] = {
    "csv": results_csv, "markdown": results_markdown, "latex": results_latex, "json": results_json,
}
COMPARISON_RENDERERS: dict[str, Callable[[Comparison], str]] = {
    "csv": comparison_csv, "markdown": comparison_markdown, "latex": comparison_latex, "json": comparison_json,
}
LINEAGE_RENDERERS: dict[str, Callable[[LineageMatrix], str]] = {
    "markdown": lineage_markdown, "latex": lineage_latex, "json": lineage_json,
}
