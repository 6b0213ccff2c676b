"""``enter`` on a model: its training metadata, quantization, metrics summary and files (TUI)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from engine.files import read_json_file
from engine.models.folder import QUANTIZATION_METADATA, TRAINING_METADATA
from engine.models.scan import ModelRecord
from engine.workspace import Workspace
from tui.format import human_count, human_size, status_style

#: At most this many files are listed (a sharded checkpoint can have hundreds).
MAX_FILES = 200
Section = tuple[str, list[tuple[str, str]]]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "-" if value is None or value == "" else str(value)


def _flat(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` → ``[("a.b", "1")]`` (lists stay on one line)."""
    if not isinstance(data, dict):
        return [(prefix or "value", _fmt(data))]
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        rows += _flat(value, name) if isinstance(value, dict) else [(name, _fmt(value))]
    return rows


def model_sections(ws: Workspace, record: ModelRecord) -> list[Section]:
    """Everything the details view shows, read from disk (never raises on bad content)."""
    from engine.results.metrics_files import load_metrics_file

    folder = Path(record.path)
    sections: list[Section] = [("model", [
        ("path", record.path), ("kind", record.kind), ("base", record.base_model or "-"),
        ("dataset", record.dataset or "-"), ("peft", record.peft or "-"), ("quant tag", record.quant_tag or "-"),
        ("params", human_count(record.params)), ("size", human_size(record.size_bytes)), ("date", record.date or "-"),
    ])]
    problems = [record.reason] if record.reason else []
    training, error = read_json_file(folder / TRAINING_METADATA)
    if error:
        problems.append(error)
    if isinstance(training, dict):
        for key, title in (("model_info", "training: model"), ("training_stats", "training: stats"),
                           ("hardware_info", "training: hardware")):
            if isinstance(training.get(key), dict):
                sections.append((title, _flat(training[key])))
        preset = (training.get("training_parameters") or {}).get("preset")
        if isinstance(preset, dict):
            sections.append(("training: preset", _flat(preset)))
    quant, error = read_json_file(folder / QUANTIZATION_METADATA)
    if error:
        problems.append(error)
    if isinstance(quant, dict):
        sections.append(("quantization", _flat(quant)))
    metrics_path = ws.metrics_file(record.name)
    if metrics_path.is_file():
        result = load_metrics_file(metrics_path)
        if result.error:
            problems.append(result.error)
        else:
            rows = [("evaluated at", _fmt(result.evaluated_at)), ("overall accuracy", _fmt(result.overall_accuracy)),
                    ("mean latency s", _fmt(result.latency_mean_s)),
                    ("eval peak VRAM GB", _fmt(result.eval_peak_vram_reserved_gb))]
            for dataset in result.datasets.values():
                numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in dataset.metrics.items() if v is not None)
                rows.append((dataset.name, f"{numbers} (n={_fmt(dataset.total_samples)})"))
            sections.append(("metrics", rows))
            problems += result.warnings
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        files = [(e.name + ("/" if e.is_dir() else ""), human_size(e.stat().st_size) if e.is_file() else "")
                 for e in entries[:MAX_FILES]]
        if len(entries) > MAX_FILES:
            files.append((f"… {len(entries) - MAX_FILES} more", ""))
        sections.append(("files", files))
    except OSError as exc:
        problems.append(f"cannot list the folder: {exc}")
    if problems:
        sections.insert(1, ("problems", [(str(i + 1), p) for i, p in enumerate(problems)]))
    return sections


class ModelDetailsModal(ModalScreen[None]):
    """Sections of key/value rows, loaded in a worker; ``escape`` closes."""

    BINDINGS = [Binding("escape,q", "close", "Close", id="details.close")]

    def __init__(self, ws: Workspace, record: ModelRecord, status: str) -> None:
        super().__init__()
        self.ws = ws
        self.record = record
        self.status = status
        self.sections: list[Section] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide tall"):
            title = Text.assemble((self.record.name, "bold"), "  ", (self.status, status_style(self.status)))
            yield Label(title, classes="question")
            body = VerticalScroll(id="details-body")
            body.loading = True
            yield body

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        sections = model_sections(self.ws, self.record)
        self.app.call_from_thread(self.show, sections)

    def show(self, sections: list[Section]) -> None:
        self.sections = sections
        body = self.query_one("#details-body", VerticalScroll)
        for title, rows in sections:
            table = Table(title=title, title_justify="left", title_style="bold", show_header=False,
                          expand=True, box=None, padding=(0, 1))
            table.add_column("key", style="dim", no_wrap=True, ratio=1)
            table.add_column("value", ratio=3, overflow="fold")
            for key, value in rows:
                table.add_row(Text(key), value if isinstance(value, Text) else Text(str(value)))
            body.mount(Static(table, classes="details-section"))
        body.loading = False
        body.focus()

    def action_close(self) -> None:
        self.dismiss(None)
