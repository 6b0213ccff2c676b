"""Show rows in a DataTable without rebuilding it when only a few cells changed, keeping the cursor (TUI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

Cells = tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    """A table column: its key, header label, the narrowest terminal that still shows it, and a fixed
    width (None: as wide as its widest cell)."""

    key: str
    label: str
    min_screen_width: int = 0
    width: int | None = None


class TableSync:
    """Keeps a DataTable equal to the rows it is given, touching only what changed."""

    def __init__(self, table: DataTable) -> None:
        self.table = table
        self.shown: dict[str, Cells] = {}  # row key → the cells last put in the table

    def show(self, columns: list[Column], rows: list[tuple[str, Cells]]) -> None:
        """Make the table show ``rows`` ((key, cells) in order) under ``columns``.

        When the columns are unchanged and the rows shown are the first of ``rows`` (the same keys
        in the same order) only differing cells are updated (rows whose cells are the very same
        objects as last time are skipped) and the rest are appended, so a long table can be filled
        a part at a time; otherwise the table is rebuilt and the cursor goes back to the row it was
        on (by key) when that row remains.
        """
        table = self.table
        current_columns = [(str(key.value), str(column.label)) for key, column in table.columns.items()]
        wanted_columns = [(c.key, c.label) for c in columns]
        keys = [c.key for c in columns]
        current_keys = [str(row.key.value) for row in table.ordered_rows]
        if current_columns == wanted_columns and current_keys == [key for key, _ in rows[:len(current_keys)]]:
            for key, cells in rows[:len(current_keys)]:
                before = self.shown.get(key)
                if cells is before:
                    continue
                for column, value, old in zip(keys, cells, before or (None,) * len(cells)):
                    if value != old:  # a longer value widens its column ("queued" → "running")
                        table.update_cell(key, column, literal(value), update_width=True)
                self.shown[key] = cells
            for key, cells in rows[len(current_keys):]:
                table.add_row(*literal_cells(cells), key=key)
                self.shown[key] = cells
            return
        cursor_key = current_keys[table.cursor_row] if 0 <= table.cursor_row < len(current_keys) else None
        scroll_y = table.scroll_y
        table.clear(columns=current_columns != wanted_columns)
        if current_columns != wanted_columns:
            for column in columns:
                table.add_column(column.label, key=column.key, width=column.width)
        for key, cells in rows:
            table.add_row(*literal_cells(cells), key=key)
        self.shown = dict(rows)
        if cursor_key is not None and cursor_key in table.rows:
            table.move_cursor(row=table.get_row_index(cursor_key), animate=False, scroll=False)
            table.scroll_to(y=scroll_y, animate=False, immediate=True)


def literal(value: Any) -> Any:
    """A cell's text shown as written: DataTable reads a plain ``str`` as Rich markup, so a model folder, job
    error or dataset name holding ``[…]`` would be restyled, lose its brackets, or (``[/…]``) stop the screen."""
    return Text(value) if isinstance(value, str) else value


def literal_cells(cells: Cells) -> Cells:
    """Every ``str`` of ``cells`` as :func:`literal` text."""
    return tuple(literal(value) for value in cells)


def visible_columns(columns: list[Column], width: int) -> list[Column]:
    """The columns that fit a terminal ``width`` columns wide."""
    return [c for c in columns if width >= c.min_screen_width]


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (table cells size to their content)."""
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"
