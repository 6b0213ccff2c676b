"""Screen 2: presets on the left, the form on the right, the output name and steps shown live (TUI)."""

from __future__ import annotations

import sqlite3
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.jobs.settings import configured_vllm_python
from engine.models.estimate import EstimateError, plan_estimates
from engine.presets.config import ConfigError, ExperimentConfig, Problem, config_from_dict, save_preset
from engine.presets.naming import QuantizationSpec, model_name, qlora_spec
from engine.presets.plan import make_plan
from engine.workspace import UnsafeNameError, safe_name
from tui.messages import WorkspaceChanged
from tui.modals.confirm import ConfirmModal
from tui.modals.name_prompt import NamePrompt
from tui.screens.base import WorkspaceScreen
from tui.widgets.preset_form import PresetForm


@dataclass
class PresetFile:
    """One ``experiments/*.toml`` as listed on the left (``problem`` when it is not valid TOML)."""

    name: str
    path: Path
    problem: str = ""
    study: bool = False  # a study file (a [study] table): opens the Studies view, not the form


@dataclass
class WorkspaceInfo:
    """What the form needs from the workspace: dataset names, local models, presets."""

    builtin_datasets: list[str]
    custom_datasets: list[str]
    models: list[str]
    presets: list[PresetFile]
    problem: str = ""


