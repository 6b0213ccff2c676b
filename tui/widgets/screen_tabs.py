"""The top line of every screen: the five screens with their keys (clickable), the active one lit (TUI)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

SCREENS = (("1", "models", "Models"), ("2", "experiments", "Experiments"), ("3", "jobs", "Jobs"),
           ("4", "results", "Results"), ("5", "chat", "Chat"))


class ScreenTabs(Static):
    """``1 Models  2 Experiments  3 Jobs  4 Results  5 Chat`` and the workspace name on the right."""

    DEFAULT_CSS = """
    ScreenTabs { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, active: str, workspace_name: str) -> None:
        super().__init__()
        self.active = active
        self.workspace_name = workspace_name

    def render(self) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        for key, mode, title in SCREENS:
            style = "bold reverse" if mode == self.active else ""
            line.append(f" {key} ", style=style or "bold cyan")
            line.append(f"{title} ", style=style)
            line.append(" ")
        line.append(f" {self.workspace_name}", style="dim")
        return line

    def on_click(self, event) -> None:
        offset = 0
        for key, mode, title in SCREENS:
            width = len(f" {key} {title}  ")
            if offset <= event.x < offset + width:
                self.app.switch_mode(mode)
                return
            offset += width
