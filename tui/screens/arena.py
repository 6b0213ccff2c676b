"""The Arena, the Chat screen's side-by-side mode (``ctrl+o`` there, or ``a`` on a flipped item of a comparison):
two or three model folders answer the same prompt at once, each streamed from its own ``llmtui chat-server``
child (:mod:`tui.arena_servers`), with the same decoding. Per column: time to first token, tokens/s, tokens,
the answer the task's scorer extracts, right or wrong for a test item, and the model's recorded prediction
with a flag when the fresh greedy answer differs from it. ``ctrl+t`` shows each column's rendered prompt.
Leaving the Arena (or switching screens) ends its children. Runs in the TUI process."""

from __future__ import annotations

import threading
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select, Static

from engine.arena import MAX_MODELS, MIN_MODELS, ArenaColumn, ArenaError, ArenaItem
from engine.results.export import shorten
from engine.workspace import Workspace
from tui.chat_process import Reply
from tui.screens.chat import NO_TASK, model_folder_names, read_settings
from tui.widgets.screen_tabs import ScreenTabs

#: The third model picker's value for "two models only".
NO_MODEL = "-"
#: Decoding fields: widget id → (request key, type, default text); the same for every column.
SETTINGS = {"arena-temperature": ("temperature", float, "0"), "arena-top-p": ("top_p", float, "1"),
            "arena-seed": ("seed", int, "0"), "arena-max-tokens": ("max_new_tokens", int, "256")}
LABELS = {"temperature": "temp", "top_p": "top-p", "seed": "seed", "max_new_tokens": "max tokens"}


