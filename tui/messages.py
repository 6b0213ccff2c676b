"""Messages the app sends to its screens (TUI process)."""

from __future__ import annotations

from textual.message import Message


class WorkspaceChanged(Message, bubble=False):
    """Something in the workspace changed on disk: ``parts`` ⊆ {models, metrics, queue, experiments}.

    The app sends one to each main screen; it does not bubble back up.
    """

    def __init__(self, parts: frozenset[str]) -> None:
        super().__init__()
        self.parts = parts
