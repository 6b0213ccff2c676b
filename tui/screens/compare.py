"""The side-by-side comparison (TUI): metrics in rows, one column per model, deltas against the first.

The paired statistics come from :mod:`engine.results.compare`, computed in a worker thread; rows of a test
set the comparability guard warns about carry a ⚠; ``f`` opens the flipped-items panel, where ``a`` asks the
item again in the Arena (:mod:`tui.screens.arena`)."""

from __future__ import annotations

import re
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine.results.compare import Comparison, FlipItem, Flips
from engine.workspace import Workspace
from tui.widgets.table_sync import clip, literal_cells


def _delta_style(delta: str, direction: str | None, significant: bool) -> str:
    if not delta or direction is None or delta.startswith(("–", "-0.0000", "+0.0000")):
        return "dim" if not significant else ""
    better = delta.startswith("+") == (direction == "higher")
    return ("bold " if significant else "") + ("green" if better else "red")


def short_labels(names: list[str], width: int = 24) -> list[str]:
    """Column titles for models: their names without the parts they all share
    (``Qwen3-0.6B-boolq_SFT_LoRa16_NoQuant`` and ``…_NoPeft_NoQuant`` → ``LoRa16``, ``NoPeft``)."""
    split = [re.split(r"(?<=[-_])", name) for name in names]
    prefix = 0
    while all(len(parts) > prefix + 1 for parts in split) and len({parts[prefix] for parts in split}) == 1:
        prefix += 1
    suffix = 0
    while all(len(parts) > prefix + suffix + 1 for parts in split) and \
            len({parts[-1 - suffix] for parts in split}) == 1:
        suffix += 1
    labels = ["".join(parts[prefix:len(parts) - suffix]).strip("-_") for parts in split]
    if len(set(labels)) < len(labels) or not all(labels):
        labels = list(names)
    return [clip(label, width) for label in labels]


def comparison_table(comparison: Comparison) -> tuple[list[str], list[list[Text]]]:
    """Headers (models by their short labels) and styled cells: best value per row in bold, deltas
    green when better and red when worse (bold when significant)."""
    from engine.results.export import WARNING_MARK, comparison_rows

    _, rows, best = comparison_rows(comparison)
    labels = short_labels(comparison.models)
    headers = ["set", "metric", *labels]
    for label in labels[1:]:
        prefix = f"{label} " if len(labels) > 2 else ""
        headers += [f"{prefix}Δ", f"{prefix}{comparison.confidence:.0%} CI / b,c", f"{prefix}p"]
    directions = [metric.direction for dataset in comparison.datasets for metric in dataset.metrics]
    first_stat = 2 + len(comparison.models)
    styled = []
    for row, positions, direction in zip(rows, best, directions):
        cells = []
        for j, value in enumerate(row):
            style = "bold" if j in positions else ""
            if j >= first_stat and (j - first_stat) % 3 == 0:
                significant = row[j + 2].endswith("*")
                style = _delta_style(value, direction, significant)
            elif j >= first_stat and (j - first_stat) % 3 == 2 and value.endswith("*"):
                style = "bold"
            elif j == 0 and value.startswith(WARNING_MARK):
                style = "bold yellow"
            cells.append(Text(value, style=style, justify="left" if j < 2 else "right"))
        styled.append(cells)
    return headers, styled


def flip_pages(flips: Flips, labels: dict[str, str] | None = None) -> list[tuple[str, FlipItem]]:
    """Every flipped item of one test set and model, each with the direction it flipped in (models by
    their ``labels`` where given)."""
    ref, model = ((labels or {}).get(name, name) for name in (flips.reference, flips.model))
    return [(f"{ref} right, {model} wrong", item) for item in flips.reference_only] + \
        [(f"{model} right, {ref} wrong", item) for item in flips.model_only]


