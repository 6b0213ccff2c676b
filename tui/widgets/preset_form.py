"""The experiment form: one widget per preset field, built from ``engine.presets.config.field_specs`` (TUI).

Selects for fields with choices (and the dataset), Switches for booleans, Inputs for numbers, text and
comma-separated lists, and a list of PTQ steps (added, removed and moved up or down). Each field has an
error line under it; the rules are the engine's (``config_from_dict``), the same as ``llmtui plan``.
While :meth:`PresetForm.load` (or a PTQ step change) fills the fields, :attr:`PresetForm.filling` is
true and no ``Edited`` message is sent: half-filled fields are never validated. Runs in the TUI.
"""

from __future__ import annotations

import re
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static, Switch

from engine.presets.config import SECTIONS, PtqStep, Problem, field_specs

SECTION_TITLES = {"model": "Model", "data": "Data", "peft": "PEFT", "quant": "Quantization during training",
                  "train": "Training", "eval": "Evaluation after the pipeline"}
_WHERE = re.compile(r"^(?P<section>[a-z]+)(?:\[(?P<index>\d+)\])?\.(?P<key>\w+)$")
Value = Any


def field_id(section: str, key: str, index: int | None = None) -> str:
    """The widget id of a field: ``f-peft-r``, ``f-ptq-0-bits``."""
    return f"f-{section}-{key}" if index is None else f"f-{section}-{index}-{key}"


def where_to_id(where: str) -> str | None:
    """A problem's ``section.key`` / ``ptq[i].key`` → the widget id it belongs to."""
    match = _WHERE.match(where)
    if not match:
        return None
    index = match["index"]
    return field_id(match["section"], match["key"], int(index) if index is not None else None)


def _text(value: Any, type_name: str) -> str:
    if type_name == "list[str]":
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if type_name == "float" else str(value)
    return str(value)


def _parse(text: str, type_name: str) -> tuple[Value, str]:
    """Input text → (value, problem)."""
    text = text.strip()
    if type_name == "int":
        try:
            return int(text), ""
        except ValueError:
            return text, "must be an integer" if text else "must be an integer (empty)"
    if type_name == "float":
        try:
            return float(text), ""
        except ValueError:
            return text, "must be a number" if text else "must be a number (empty)"
    if type_name == "list[str]":
        return [part.strip() for part in text.split(",") if part.strip()], ""
    if type_name == "int | str":  # a number or a word (batch_size = 8 | "auto"): the knob's rule checks which
        return (int(text) if text.lstrip("-").isdigit() else text), ""
    return text, ""


class FieldRow(Vertical):
    """A label, the field's widget and its error line."""

    def __init__(self, label: str, widget: Widget, help_text: str = "") -> None:
        super().__init__(classes="field")
        self.label_text = label
        self.widget = widget
        self.help_text = help_text
        self.problem = ""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-line"):
            yield Label(self.label_text, classes="field-label")
            yield self.widget
        yield Label("", classes="field-error")

    def on_mount(self) -> None:
        self.set_problem(self.problem)

    def set_problem(self, message: str) -> None:
        """Show ``message`` under the field ("" clears it); kept until the row is composed."""
        self.problem = message
        self.set_class(bool(message), "-invalid")
        for error in self.query(".field-error").results(Label):
            error.update(f"✗ {message}" if message else "")
            error.display = bool(message)


