"""Ask for a name (save preset as, duplicate preset, export file); the caller's check runs as you type (TUI)."""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class NamePrompt(ModalScreen[str | None]):
    """Dismisses with the entered name, or None on ``escape``.

    ``check(name)`` returns a problem to show under the input (the name is refused) or "" when fine.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title: str, *, value: str = "", check: Callable[[str], str] | None = None,
                 hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.initial = value
        self.check = check or (lambda name: "" if name.strip() else "type a name")
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="question")
            yield Input(self.initial, id="name", select_on_focus=True)
            yield Label(self.hint, id="problem", classes="hint")

    def on_input_changed(self, event: Input.Changed) -> None:
        problem = self.check(event.value)
        label = self.query_one("#problem", Label)
        label.update(problem or self.hint)
        label.set_class(bool(problem), "error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        problem = self.check(event.value)
        if problem:
            self.query_one("#problem", Label).update(problem)
            self.query_one("#problem", Label).add_class("error")
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