class CompareScreen(Screen):
    """Pushed from the Results screen with the marked models (the first is the reference)."""

    BINDINGS = [
        Binding("escape,q", "close", "Back", id="compare.close"),
        Binding("x", "export", "Export", id="compare.export"),
        Binding("f", "toggle_flips", "Flipped items", id="compare.flips"),
        Binding("t", "next_set", "Next set", id="compare.flips_set"),
        Binding("n,right", "flip(1)", "Next item", id="compare.flips_next"),
        Binding("p,left", "flip(-1)", "Prev item", id="compare.flips_previous"),
        Binding("a", "arena", "Arena", id="compare.flips_arena"),
    ]

    def __init__(self, models: list[str], flips_of: str | None = None) -> None:
        """``flips_of``: a test set whose flipped items open first (the Studies view's ``enter`` on a cell)."""
        super().__init__()
        self.models = models
        self.flips_of = flips_of
        self.comparison: Comparison | None = None
        self.showing_flips = False
        self.flip_set = 0  # which entry of comparison.flips (test set × compared model)
        self.flip_item = 0

    @property
    def ws(self) -> Workspace:
        return self.app.ws  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        labels = short_labels(self.models)
        with Vertical(id="compare-main"):
            title = Text.assemble(("Compare ", "bold"), (labels[0], "bold cyan"), " (reference) vs ",
                                  ", ".join(labels[1:]))
            yield Static(title, id="compare-title")
            table: DataTable = DataTable(id="compare", cursor_type="row", zebra_stripes=True)
            table.loading = True
            yield table
            yield Static("", id="compare-notes")
        with Vertical(id="flips"):
            yield Static("", id="flips-head")
            yield Static("", id="flips-item")
            with Horizontal(id="flips-sides"):
                with VerticalScroll(id="flips-left", classes="flips-side"):
                    yield Static("", id="flips-reference")
                with VerticalScroll(id="flips-right", classes="flips-side"):
                    yield Static("", id="flips-model")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#flips").display = False
        self.run_compare()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def run_compare(self) -> None:
        from engine.results.compare import CompareError, compare

        try:
            comparison = compare(self.ws, self.models)
        except (CompareError, OSError) as exc:
            self.app.call_from_thread(self.failed, str(exc))
            return
        self.app.call_from_thread(self.show, comparison)

    def failed(self, message: str) -> None:
        table = self.query_one("#compare", DataTable)
        table.loading = False
        self.query_one("#compare-notes", Static).update(Text(f"cannot compare: {message}", style="red"))
        self.notify(message, title="cannot compare", severity="error")

    def show(self, comparison: Comparison) -> None:
        from engine.results.export import comparison_notes

        self.comparison = comparison
        headers, rows = comparison_table(comparison)
        table = self.query_one("#compare", DataTable)
        table.clear(columns=True)
        table.add_columns(*headers)
        for row in rows:
            table.add_row(*literal_cells(row))
        table.loading = False
        legend = [f"{label} = {name}" for label, name in zip(short_labels(self.models), self.models) if label != name]
        notes = legend + comparison_notes(comparison) + comparison.warnings
        self.query_one("#compare-notes", Static).update(Text("\n".join(notes), style="dim"))
        table.focus()
        wanted = [i for i, f in enumerate(comparison.flips) if self.flips_of in (f.dataset, f.file)]
        if wanted:
            self.flip_set = wanted[0]
            self.action_toggle_flips()

    def action_close(self) -> None:
        if self.showing_flips:
            self.action_toggle_flips()
            return
        self.app.pop_screen()

    # ------------------------------------------------------------------------------ flipped items

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_set", "flip", "arena"):
            return self.showing_flips  # hidden from the footer until the panel is open
        return True

    def action_toggle_flips(self) -> None:
        if self.comparison is None:
            self.notify("the comparison is not ready yet", severity="warning")
            return
        self.showing_flips = not self.showing_flips
        self.query_one("#compare-main").display = not self.showing_flips
        self.query_one("#flips").display = self.showing_flips
        self.refresh_bindings()
        if self.showing_flips:
            self.show_flip()
        else:
            self.query_one("#compare", DataTable).focus()

    def action_next_set(self) -> None:
        if self.comparison and self.comparison.flips:
            self.flip_set = (self.flip_set + 1) % len(self.comparison.flips)
            self.flip_item = 0
            self.show_flip()

    def action_flip(self, step: int) -> None:
        if not self.comparison or not self.comparison.flips:
            return
        pages = flip_pages(self.comparison.flips[self.flip_set])
        if pages:
            self.flip_item = (self.flip_item + step) % len(pages)
            self.show_flip()

    def action_arena(self) -> None:
        """Ask the highlighted flipped item again, both models side by side, beside their recorded predictions."""
        from tui.screens.arena import ArenaScreen

        if not self.comparison or not self.comparison.flips:
            return
        flips = self.comparison.flips[self.flip_set]
        pages = flip_pages(flips)
        if not pages:
            self.notify("no flipped item to ask", severity="warning")
            return
        _, item = pages[self.flip_item]
        self.app.push_screen(ArenaScreen([flips.reference, flips.model], item_ref=f"{flips.file}:{item.index}"))

    def show_flip(self) -> None:
        """Render the current flipped item: where it is, the prompt and gold, both outputs side by side."""
        from engine.results.export import shorten

        assert self.comparison is not None
        head, item_view = self.query_one("#flips-head", Static), self.query_one("#flips-item", Static)
        left, right = self.query_one("#flips-reference", Static), self.query_one("#flips-model", Static)
        if not self.comparison.flips:
            head.update(Text("No flipped items: no test set has per-item predictions of the same items for "
                             "two of these models.", style="yellow"))
            for widget in (item_view, left, right):
                widget.update("")
            return
        flips = self.comparison.flips[self.flip_set]
        labels = dict(zip(self.comparison.models, short_labels(self.comparison.models)))
        pages = flip_pages(flips, labels)
        title = Text(no_wrap=True, overflow="ellipsis")
        if pages:
            title.append(f"Flipped {self.flip_item + 1}/{len(pages)} ", style="bold")
            title.append("(n/p) · ")
        else:
            title.append("No flipped items ", style="bold")
        title.append(flips.dataset, style="bold cyan")
        title.append(f" {self.flip_set + 1}/{len(self.comparison.flips)} (t) · ")
        if not pages:
            head.update(title + Text(f"{labels[flips.model]} and {labels[flips.reference]} got the same items right"))
            for widget in (item_view, left, right):
                widget.update("")
            return
        direction, item = pages[self.flip_item]
        title.append(direction, style="magenta")
        head.update(title)
        item_view.update(Text.assemble((f"#{item.index}", "bold"), "  gold ", (shorten(item.gold, 40), "bold green"),
                                       ("  · a: ask both again, side by side (Arena)", "dim"), "\n", (shorten(item.prompt, 3 * max(self.size.width - 4, 20), keep_end=True),
                                              "dim")))
        for widget, name, side in ((left, flips.reference, item.reference), (right, flips.model, item.model)):
            answer = side.extracted if side.extracted is not None else side.pred
            right_answer = item in (flips.reference_only if name == flips.reference else flips.model_only)
            widget.update(Text.assemble((labels[name], "bold"), " · answer ",
                                        (str(answer), "bold green" if right_answer else "bold red"),
                                        "\n\n", str(side.output if side.output is not None else "–")))

    def action_export(self) -> None:
        from tui.modals.export import ExportModal

        if self.comparison is None:
            self.notify("the comparison is not ready yet", severity="warning")
            return
        stem = "compare-" + "-vs-".join(m[:40] for m in self.models[:3])

        def chosen(choice: tuple[str, Path] | None) -> None:
            if choice is not None:
                self.export(*choice)

        self.app.push_screen(ExportModal(self.ws, "Export the comparison", ["markdown", "latex", "csv", "json"],
                                         stem), chosen)

    @work(thread=True, group="compare-export", exit_on_error=False)
    def export(self, fmt: str, path: Path) -> None:
        from engine.results import export
        from engine.files import write_text

        assert self.comparison is not None
        render = {"markdown": export.comparison_markdown, "latex": export.comparison_latex,
                  "csv": export.comparison_csv, "json": export.comparison_json}[fmt]
        try:
            write_text(path, render(self.comparison))
        except OSError as exc:
            self.app.call_from_thread(self.notify, f"{path}: {exc}", title="not exported", severity="error")
            return
        self.app.call_from_thread(self.notify, f"wrote {path}", title="exported")