class ArenaScreen(Screen):
    """Pushed over the Chat screen (``models``: the chat's model) or a comparison (``item_ref``: the flipped
    test item, ``TASK:INDEX``, asked as soon as the models are loaded). Not a main screen: pushed Arenas
    come and go, so none registers for workspace changes."""

    AUTO_FOCUS = "#arena-input"
    BINDINGS = [
        Binding("ctrl+t", "toggle_prompts", "Prompts", id="arena.prompts"),
        Binding("escape", "stop_or_leave", "Stop / leave box / back", id="arena.back"),
    ]

    def __init__(self, models: list[str] | None = None, item_ref: str | None = None) -> None:
        super().__init__()
        self.initial_models = list(models or [])[:MAX_MODELS]
        self.item_ref = item_ref
        self.item: ArenaItem | None = None
        self.servers: Any = None  # tui.arena_servers.ArenaServers, imported with the first start
        self.columns: list[ArenaColumn] = []
        self.request: dict[str, Any] | None = None  # the question being answered
        self.asked: set[int] = set()  # columns the current question was sent to
        self.request_id = 0
        self.showing_prompts = False

    @property
    def ws(self) -> Workspace:
        return self.app.ws  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield ScreenTabs("chat", self.ws.root.name)  # Chat lit: the Arena is its side-by-side mode
        with Vertical(id="arena-main"):
            with Horizontal(id="arena-pickers"):
                for i in range(MAX_MODELS):
                    if i < MIN_MODELS:
                        yield Select([], prompt=f"model {'ABC'[i]}…", id=f"arena-model-{i}", compact=True,
                                     classes="arena-model")
                    else:
                        yield Select([("no third model", NO_MODEL)], value=NO_MODEL, allow_blank=False,
                                     id=f"arena-model-{i}", compact=True, classes="arena-model")
                yield Select([("no task", NO_TASK)], value=NO_TASK, allow_blank=False, id="arena-task", compact=True)
            with Horizontal(id="arena-settings"):
                for wid, (key, _, default) in SETTINGS.items():
                    yield Label(LABELS[key], classes="chat-setting-label")
                    yield Input(default, id=wid, compact=True, classes="chat-setting")
            yield Static("", id="arena-state")
            with Horizontal(id="arena-columns"):
                for i in range(MAX_MODELS):
                    column = VerticalScroll(id=f"arena-column-{i}", classes="arena-column")
                    column.can_focus = False  # tab goes from the settings to the message box
                    with column:
                        yield Static("", id=f"arena-head-{i}", classes="arena-head")
                        yield Static("", id=f"arena-body-{i}", classes="arena-body")
                        yield Static("", id=f"arena-foot-{i}", classes="arena-foot")
                        # below the answer and its numbers, so they stay in sight at 80×24
                        yield Static("", id=f"arena-prompt-{i}", classes="arena-prompt")
            yield Input(placeholder="pick two or three models, then type once and press enter", id="arena-input")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for i in range(MAX_MODELS):
            self.query_one(f"#arena-column-{i}").display = False
            self.query_one(f"#arena-prompt-{i}").display = False
        self.set_state("pick two or three model folders (any kind); they answer side by side, each in its own process")
        self.load_choices()

    # ------------------------------------------------------------------------------ choices

    @work(thread=True, exclusive=True, group="arena-choices", exit_on_error=False)
    def load_choices(self) -> None:
        from engine.arena import load_arena_item
        from engine.data.tasks import DatasetError, task_registry

        models = model_folder_names(self.ws)
        try:
            tasks = list(task_registry(self.ws.datasets_dir))
        except DatasetError:
            tasks = list(task_registry())
        item, problem = None, ""
        if self.item_ref:
            try:
                item = load_arena_item(self.ws, self.item_ref, self.initial_models)
            except ArenaError as exc:
                problem = str(exc)
        self.app.call_from_thread(self.show_choices, models, tasks, item, problem)

    def show_choices(self, models: list[str], tasks: list[str], item: ArenaItem | None, problem: str) -> None:
        self.item = item
        with self.prevent(Select.Changed):  # one start once everything is set, not one per picker
            for i in range(MAX_MODELS):
                picker = self.query_one(f"#arena-model-{i}", Select)
                extra = [("no third model", NO_MODEL)] if i >= MIN_MODELS else []
                picker.set_options([*extra, *((name, name) for name in models)])
                if i < len(self.initial_models) and self.initial_models[i] in models:
                    picker.value = self.initial_models[i]
                elif i >= MIN_MODELS:
                    picker.value = NO_MODEL
            task = self.query_one("#arena-task", Select)
            task.set_options([("no task", NO_TASK), *((name, name) for name in tasks)])
            task.value = item.task.name if item is not None and item.task.name in tasks else NO_TASK
        if item is not None:
            self.query_one("#arena-max-tokens", Input).value = str(item.task.max_new_tokens)  # evaluation's limit
            self.query_one("#arena-input", Input).placeholder = \
                f"enter asks {item.ref} again; or type a prompt of your own"
        if problem:
            self.notify(problem, title="cannot open the item", severity="error")
        self.start_servers()

    @on(Select.Changed, ".arena-model")
    def models_chosen(self) -> None:
        if self.chosen_models() != [c.model for c in self.columns]:
            self.item = None  # the recorded predictions were those of the models the item came with
            self.start_servers()

    @on(Select.Changed, "#arena-task")
    def task_chosen(self) -> None:
        for index in range(len(self.columns)):  # the extracted answers are the task's scorer's
            self.draw(index)

    def chosen_models(self) -> list[str]:
        values = [self.query_one(f"#arena-model-{i}", Select).value for i in range(MAX_MODELS)]
        chosen = [v for v in values if isinstance(v, str) and v != NO_MODEL]
        return list(dict.fromkeys(chosen))  # a model picked twice answers once

    # ------------------------------------------------------------------------------ the servers

    def start_servers(self) -> None:
        """End the running servers and start one per chosen model (when two or three are chosen)."""
        from engine.arena import workspace_placements
        from tui.arena_servers import ArenaServers

        self.stop_servers()
        models = self.chosen_models()
        self.show_columns([ArenaColumn(model) for model in models] if len(models) >= MIN_MODELS else [])
        if not self.columns:
            return
        inventory = self.app.gpu_inventory  # type: ignore[attr-defined]
        placed = workspace_placements(self.ws, len(models), inventory)
        self.servers = ArenaServers(self.ws, models, placed, self._reply_from_thread)
        self.servers.start()
        if self.item is None:
            self.query_one("#arena-input", Input).placeholder = "type once, enter asks every model (ctrl+t: prompts)"
        where = ", ".join(dict.fromkeys(f"GPU {p.env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in p.env
                                        else f"CPU, {p.threads} thread(s) each" for p in placed))
        self.set_state(f"loading {len(models)} models at once ({where})…")
        self.request = None  # new servers answer what is asked next, not what the previous ones were asked
        if self.item is not None:
            self.ask_item()
        for i in range(len(self.columns)):
            self.draw(i)

    def show_columns(self, columns: list[ArenaColumn]) -> None:
        self.columns = columns
        for i in range(MAX_MODELS):
            self.query_one(f"#arena-column-{i}").display = i < len(self.columns)

    def stop_servers(self, *, wait: bool = False) -> None:
        servers, self.servers = self.servers, None
        self.asked = set()
        if servers is not None:
            if wait:
                servers.stop()
            else:
                threading.Thread(target=servers.stop, daemon=True, name="arena-stop").start()

    def _reply_from_thread(self, column: int, reply: Reply) -> None:
        servers = self.servers
        try:
            self.app.call_from_thread(self.handle_reply, column, reply, servers)
        except RuntimeError:  # the app is closing
            pass

    def handle_reply(self, index: int, reply: Reply, servers: Any) -> None:
        if servers is not self.servers or index >= len(self.columns):  # from servers that were replaced
            return
        column = self.columns[index]
        column.apply(reply)
        if reply.get("type") == "ready":
            self.send_to(index)
        self.draw(index)
        self.summarize()

    # ------------------------------------------------------------------------------ asking

    def settings(self) -> dict[str, Any] | None:
        return read_settings(self, SETTINGS)

    def task_name(self) -> str | None:
        task = self.query_one("#arena-task", Select).value
        return task if isinstance(task, str) and task != NO_TASK else None

    def ask_item(self) -> None:
        assert self.item is not None
        settings = self.settings()
        if settings is not None:
            self.ask({"messages": self.item.messages, "system": self.item.system, **settings})

    def ask(self, request: dict[str, Any]) -> None:
        """Send ``request`` to every column: now to those that are ready, on ``ready`` to those loading."""
        self.request_id += 1
        self.request = {**request, "type": "generate", "id": self.request_id}
        self.asked = set()
        for index in range(len(self.columns)):
            self.send_to(index)
            self.draw(index)
        self.summarize()

    def send_to(self, index: int) -> None:
        column = self.columns[index]
        if self.request is None or index in self.asked or column.state not in ("ready", "done") or self.servers is None:
            return
        self.asked.add(index)
        column.start_answer()
        self.servers.ask(index, self.request)

    @on(Input.Submitted, "#arena-input")
    def send_message(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not self.columns:
            self.notify("pick two or three models first", severity="warning")
            return
        if any(c.state == "answering" for c in self.columns):
            self.notify("the models are still answering (escape stops them)", severity="warning")
            return
        if not text:
            if self.item is not None:
                self.ask_item()
            return
        settings = self.settings()
        if settings is None:
            return
        from engine.data.tasks import DatasetError, get_task

        task = self.task_name()
        try:
            system = get_task(task, self.ws.datasets_dir).system_prompt if task else None
        except DatasetError as exc:
            self.notify(str(exc), severity="error")
            return
        event.input.value = ""
        self.item = None  # a prompt of one's own: no gold, nothing recorded
        self.ask({"messages": [{"role": "user", "content": text}], "system": system, **settings})

    # ------------------------------------------------------------------------------ drawing

    def set_state(self, text: str | Text, *, error: bool = False) -> None:
        self.query_one("#arena-state", Static).update(text if isinstance(text, Text) else
                                                      Text(text, style="red" if error else "dim"))

    def summarize(self) -> None:
        """The state line: the item asked (with its gold), or what the columns are doing."""
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.item is not None:
            line.append(f"{self.item.ref} ", style="bold cyan")
            line.append("gold ")
            line.append(shorten(self.item.item.answer, 30), style="bold green")
            line.append(" · the evaluation prompt (ctrl+t) · ", style="dim")
        states = [c.state for c in self.columns]
        if "loading" in states:
            line.append(f"{states.count('loading')} loading…", style="dim")
        elif "answering" in states:
            line.append("answering… (escape stops)", style="dim")
        else:
            line.append("type once, enter asks every model", style="dim")
        self.set_state(line)

    def draw(self, index: int) -> None:
        column = self.columns[index]
        task_name = self.task_name()
        from engine.data.tasks import DatasetError, get_task

        try:
            task = get_task(task_name, self.ws.datasets_dir) if task_name else None
        except DatasetError:
            task = None
        greedy = (self.request or {}).get("temperature", 0) == 0
        outcome = column.outcome(task, self.item, greedy)
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(column.model, style="bold")
        head.append("  " + {"loading": "loading…", "answering": "answering…", "failed": "✗ failed"}.get(
            column.state, f"{column.kind}, {column.device}"), style="red" if column.state == "failed" else "dim")
        self.query_one(f"#arena-head-{index}", Static).update(head)
        self.query_one(f"#arena-prompt-{index}", Static).update(Text(column.prompt or "(not rendered yet)"))
        body = Text(column.text)
        if column.error:
            body.append(("\n" if column.text else "") + column.error, style="red")
        self.query_one(f"#arena-body-{index}", Static).update(body)
        foot = Text()
        if column.state == "done":
            foot.append(f"first token {column.first_token_s} s · {column.tokens_per_s} tok/s · "
                        f"{column.tokens} tokens" + (" · stopped" if column.stopped else ""), style="dim")
        if task is not None and column.state == "done":
            if outcome.extracted is None:
                foot.append("\nno boxed answer", style="yellow")
            else:
                foot.append("\nanswer ")
                foot.append(outcome.extracted, style="bold")
            if outcome.correct is not None:
                foot.append(" ✓ right" if outcome.correct else " ✗ wrong", style="green" if outcome.correct else "red")
        if self.item is not None:
            recorded = outcome.recorded
            foot.append("\nrecorded: ", style="bold")
            if recorded is None:
                foot.append("no prediction of this item", style="dim")
            else:
                foot.append(f"answer {recorded.get('extracted')} "
                            f"{'✓' if recorded.get('correct') else '✗'}\n", style="bold")
                foot.append(shorten(recorded.get("output"), 400), style="dim")
            if outcome.reproduces_recorded is True:
                foot.append("\n= reproduces the recorded prediction", style="green")
            elif outcome.reproduces_recorded is False:
                foot.append("\n≠ differs from the recorded prediction: the evaluation is not reproducible",
                            style="bold red")
        self.query_one(f"#arena-foot-{index}", Static).update(foot)

    # ------------------------------------------------------------------------------ keys

    def action_toggle_prompts(self) -> None:
        self.showing_prompts = not self.showing_prompts
        for i in range(MAX_MODELS):
            self.query_one(f"#arena-prompt-{i}").display = self.showing_prompts

    def action_stop_or_leave(self) -> None:
        """Stop the answers being generated; else leave the message box; else go back."""
        if self.servers is not None and any(c.state == "answering" for c in self.columns):
            self.servers.stop_answers()
        elif isinstance(self.focused, Input):
            self.set_focus(None)
        else:
            self.app.pop_screen()

    # ------------------------------------------------------------------------------ leaving

    def on_screen_suspend(self) -> None:
        """Switching screens ends the servers (they hold the models' memory); coming back starts them again."""
        self.stop_servers()

    def on_screen_resume(self) -> None:
        if self.servers is None and self.columns:
            self.start_servers()

    def on_unmount(self) -> None:
        self.stop_servers(wait=True)