class PresetForm(VerticalScroll):
    """Every preset field. :meth:`load` fills it, :meth:`values` reads it, :meth:`show_problems` marks it."""

    class Edited(Message):
        """A field changed (by the user), or :meth:`load` finished filling every field."""

    def __init__(self, *, datasets: list[str], local_models: list[str], id: str | None = None) -> None:
        super().__init__(id=id)
        self.datasets = datasets
        self.local_models = local_models
        self.ptq_count = 0  # PTQ step rows mounted (updated only once a change of rows is complete)
        self._filling = 0  # fills in progress (load, PTQ step rows being replaced)
        self._specs = {name: field_specs(cls) for name, cls in SECTIONS.items()}
        self._ptq_specs = field_specs(PtqStep)
        self._choices: dict[str, tuple[Any, ...]] = {}  # Select id → its known choices

    def compose(self) -> ComposeResult:
        for section, specs in self._specs.items():
            if section == "eval":
                yield Static("PTQ steps (after training)", classes="section-title")
                yield Vertical(id="ptq-steps")
                yield Button("+ add PTQ step", id="add-ptq", compact=True)
            yield Static(SECTION_TITLES[section], classes="section-title")
            for key, spec in specs.items():
                yield FieldRow(f"{key}", self._widget(section, key, spec, spec["default"]), spec.get("help") or "")

    def _widget(self, section: str, key: str, spec: dict[str, Any], value: Any, index: int | None = None) -> Widget:
        wid = field_id(section, key, index)
        type_name = spec["type"]
        tooltip = spec.get("help") or None
        if type_name == "bool":
            return Switch(bool(value), id=wid, animate=False, tooltip=tooltip)
        choices = spec.get("choices")
        if section == "data" and key == "dataset":
            choices = (*self.datasets, "none")
        if choices and type_name != "list[str]":  # a list with choices (report_to) is typed, comma-separated
            self._choices[wid] = tuple(choices)
            return Select(self._options(wid, value), value=value, allow_blank=False, id=wid, compact=True,
                          tooltip=tooltip)
        suggester = SuggestFromList(self.local_models, case_sensitive=False) if (section, key) == ("model", "base") \
            else None
        placeholder = "comma-separated" if type_name == "list[str]" else ""
        return Input(_text(value, type_name), id=wid, compact=True, suggester=suggester, placeholder=placeholder,
                     tooltip=tooltip)

    def _options(self, wid: str, value: Any) -> list[tuple[str, Any]]:
        """A Select's options; a value from the file that is not a known choice is shown as such
        (and reported as a problem) rather than silently replaced."""
        options = [(str(c), c) for c in self._choices[wid]]
        return options if value in self._choices[wid] else [*options, (f"{value} (unknown)", value)]

    # ------------------------------------------------------------------------------ filling

    @property
    def filling(self) -> bool:
        """True while fields are being filled or PTQ rows replaced: :meth:`values` may be half-read."""
        return self._filling > 0

    async def load(self, data: dict[str, Any]) -> None:
        """Show raw preset ``data`` (as read from TOML); missing keys show their defaults. One ``Edited``
        follows, once every field shows its value."""
        self._filling += 1
        try:
            for section, specs in self._specs.items():
                raw = data.get(section) if isinstance(data.get(section), dict) else {}
                for key, spec in specs.items():
                    self._set(self.query_one(f"#{field_id(section, key)}"), raw.get(key, spec["default"]), spec)
            steps = data.get("ptq") if isinstance(data.get("ptq"), list) else []
            await self.set_ptq_steps([s if isinstance(s, dict) else {} for s in steps])
        finally:
            self._filling -= 1
        self.post_message(self.Edited())

    def _set(self, widget: Widget, value: Any, spec: dict[str, Any]) -> None:
        if isinstance(widget, Switch):
            widget.value = bool(value)
        elif isinstance(widget, Select):
            value = value if isinstance(value, (str, int, float, bool)) else str(value)
            widget.set_options(self._options(widget.id or "", value))
            widget.value = value
        elif isinstance(widget, Input):
            widget.value = _text(value, spec["type"])

    async def set_ptq_steps(self, steps: list[dict[str, Any]]) -> None:
        """Replace the PTQ step rows with ``steps`` (raw dicts; missing keys get defaults)."""
        self._filling += 1
        try:
            box = self.query_one("#ptq-steps", Vertical)
            self.ptq_count = 0
            await box.remove_children()
            rows: list[Widget] = []
            for index, raw in enumerate(steps):
                head = [Static(f"step {index + 1}", classes="ptq-title")]
                if index > 0:
                    head.append(Button("↑ up", id=f"up-ptq-{index}", compact=True, classes="move-ptq"))
                if index < len(steps) - 1:
                    head.append(Button("↓ down", id=f"down-ptq-{index}", compact=True, classes="move-ptq"))
                head.append(Button("remove", id=f"remove-ptq-{index}", compact=True, classes="remove-ptq"))
                rows.append(Horizontal(*head, classes="ptq-head"))
                for key, spec in self._ptq_specs.items():
                    rows.append(FieldRow(key, self._widget("ptq", key, spec, raw.get(key, spec["default"]), index),
                                         spec.get("help") or ""))
            await box.mount_all(rows)
            self.ptq_count = len(steps)
        finally:
            self._filling -= 1

    # ------------------------------------------------------------------------------ reading

    def values(self) -> tuple[dict[str, Any], list[Problem]]:
        """The preset data the form shows, and the fields whose text cannot be read as their type."""
        data: dict[str, Any] = {}
        problems: list[Problem] = []
        for section, specs in self._specs.items():
            data[section] = self._read(section, specs, None, problems)
        if self.ptq_count:
            data["ptq"] = [self._read("ptq", self._ptq_specs, i, problems) for i in range(self.ptq_count)]
        return data, problems

    def _read(self, section: str, specs: dict[str, dict[str, Any]], index: int | None,
              problems: list[Problem]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, spec in specs.items():
            widget = self.query_one(f"#{field_id(section, key, index)}")
            where = f"{section}[{index}].{key}" if index is not None else f"{section}.{key}"
            if isinstance(widget, Switch):
                out[key] = widget.value
            elif isinstance(widget, Select):
                out[key] = widget.value
            elif isinstance(widget, Input):
                value, problem = _parse(widget.value, spec["type"])
                if problem:
                    problems.append(Problem(where, problem))
                    continue
                out[key] = value
        return out

    def show_problems(self, problems: list[Problem]) -> list[Problem]:
        """Put each problem under its field; return the ones that belong to no field."""
        by_id: dict[str, list[str]] = {}
        unplaced = []
        for problem in problems:
            wid = where_to_id(problem.where)
            if wid is not None and self.query(f"#{wid}"):
                by_id.setdefault(wid, []).append(problem.message)
            else:
                unplaced.append(problem)
        for row in self.query(FieldRow):
            row.set_problem("; ".join(by_id.get(row.widget.id or "", [])))
        return unplaced

    # ------------------------------------------------------------------------------ events

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def _edited(self, event: Message) -> None:
        event.stop()
        if not self.filling:  # a fill sends its one Edited when it is complete
            self.post_message(self.Edited())

    def _steps_as_shown(self) -> list[dict[str, Any]]:
        """The PTQ steps' raw field texts (kept as typed, even when not valid yet)."""
        steps = []
        for index in range(self.ptq_count):
            step: dict[str, Any] = {}
            for key in self._ptq_specs:
                widget = self.query_one(f"#{field_id('ptq', key, index)}")
                step[key] = widget.value
            steps.append(step)
        return steps

    async def _replace_steps(self, steps: list[dict[str, Any]]) -> None:
        await self.set_ptq_steps(steps)
        self.post_message(self.Edited())

    @on(Button.Pressed, "#add-ptq")
    async def add_ptq_step(self) -> None:
        await self._replace_steps([*self._steps_as_shown(), {}])

    @on(Button.Pressed, ".remove-ptq")
    async def remove_ptq_step(self, event: Button.Pressed) -> None:
        steps = self._steps_as_shown()
        del steps[_index_of(event.button)]
        await self._replace_steps(steps)

    @on(Button.Pressed, ".move-ptq")
    async def _move_pressed(self, event: Button.Pressed) -> None:
        index = _index_of(event.button)
        await self.move_ptq_step(index, -1 if (event.button.id or "").startswith("up-") else 1)

    async def move_ptq_step(self, index: int, by: int) -> None:
        """Move PTQ step ``index`` by ``by`` places (-1 earlier, 1 later); the pipeline runs them in order."""
        steps = self._steps_as_shown()
        to = index + by
        if not (0 <= index < len(steps) and 0 <= to < len(steps)):
            return
        steps.insert(to, steps.pop(index))
        await self._replace_steps(steps)
        self.query_one(f"#{field_id('ptq', 'method', to)}").focus()


def _index_of(button: Button) -> int:
    """``remove-ptq-2`` → 2."""
    return int((button.id or "-0").rsplit("-", 1)[1])
