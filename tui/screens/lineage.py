"""The lineage view of one model (TUI process): the degradation matrix of the model and every descendant,
computed by :mod:`engine.results.lineage` in a worker; pushed from the Results screen with ``l``."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine.results.lineage import LineageMatrix
from engine.workspace import Workspace
from tui.screens.compare import short_labels
from tui.widgets.table_sync import clip, literal_cells

#: Model names are clipped so the values stay on screen (the parent column, last, holds the rest).
NAME_MIN, NAME_MAX, VALUE_WIDTH = 24, 60, 26


def lineage_table(matrix: LineageMatrix, width: int = 80) -> tuple[list[str], list[list[Text]]]:
    """Headers and styled cells (values before the parent, so they fit 80 columns): significant drops red,
    significant gains green, guard warnings yellow."""
    from engine.results.export import lineage_cell_text

    headers = ["model", *[f"{name} {metric}" for name, metric in matrix.columns.items()], "parent"]
    name_width = min(NAME_MAX, max(NAME_MIN, width - VALUE_WIDTH * len(matrix.columns) - 4))
    # Names without the parts every row shares (the title names the model in full).
    names = [row.model for row in matrix.rows]
    labels = dict(zip(names, short_labels(names, name_width))) if len(names) > 1 else {}
    rows = []
    for row in matrix.rows:
        label = labels.get(row.model, row.model)
        name = clip("  " * row.depth + label, name_width) + ("" if row.tested else " (untested)")
        cells = [Text(name, style="" if row.tested else "dim")]
        for name in matrix.columns:
            cell = row.cells[name]
            style = "yellow" if cell.warnings else ""
            if cell.significant and cell.delta is not None:
                style = "bold red" if cell.delta < 0 else "bold green"
            cells.append(Text(lineage_cell_text(cell), style=style, justify="right"))
        rows.append([*cells, Text(labels.get(row.parent or "", row.parent or "–"), style="dim")])
    return headers, rows


class LineageScreen(Screen):
    """A model, its fine-tunes and their PTQ variants: each test set's headline metric, Δ and p vs the parent."""

    BINDINGS = [Binding("escape,q", "close", "Back", id="lineage.close")]

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self.matrix: LineageMatrix | None = None

    @property
    def ws(self) -> Workspace:
        return self.app.ws  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        with Vertical(id="lineage-main"):
            yield Static(Text.assemble(("Lineage of ", "bold"), (self.model, "bold cyan")), id="lineage-title")
            table: DataTable = DataTable(id="lineage", cursor_type="row", zebra_stripes=True)
            table.loading = True
            yield table
            yield Static("", id="lineage-notes")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        from engine.results.lineage import LineageError, lineage_matrix

        try:
            matrix = lineage_matrix(self.ws, self.model)
        except (LineageError, OSError) as exc:
            self.app.call_from_thread(self.failed, str(exc))
            return
        self.app.call_from_thread(self.show, matrix)

    def failed(self, message: str) -> None:
        self.query_one("#lineage", DataTable).loading = False
        self.query_one("#lineage-notes", Static).update(Text(f"no lineage: {message}", style="red"))

    def show(self, matrix: LineageMatrix) -> None:
        from engine.results.export import lineage_notes

        self.matrix = matrix
        headers, rows = lineage_table(matrix, self.size.width or 80)
        table = self.query_one("#lineage", DataTable)
        table.clear(columns=True)
        table.add_columns(*headers)
        for row in rows:
            table.add_row(*literal_cells(row))
        table.loading = False
        notes = lineage_notes(matrix)
        if len(matrix.rows) == 1:
            notes.insert(0, f"{self.model} has no descendants: no model's training or quantization metadata names it")
        self.query_one("#lineage-notes", Static).update(Text("\n".join(notes), style="dim"))
        table.focus()

    def action_close(self) -> None:
        self.app.pop_screen()
