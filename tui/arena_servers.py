"""The Arena's model servers as seen from the TUI or the ``llmtui chat A B`` command: one ``llmtui chat-server``
child per model (:class:`tui.chat_process.ChatProcess`), placed as :func:`engine.arena.placements` says,
each asked the same question with the same decoding, their replies handed to a callback with the column's
number. Runs in the TUI process or the CLI process; neither imports torch."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from engine.arena import ArenaColumn, Placement
from engine.workspace import Workspace
from tui.chat_process import ChatProcess, Reply


class ArenaServers:
    """Chat servers for ``models`` (in columns 0, 1, …); :meth:`stop` ends every one of them."""

    def __init__(self, ws: Workspace, models: list[str], placements: list[Placement],
                 on_reply: Callable[[int, Reply], None], *, trust_remote_code: bool = False) -> None:
        self.servers = [ChatProcess(ws, model, lambda reply, column=column: on_reply(column, reply),
                                    device=placement.device, threads=placement.threads, env=placement.env,
                                    trust_remote_code=trust_remote_code)
                        for column, (model, placement) in enumerate(zip(models, placements, strict=True))]

    def start(self) -> None:
        for server in self.servers:
            server.start()

    @property
    def pids(self) -> list[int]:
        return [server.pid for server in self.servers if server.pid is not None]

    def ask(self, column: int, request: dict[str, Any]) -> None:
        self.servers[column].send(request)

    def stop_answers(self) -> None:
        for server in self.servers:
            if server.running():
                server.send({"type": "stop"})

    def stop(self) -> None:
        """End every server, all at once (each may take a moment), and wait for them."""
        threads = [threading.Thread(target=server.stop, daemon=True) for server in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def answer_once(ws: Workspace, models: list[str], placements: list[Placement], request: dict[str, Any],
                timeout_s: float | None = None, *, trust_remote_code: bool = False) -> list[ArenaColumn]:
    """Start a server per model, send ``request`` (a ``generate`` request without ``id``) to each as soon as it
    is ready, wait until every column is finished (answered or failed), end the servers; the columns in order.
    A server still busy after ``timeout_s`` is stopped and its column marked failed."""
    columns = [ArenaColumn(model) for model in models]
    changed = threading.Condition()

    def on_reply(column: int, reply: Reply) -> None:
        with changed:
            was_ready = columns[column].state == "loading" and reply.get("type") == "ready"
            columns[column].apply(reply)
            if was_ready:
                columns[column].start_answer()
                servers.ask(column, {**request, "type": "generate", "id": 1})
            changed.notify_all()

    servers = ArenaServers(ws, models, placements, on_reply, trust_remote_code=trust_remote_code)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        with changed:
            servers.start()
            while not all(column.finished for column in columns):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    for column in columns:
                        if not column.finished:
                            column.state, column.error = "failed", f"no answer within {timeout_s:g} s"
                    break
                changed.wait(left)
    finally:
        servers.stop()
    return columns
