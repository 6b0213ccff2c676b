"""Screen 5: a chat playground. Pick any model folder and optionally a task (its system prompt), type a
message, watch the answer stream in; ``ctrl+t`` shows the exact prompt the one prompt builder rendered
(what evaluation would send); ``ctrl+o`` opens the Arena (:mod:`tui.screens.arena`), models side by side. Generation runs in a ``llmtui chat-server`` child process
(:mod:`tui.chat_process`); switching model or leaving the screen ends it. Runs in the TUI process."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Select, Static

from tui.chat_process import ChatProcess, Reply
from tui.messages import WorkspaceChanged
from tui.screens.base import WorkspaceScreen

#: The task Select's value for "no system prompt".
NO_TASK = "-"
#: Decoding fields: widget id → (request key, type, default text).
SETTINGS = {"chat-temperature": ("temperature", float, "0"), "chat-top-p": ("top_p", float, "1"),
            "chat-max-tokens": ("max_new_tokens", int, "256")}


def model_folder_names(ws) -> list[str]:
    """The folders of ``Models/`` a chat can load (any kind; a broken one shows its load error), by name."""
    try:
        return sorted((p.name for p in ws.models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=str.lower)
    except OSError:
        return []


def read_settings(screen, fields: dict[str, tuple[str, type, str]]) -> dict[str, Any] | None:
    """The decoding settings typed in ``fields`` (widget id → request key, type, default text), or None after
    saying which one cannot be read."""
    values: dict[str, Any] = {}
    for wid, (key, kind, default) in fields.items():
        text = screen.query_one(f"#{wid}", Input).value.strip() or default
        try:
            values[key] = kind(text)
        except ValueError:
            screen.notify(f"{key}: {text!r} is not a number", title="cannot send", severity="error")
            return None
    return values


@dataclass
class Turn:
    """One message of the conversation as shown; ``widget`` is its place in the transcript."""

    role: str  # user | assistant
    text: str
    widget: Static
    note: str = ""


class ChatScreen(WorkspaceScreen):
    """Model and task pickers, decoding settings, the conversation, the prompt panel, the message box."""

    MODE = "chat"
    AUTO_FOCUS = "#chat-input"
    BINDINGS = [
        Binding("ctrl+t", "toggle_prompt", "Prompt", id="chat.prompt"),
        Binding("ctrl+l", "clear", "Clear", id="chat.clear"),
        Binding("ctrl+o", "arena", "Arena", id="chat.arena"),
        Binding("escape", "stop", "Stop / leave box", id="chat.stop"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.server: ChatProcess | None = None
        self.model: str | None = None  # the model the server was started for
        self.ready = False
        self.load_failed = False  # the model did not load: not retried on coming back
        self.tasks: dict[str, str] = {}  # task name → its system prompt
        self.turns: list[Turn] = []
        self.request_id = 0
        self.answering: int | None = None  # the request being answered
        self.prompt_text = ""
        self.load_started = 0.0
        self.load_timer: Any = None  # ticks the "loading … s" line while the server loads

    def compose(self) -> ComposeResult:
        yield self.tabs()
        with Vertical(id="chat-main"):
            with Horizontal(id="chat-pickers"):
                yield Select([], prompt="model…", id="chat-model", compact=True)
                yield Select([("no system prompt", NO_TASK)], value=NO_TASK, allow_blank=False, id="chat-task",
                             compact=True)
            with Horizontal(id="chat-settings"):
                for wid, (key, _, default) in SETTINGS.items():
                    yield Label({"temperature": "temp", "top_p": "top-p", "max_new_tokens": "max tokens"}[key],
                                classes="chat-setting-label")
                    yield Input(default, id=wid, compact=True, classes="chat-setting")
            yield Static("", id="chat-state")
            log = VerticalScroll(id="chat-log")
            log.can_focus = False  # tab goes from the settings to the message box
            yield log
            yield Static("", id="chat-prompt")
            yield Input(placeholder="pick a model, then type a message and press enter", id="chat-input")
        yield self.footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#chat-prompt", Static).display = False
        self.set_state("pick a model folder above (any kind: full, adapter, QLoRA, GPTQ/AWQ/HQQ, bnb)")
        self.load_choices()

    # ------------------------------------------------------------------------------ choices

    @work(thread=True, exclusive=True, group="chat-choices", exit_on_error=False)
    def load_choices(self) -> None:
        from engine.data.tasks import DatasetError, task_registry

        models = model_folder_names(self.ws)
        try:
            tasks = {name: task.system_prompt for name, task in task_registry(self.ws.datasets_dir).items()}
        except DatasetError as exc:
            tasks = {name: task.system_prompt for name, task in task_registry().items()}
            self.app.call_from_thread(self.notify, str(exc), title="custom datasets", severity="warning")
        self.app.call_from_thread(self.show_choices, models, tasks)

    def show_choices(self, models: list[str], tasks: dict[str, str]) -> None:
        picker = self.query_one("#chat-model", Select)
        current = picker.value
        picker.set_options([(name, name) for name in models])
        if current in models:
            picker.value = current
        self.tasks = tasks
        task = self.query_one("#chat-task", Select)
        chosen = task.value
        task.set_options([("no system prompt", NO_TASK), *((f"{name} system prompt", name) for name in tasks)])
        task.value = chosen if chosen in tasks else NO_TASK

    def on_workspace_changed(self, message: WorkspaceChanged) -> None:
        if "models" in message.parts:
            self.load_choices()

    # ------------------------------------------------------------------------------ the server

    @on(Select.Changed, "#chat-model")
    def model_chosen(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.model:
            self.start_server(event.value)
            self.query_one("#chat-input", Input).focus()  # type while it loads

    def start_server(self, model: str) -> None:
        """End the running server (if any) and start one for ``model``."""
        self.stop_server()
        self.model, self.ready, self.load_failed = model, False, False
        self.server = ChatProcess(self.ws, model, self._reply_from_thread)
        self.server.start()
        self.load_started = time.monotonic()
        self.set_state(f"loading {model}…")
        if self.load_timer is not None:
            self.load_timer.stop()
        # a real-size model takes tens of seconds to load on a CPU: show the time passing
        self.load_timer = self.set_interval(1.0, self._show_loading)

    def _show_loading(self) -> None:
        if self.server is None or self.ready or self.load_failed:
            self.load_timer.stop()
            return
        self.set_state(f"loading {self.model}… {time.monotonic() - self.load_started:.0f} s")

    def stop_server(self, *, wait: bool = False) -> None:
        """End the server; in the background unless ``wait`` (a busy one takes a moment to stop)."""
        server, self.server = self.server, None
        self.ready, self.answering = False, None
        if server is not None:
            if wait:
                server.stop()
            else:
                threading.Thread(target=server.stop, daemon=True, name="chat-stop").start()

    def _reply_from_thread(self, reply: Reply) -> None:
        server = self.server
        try:
            self.app.call_from_thread(self.handle_reply, reply, server)
        except RuntimeError:  # the app is closing
            pass

    def handle_reply(self, reply: Reply, server: ChatProcess | None) -> None:
        if server is not self.server:  # from a server that was replaced or stopped
            return
        kind = reply.get("type")
        if kind == "ready":
            self.ready = True
            self.query_one("#chat-input", Input).placeholder = "type a message, enter sends (ctrl+t: the prompt)"
            self.set_state(f"{reply.get('model')} ({reply.get('kind')}, {reply.get('device')}) ready, loaded in "
                           f"{time.monotonic() - self.load_started:.1f} s"
                           + ("" if reply.get("template") else " · no chat template: plain System/User/Assistant"))
        elif kind == "prompt":
            self.prompt_text = str(reply.get("text", ""))
            self.show_prompt()
        elif kind == "token" and reply.get("id") == self.answering and self.turns:
            self.turns[-1].text += str(reply.get("text", ""))
            self._draw(self.turns[-1])
        elif kind == "done" and reply.get("id") == self.answering:
            self.answering = None
            turn = self.turns[-1]
            turn.text = str(reply.get("text", turn.text))
            turn.note = f"{reply.get('tokens')} tokens · {reply.get('seconds')} s" + \
                (" · stopped" if reply.get("stopped") else "")
            self._draw(turn)
            self.set_state(f"{self.model} ready")
        elif kind == "error":
            if reply.get("fatal"):
                self.load_failed = True
                self.set_state(f"✗ {self.model} did not load: {reply.get('message')}", error=True)
                self.stop_server()
            else:
                self.notify(str(reply.get("message")), title="chat", severity="error")
            if reply.get("id") is not None and reply.get("id") == self.answering:
                self.answering = None
                if self.turns and self.turns[-1].role == "assistant" and not self.turns[-1].text:
                    self.turns.pop().widget.remove()
        elif kind == "exited":
            tail = str(reply.get("stderr", "")).strip().splitlines()[-3:]
            self.set_state(f"✗ the model server for {self.model} exited (code {reply.get('code')})"
                           + (f": {' / '.join(tail)}" if tail else ""), error=True)
            self.server, self.ready, self.answering, self.load_failed = None, False, None, True

    # ------------------------------------------------------------------------------ conversation

    def set_state(self, text: str, *, error: bool = False) -> None:
        self.query_one("#chat-state", Static).update(Text(text, style="red" if error else "dim"))

    def settings(self) -> dict[str, Any] | None:
        return read_settings(self, SETTINGS)

    def system_prompt(self) -> str | None:
        task = self.query_one("#chat-task", Select).value
        return self.tasks.get(task) if isinstance(task, str) and task != NO_TASK else None

    def history(self) -> list[dict[str, str]]:
        return [{"role": t.role, "content": t.text} for t in self.turns if t.text or t.role == "user"]

    @on(Input.Submitted, "#chat-input")
    def send_message(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.server is None or not self.ready:
            self.notify("pick a model and wait until it is ready" if self.server is None or self.model is None
                        else f"{self.model} is still loading", severity="warning")
            return
        if self.answering is not None:
            self.notify("the model is still answering (escape stops it)", severity="warning")
            return
        settings = self.settings()
        if settings is None:
            return
        event.input.value = ""
        self._add_turn("user", text)
        self.request_id += 1
        self.answering = self.request_id
        self.server.send({"type": "generate", "id": self.request_id, "messages": self.history(),
                          "system": self.system_prompt(), **settings})
        self._add_turn("assistant", "")
        self.set_state(f"{self.model} answering… (escape stops)")

    def _add_turn(self, role: str, text: str) -> None:
        widget = Static("", classes=f"chat-turn chat-{role}")
        turn = Turn(role, text, widget)
        self.turns.append(turn)
        log = self.query_one("#chat-log", VerticalScroll)
        log.mount(widget)
        self._draw(turn)

    def _draw(self, turn: Turn) -> None:
        text = Text()
        text.append("you  " if turn.role == "user" else "model ", style="bold cyan" if turn.role == "user"
                    else "bold magenta")
        text.append(turn.text or ("…" if turn.role == "assistant" else ""))
        if turn.note:
            text.append(f"  ({turn.note})", style="dim")
        turn.widget.update(text)
        self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)

    def show_prompt(self) -> None:
        panel = self.query_one("#chat-prompt", Static)
        if panel.display:
            title = Text("rendered prompt (what evaluation would send)\n", style="bold")
            panel.update(title + Text(self.prompt_text or "(send a message, or type one: it is rendered here)",
                                      style="" if self.prompt_text else "dim"))

    # ------------------------------------------------------------------------------ actions

    def action_toggle_prompt(self) -> None:
        panel = self.query_one("#chat-prompt", Static)
        panel.display = not panel.display
        draft = self.query_one("#chat-input", Input).value.strip()
        if panel.display and self.server is not None and self.ready and self.answering is None and draft:
            self.request_id += 1  # render what sending the draft would send
            self.server.send({"type": "render", "id": self.request_id,
                              "messages": [*self.history(), {"role": "user", "content": draft}],
                              "system": self.system_prompt()})
        self.show_prompt()

    def action_clear(self) -> None:
        if self.answering is not None:
            self.notify("the model is still answering (escape stops it)", severity="warning")
            return
        for turn in self.turns:
            turn.widget.remove()
        self.turns, self.prompt_text = [], ""
        self.show_prompt()

    def action_arena(self) -> None:
        """Open the Arena (side by side) with this chat's model as its first."""
        from tui.screens.arena import ArenaScreen

        self.app.push_screen(ArenaScreen([self.model] if self.model else []))

    def action_stop(self) -> None:
        """Stop the answer being generated; otherwise leave the message box (so 1–5 switch screens)."""
        if self.server is not None and self.answering is not None:
            self.server.send({"type": "stop"})
        else:
            self.set_focus(None)

    # ------------------------------------------------------------------------------ leaving

    def on_screen_suspend(self) -> None:
        """Leaving the screen ends the server (it holds the model's memory); coming back starts it again."""
        self.stop_server()

    def on_screen_resume(self) -> None:
        if self.model is not None and self.server is None and not self.load_failed:
            self.start_server(self.model)

    def on_unmount(self) -> None:
        self.stop_server(wait=True)