def read_workspace_info(ws) -> WorkspaceInfo:
    """Datasets (built-in + ``Datasets/datasets.toml``), model folder names and preset files."""
    from engine.presets.config import BUILTIN_TASK_NAMES
    from engine.data.tasks import DatasetError, custom_tasks

    problem = ""
    try:
        custom = sorted(custom_tasks(ws.datasets_dir))
    except (DatasetError, OSError) as exc:
        custom, problem = [], str(exc)
    try:
        models = sorted(p.name for p in ws.models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        models = []
    return WorkspaceInfo(list(BUILTIN_TASK_NAMES), custom, models, list_presets(ws), problem)


def list_presets(ws) -> list[PresetFile]:
    presets = []
    try:
        paths = sorted(ws.experiments_dir.glob("*.toml"), key=lambda p: p.name.lower())
    except OSError:
        paths = []
    for path in paths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            presets.append(PresetFile(path.stem, path, study=isinstance(data.get("study"), dict)))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            presets.append(PresetFile(path.stem, path, f"{path.name}: {exc}"))
    return presets


def _guess_name(data: dict[str, Any]) -> str | None:
    """The output name from raw form data even when some field is invalid (None when it cannot be)."""
    try:
        model, data_, train, peft, quant = (data[k] for k in ("model", "data", "train", "peft", "quant"))
        spec = qlora_spec() if quant.get("method") == "QLORA" else QuantizationSpec()
        return model_name(model["base"], data_["dataset"], train["finetuning"], peft["method"], peft["r"], spec,
                          model.get("output_suffix", ""))
    except (KeyError, TypeError, AttributeError):
        return None


class ExperimentsScreen(WorkspaceScreen):
    """Build, save and queue experiment presets."""

    MODE = "experiments"
    AUTO_FOCUS = "#presets"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="experiments.save"),
        Binding("ctrl+shift+s", "save_as", "Save as", show=False, id="experiments.save_as"),
        Binding("ctrl+n", "new", "New", id="experiments.new"),
        Binding("ctrl+d", "duplicate", "Duplicate", priority=True, id="experiments.duplicate"),
        Binding("delete", "delete", "Delete", id="experiments.delete"),
        Binding("ctrl+r", "queue", "Queue", id="experiments.queue"),
        Binding("escape", "leave_field", "Leave the field", show=False, id="experiments.leave_field"),
    ]
    PALETTE = (("Add a PTQ step", "add_ptq_step", "append a post-training quantization step to the form"),)

    def __init__(self) -> None:
        super().__init__()
        self.info: WorkspaceInfo | None = None
        self.current: Path | None = None  # the preset file the form edits (None: not saved yet)
        self.saved_values: dict[str, Any] | None = None  # form values at the last load/save
        self.config: ExperimentConfig | None = None  # the form as a valid config (None while invalid)
        self.problems: list[Problem] = []

    def compose(self) -> ComposeResult:
        yield self.tabs()
        with Horizontal(id="experiments-main"):
            with Vertical(id="presets-pane"):
                yield Static("Presets", classes="pane-title")
                yield OptionList(id="presets")
            with Vertical(id="editor"):
                yield Static("", id="plan-summary")
        yield self.footer()

    def on_mount(self) -> None:
        self.query_one("#editor", Vertical).loading = True
        self.load_info()

    def action_leave_field(self) -> None:
        """Escape leaves a form field for the presets list, so 1–5 switch screens again instead of being typed
        (a field's open list, such as a Select's, takes the first Escape itself)."""
        self.query_one("#presets", OptionList).focus()

    @property
    def form(self) -> PresetForm:
        return self.query_one("#form", PresetForm)

    # ------------------------------------------------------------------------------ loading

    @work(thread=True, exclusive=True, group="experiments-info", exit_on_error=False)
    def load_info(self, select: str | None = None) -> None:
        info = read_workspace_info(self.ws)
        if not get_current_worker().is_cancelled:  # a newer reading is on its way
            self.app.call_from_thread(self.show_info, info, select)

    async def show_info(self, info: WorkspaceInfo, select: str | None) -> None:
        self.info = info
        if info.problem:
            self.notify(info.problem, title="custom datasets", severity="warning")
        presets = self.query_one("#presets", OptionList)
        presets.clear_options()
        for preset in info.presets:
            label = Text(preset.name)
            if preset.problem:
                label.append(" ✗", style="red")
            elif preset.study:
                label.append(" (study)", style="cyan")
            presets.add_option(Option(label, id=preset.name))
        if not self.query("#form"):
            form = PresetForm(datasets=[*info.builtin_datasets, *info.custom_datasets],
                              local_models=[f"Models/{m}" for m in info.models], id="form")
            await self.query_one("#editor", Vertical).mount(form)
            self.query_one("#editor", Vertical).loading = False
            first = next((p for p in info.presets if not p.study), None)
            if first is not None:
                self.open_preset(first.path)
            else:
                await self.show_preset(None, ExperimentConfig().to_dict())
        self._highlight(select or (self.current.stem if self.current else None))

    def _highlight(self, name: str | None) -> None:
        presets = self.query_one("#presets", OptionList)
        names = [p.name for p in self.info.presets] if self.info else []
        presets.highlighted = names.index(name) if name in names else None

    def on_workspace_changed(self, message: WorkspaceChanged) -> None:
        if message.parts & {"experiments", "models"} and self.info is not None:
            self.load_info()

    @work(thread=True, exclusive=True, group="experiments-open", exit_on_error=False)
    def open_preset(self, path: Path) -> None:
        """Read ``path`` and show it in the form (a TOML syntax error is reported, the form kept)."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            self.app.call_from_thread(self.notify, f"{path.name}: {exc}", title="cannot open preset",
                                      severity="error", timeout=10)
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show_preset, path, data)

    async def show_preset(self, path: Path | None, data: dict[str, Any]) -> None:
        self.current = path
        self._highlight(path.stem if path else None)
        await self.form.load(data)
        self.saved_values = self.form.values()[0]
        self.revalidate()
        shown = {str(p) for p in self.problems}
        other = [p for p in self._problems_of(data) if str(p) not in shown]
        if other:
            self.notify("\n".join(str(p) for p in other), title=f"{path.name if path else 'preset'}: not kept "
                        "by the form", severity="warning", timeout=10)

    def _problems_of(self, data: dict[str, Any]) -> list[Problem]:
        try:
            config_from_dict(data, "preset", self._custom())
        except ConfigError as exc:
            return exc.problems
        return []

    def _custom(self) -> tuple[str, ...]:
        return tuple(self.info.custom_datasets) if self.info else ()

    # ------------------------------------------------------------------------------ live validation

    @on(PresetForm.Edited)
    def revalidate(self) -> None:
        """Check the form with the engine's rules; show problems inline and the name and steps above.
        Skipped while the form is still filling (its fill ends with one ``Edited``)."""
        if self.form.filling:
            return
        data, problems = self.form.values()
        config = None
        try:
            config = config_from_dict(data, "form", self._custom())
        except ConfigError as exc:
            problems = problems + exc.problems
        self.config = None if problems else config
        self.problems = problems
        unplaced = self.form.show_problems(problems)
        self.update_summary(data, unplaced)

    def update_summary(self, data: dict[str, Any], unplaced: list[Problem]) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.current.name if self.current else "new preset (not saved)", style="bold")
        if self.dirty():
            text.append("  ● unsaved", style="yellow")
        name = self.config.output_name() if self.config else _guess_name(data)
        text.append("\n→ Models/", style="dim")
        text.append(name or "?", style="bold cyan")
        if name and self.info and name in self.info.models:
            text.append("  exists: training would need --overwrite", style="red")
        if self.config is not None:
            steps = make_plan(self.config, self.ws).steps
            vllm = configured_vllm_python(self.ws) is not None
            try:
                estimates = plan_estimates(self.config, self.ws, steps, vllm=vllm)
            except EstimateError as exc:
                estimates = {"available": False, "reason": str(exc)}
            memory = {row["index"]: row["memory_gb"] for row in estimates.get("steps", [])}
            for i, step in enumerate(steps):
                text.append(f"\n{i + 1}. {step.kind}", style="bold")
                if i in memory:  # the peak it needs, as `llmtui plan` prints it
                    text.append(f" ~{memory[i]['gpu']:g} GB GPU · {memory[i]['cpu']:g} GB CPU", style="dim")
                text.append(": ", style="bold")
                text.append(step.description)
            if not estimates["available"]:
                text.append(f"\nmemory: {estimates['reason']}", style="dim")
        else:
            count = len(self.problems)
            text.append(f"\n✗ {count} problem{'s' if count != 1 else ''}: cannot save or queue", style="bold red")
            listed = unplaced + [p for p in self.problems if p not in unplaced]
            for problem in listed[:4]:
                text.append(f"\n  {problem}", style="red")
            if len(listed) > 4:
                text.append(f"\n  … {len(listed) - 4} more (marked in the form)", style="red")
        self.query_one("#plan-summary", Static).update(text)

    def dirty(self) -> bool:
        """True when the form differs from the last load or save."""
        return self.saved_values is not None and self.form.values()[0] != self.saved_values

    def unsaved_changes(self) -> str:
        if self.saved_values is None or not self.dirty():
            return ""
        return f"unsaved edits to {self.current.name if self.current else 'the new preset'}"

    def _when_not_dirty(self, then, what: str) -> None:
        """Run ``then()`` now, or after the user agrees to discard unsaved edits."""
        if not self.dirty():
            then()
            return
        self.app.push_screen(ConfirmModal(f"Discard {self.unsaved_changes()} and {what}?", yes="Discard",
                                          no="Keep editing"), lambda yes: then() if yes else None)

    # ------------------------------------------------------------------------------ actions

    @on(OptionList.OptionSelected, "#presets")
    def preset_chosen(self, event: OptionList.OptionSelected) -> None:
        preset = next((p for p in (self.info.presets if self.info else []) if p.name == event.option_id), None)
        if preset is None or preset.path == self.current:
            return
        if preset.study:
            from tui.screens.study import StudyScreen

            self.app.push_screen(StudyScreen(preset.path))
            return
        self._when_not_dirty(lambda: self.open_preset(preset.path), f"open {preset.path.name}")

    async def action_add_ptq_step(self) -> None:
        await self.form.add_ptq_step()

    def action_new(self) -> None:
        async def new() -> None:
            await self.show_preset(None, ExperimentConfig().to_dict())
            self.notify("new preset from defaults; ctrl+s asks for its name")

        self._when_not_dirty(lambda: self.run_worker(new(), exclusive=True, group="experiments-new"),
                             "start a new preset")

    def _valid_config(self, doing: str) -> ExperimentConfig | None:
        if self.config is None:
            problems = "\n".join(str(p) for p in self.problems[:6])
            self.notify(f"fix {len(self.problems)} problem(s) first:\n{problems}", title=f"cannot {doing}",
                        severity="error", timeout=10)
        return self.config

    def action_save(self) -> None:
        if self.current is None:
            self.action_save_as()
            return
        config = self._valid_config("save")
        if config is not None:
            self.write_preset(config, self.current, self.current)

    def _name_check(self, name: str) -> str:
        try:
            path = self.ws.experiment_file(name.strip())
        except UnsafeNameError as exc:
            return str(exc)
        if path.exists():
            return f"experiments/{path.name} exists; choose another name"
        return ""

    def _ask_name(self, title: str, suggestion: str, then) -> None:
        def answered(name: str | None) -> None:
            if name:
                then(self.ws.experiment_file(name))

        self.app.push_screen(NamePrompt(title, value=suggestion, check=self._name_check,
                                        hint="saved as experiments/NAME.toml"), answered)

    def action_save_as(self) -> None:
        config = self._valid_config("save")
        if config is None:
            return
        self._ask_name("Save preset as", self.current.stem if self.current else _suggested_stem(config),
                       lambda path: self.write_preset(config, path, self.current))

    def action_duplicate(self) -> None:
        config = self._valid_config("duplicate")
        if config is None:
            return
        stem = f"{self.current.stem}-copy" if self.current else _suggested_stem(config)
        self._ask_name("Duplicate as", stem, lambda path: self.write_preset(config, path, self.current))

    @work(thread=True, group="experiments-write", exit_on_error=False)
    def write_preset(self, config: ExperimentConfig, path: Path, written_like: Path | None) -> None:
        """Save ``config`` to ``path`` as an edit of the preset file the form was opened from (its comments,
        order and formatting kept, only changed keys rewritten); a new preset is written in full."""
        try:
            base = written_like.read_text(encoding="utf-8") if written_like and written_like.exists() else None
            save_preset(config, path, base)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            self.app.call_from_thread(self.notify, f"{path}: {exc}", title="not saved", severity="error")
            return
        self.app.call_from_thread(self.saved, path)

    def saved(self, path: Path) -> None:
        self.current = path
        self.saved_values = self.form.values()[0]
        self.revalidate()
        self.notify(f"saved experiments/{path.name}")
        self.load_info(select=path.stem)

    def action_delete(self) -> None:
        if self.current is None:
            self.notify("this preset is not saved; nothing to delete")
            return
        path = self.current

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete_preset(path)

        self.app.push_screen(ConfirmModal(f"Delete experiments/{path.name}?", yes="Delete", no="Keep"), answered)

    @work(thread=True, group="experiments-write", exit_on_error=False)
    def delete_preset(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError as exc:
            self.app.call_from_thread(self.notify, f"{path}: {exc}", title="not deleted", severity="error")
            return
        self.app.call_from_thread(self.deleted, path)

    def deleted(self, path: Path) -> None:
        self.current = None
        self.saved_values = self.form.values()[0]
        self.revalidate()
        self.notify(f"deleted experiments/{path.name} (the form keeps its values)")
        self.load_info()

    def action_queue(self) -> None:
        config = self._valid_config("queue")
        if config is None:
            return
        name = config.output_name()
        if self.info and name in self.info.models:
            self.notify(f"Models/{name} exists; training would not overwrite it. Change the preset or remove "
                        "the model first.", title="cannot queue", severity="error", timeout=10)
            return
        self.enqueue(config)

    @work(thread=True, group="experiments-enqueue", exit_on_error=False)
    def enqueue(self, config: ExperimentConfig) -> None:
        from engine.jobs.enqueue import enqueue_pipeline
        from engine.jobs.store import JobError

        try:
            jobs = enqueue_pipeline(self.ws, config, config.to_toml(), inventory=self.llmtui.gpu_inventory)
        except (JobError, sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), title="not queued", severity="error")
            return
        self.app.call_from_thread(self.llmtui.jobs_queued, len(jobs), f"pipeline → {config.output_name()}")


def _suggested_stem(config: ExperimentConfig) -> str:
    try:
        return safe_name(f"{config.data.dataset}-{config.peft.method.lower()}")
    except UnsafeNameError:
        return "preset"
