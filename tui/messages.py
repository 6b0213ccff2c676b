"""Messages the app sends to its screens."""

from __future__ import annotations

from textual.message import Message


class WorkspaceChanged(Message):
    """Something in the workspace changed on disk: ``parts`` ⊆ {models, metrics, queue, experiments}."""

    def __init__(self, parts: frozenset[str]) -> None:
        super().__init__()
        self.parts = parts
