"""``x``: choose an export format and a file inside the workspace (TUI)."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from engine.workspace import Workspace

EXTENSIONS = {"csv": ".csv", "markdown": ".md", "latex": ".tex", "json": ".json"}


def export_target(ws: Workspace, text: str) -> tuple[Path | None, str]:
    """A file name typed by the user → (absolute path inside the workspace, "") or (None, problem)."""
    text = text.strip()
    if not text:
        return None, "type a file name"
    path = Path(text).expanduser()
    path = path if path.is_absolute() else ws.root / path
    if not ws.contains(path):
        return None, f"{text} is outside the workspace {ws.root}"
    if path.is_dir():
        return None, f"{text} is a folder; name a file"
    return path, ""


class ExportModal(ModalScreen[tuple[str, Path] | None]):
    """Dismisses with (format, path) or None; the path is relative to the workspace unless absolute."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="export.cancel")]
    AUTO_FOCUS = "#path"

    def __init__(self, ws: Workspace, title: str, formats: list[str], stem: str) -> None:
        super().__init__()
        self.ws = ws
        self.title_text = title
        self.formats = formats
        self.stem = stem

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="question")
            yield Select([(f, f) for f in self.formats], value=self.formats[0], allow_blank=False, id="format",
                         compact=True)
            yield Input(self._default(self.formats[0]), id="path", compact=True)
            yield Label("relative to the workspace; an existing file is replaced", id="problem", classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Cancel", id="cancel")

    def _default(self, fmt: str) -> str:
        return f"Testing/{self.stem}{EXTENSIONS[fmt]}"

    @on(Select.Changed, "#format")
    def format_changed(self, event: Select.Changed) -> None:
        path = self.query_one("#path", Input)
        if path.value in {self._default(f) for f in self.formats}:
            path.value = self._default(str(event.value))

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#export")
    def submit(self) -> None:
        path, problem = export_target(self.ws, self.query_one("#path", Input).value)
        if path is None:
            label = self.query_one("#problem", Label)
            label.update(problem)
            label.add_class("error")
            return
        self.dismiss((str(self.query_one("#format", Select).value), path))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
