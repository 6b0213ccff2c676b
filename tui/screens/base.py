"""What every one of the four main screens shares: the workspace, the tab line, palette commands (TUI)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.screen import Screen
from textual.widgets import Footer

from engine.workspace import Workspace
from tui.widgets.screen_tabs import ScreenTabs

if TYPE_CHECKING:
    from tui.app import LlmTuiApp


class WorkspaceScreen(Screen):
    """A main screen: registers with the app for :class:`tui.messages.WorkspaceChanged` messages."""

    #: The app mode this screen is the base of.
    MODE: ClassVar[str] = ""
    #: Actions offered in the command palette that have no key: (title, action, help).
    PALETTE: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    @property
    def llmtui(self) -> "LlmTuiApp":
        from tui.app import LlmTuiApp

        return cast(LlmTuiApp, self.app)

    @property
    def ws(self) -> Workspace:
        return self.llmtui.ws

    def tabs(self) -> ScreenTabs:
        return ScreenTabs(self.MODE, self.ws.root.name)

    def footer(self) -> Footer:
        """The key line: compact, so every shown key fits 80 columns (``?`` lists them all)."""
        return Footer(compact=True)

    def on_mount(self) -> None:
        self.llmtui.register_screen(self)

    def unsaved_changes(self) -> str:
        """What would be lost by quitting now ("" when nothing)."""
        return ""
