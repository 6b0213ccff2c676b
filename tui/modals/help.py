"""``?``: every key that works here, with what it does, plus where the workspace is (TUI)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label


class HelpModal(ModalScreen[None]):
    """A table of (key, action, scope) rows; any of ``escape``, ``?``, ``q`` closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str]], workspace: str) -> None:
        super().__init__()
        self.rows = rows
        self.workspace = workspace

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"[b]Keys[/b]  ·  workspace {self.workspace}", classes="question", markup=True)
            table: DataTable = DataTable(id="keys", cursor_type="row", zebra_stripes=True)
            table.add_columns("key", "does", "where")
            for row in self.rows:
                table.add_row(*row)
            yield table
            yield Label("ctrl+p opens the command palette with every action · escape closes", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
