"""The Chat screen's model server as seen from the TUI: ``llmtui chat-server MODEL`` started as a child
process, requests written to its stdin, replies read from its stdout by a thread and handed to a callback
(the protocol is :mod:`engine.runs.chat`'s). Runs in the TUI process, which never imports torch."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Callable

from engine.workspace import Workspace

Reply = dict[str, Any]
#: Lines of the server's stderr kept to explain a crash.
STDERR_LINES = 40


class ChatProcess:
    """One chat server for one model; :meth:`stop` ends it (and its process group)."""

    def __init__(self, ws: Workspace, model: str, on_reply: Callable[[Reply], None], *, device: str | None = None,
                 threads: int | None = None, env: dict[str, str] | None = None,
                 trust_remote_code: bool = False) -> None:
        self.ws = ws
        self.model = model
        self.on_reply = on_reply
        self.device = device  # None: the server's default (cuda when available)
        self.threads = threads  # None: torch's default
        self.env = env or {}  # added to this process's environment (the GPU it may use)
        self.trust_remote_code = trust_remote_code  # only ever from the user's own flag
        self.process: subprocess.Popen | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        """Start the server; its ``ready`` (or ``error``) reply follows once the model is loaded."""
        command = [sys.executable, "-m", "tui.cli", "-w", str(self.ws.root), "chat-server", self.model]
        command += ["--device", self.device] if self.device else []
        command += ["--threads", str(self.threads)] if self.threads else []
        command += ["--trust-remote-code"] if self.trust_remote_code else []
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
                                        env={**os.environ, **self.env} if self.env else None,
                                        start_new_session=True)  # its own group: stop() ends everything it started
        threading.Thread(target=self._read_replies, daemon=True, name=f"chat-{self.model}").start()
        threading.Thread(target=self._read_stderr, daemon=True, name=f"chat-err-{self.model}").start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, request: dict[str, Any]) -> None:
        """Write one request; a server that is gone is reported through the callback."""
        with self._lock:
            if not self.running() or self.process is None or self.process.stdin is None:
                self.on_reply({"type": "error", "id": request.get("id"), "message": "the model server is not running"})
                return
            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
            except (OSError, ValueError) as exc:
                self.on_reply({"type": "error", "id": request.get("id"), "message": f"model server: {exc}"})

    def stop(self, timeout_s: float = 1.0) -> None:
        """End the server: close its input (an idle server exits), then SIGTERM (one busy generating),
        then SIGKILL its group, waiting up to ``timeout_s`` after each."""
        process = self.process
        if process is None:
            return
        self._stopping = True
        with self._lock:
            try:
                if process.stdin:
                    process.stdin.close()
            except OSError:
                pass  # already gone
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
            try:
                process.wait(timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue

    def _read_replies(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # not protocol (the server keeps fd 1 for replies; this should not happen)
            if isinstance(reply, dict):
                self.on_reply(reply)
        code = self.process.wait()
        if not self._stopping:
            self.on_reply({"type": "exited", "code": code, "stderr": "\n".join(self.stderr_tail)})

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_tail.append(line.rstrip("\n"))
