"""``llmtui train PRESET``: run one training experiment in the foreground (CLI process, or a queued job's process).

``train.gpus > 1`` re-runs this same command under ``accelerate launch`` with one process per GPU
(or per CPU rank without CUDA); rank 0 writes the events, the console output and the model folder.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from engine.events import EventKind, EventWriter, events_path_from_env, read_events
from engine.presets.requests import TrainRequest
from tui.cli.common import add_workspace_arg, console, err_console, fail, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a model from a preset (SFT, LoRA/DoRA/VeRA, QLoRA)")
    add_workspace_arg(parser)
    TrainRequest.add_flags(parser)
    parser.add_argument("--events", metavar="FILE", default=None,
                        help="append JSONL progress events here (default: $LLMTUI_EVENTS)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.presets.config import ConfigError, load_preset
    from engine.data.tasks import DatasetError, custom_tasks
    from engine.jobs.requeue import REQUEUE_EXIT_CODE, install_stop_handler
    from engine.runs.data_parallel import in_data_parallel_child, rank
    from engine.runs.train import preflight, train
    from engine.runs.train_errors import TrainError, TrainStopped
    from tui.cli.common import preset_path

    ws = workspace_from(args)
    events_path = args.events or events_path_from_env()
    path = preset_path(ws, args.preset)
    try:
        config = load_preset(path, args.overrides, tuple(custom_tasks(ws.datasets_dir)))
        preset_text = path.read_text(encoding="utf-8")
    except (ConfigError, DatasetError) as exc:
        problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [str(exc)]
        _error_event(events_path, f"invalid preset {path}: " + "; ".join(problems))
        err_console.print(f"[bold red]invalid preset[/] {path}", highlight=False)
        for problem in problems:
            err_console.print(f"  • {problem}", highlight=False, markup=False)
        return 2
    if args.overrides:
        preset_text = (f"# {path} with --set {' --set '.join(args.overrides)}; the resolved values:\n"
                       + config.to_toml())
    signal.signal(signal.SIGTERM, _raise_interrupt)
    install_stop_handler()
    try:
        if config.train.gpus > 1 and config.data.dataset != "none" and not in_data_parallel_child():
            try:
                preflight(ws, config, overwrite=args.overwrite)
            except TrainError as exc:
                _error_event(events_path, str(exc))
                raise
            return _relaunch(args, ws, path, config.train.gpus, events_path)
        reporter = _console_reporter() if rank() == 0 else None
        with reporter or contextlib.nullcontext():
            result = train(ws, config, preset_text=preset_text, overwrite=args.overwrite, events_path=events_path,
                           reporter=reporter)
    except TrainStopped as exc:
        if rank() == 0:
            err_console.print(f"[yellow]training stopped[/]: {exc}", highlight=False)
        return REQUEUE_EXIT_CODE
    except TrainError as exc:
        if rank() == 0:
            fail(str(exc), 1)
        return 1
    except KeyboardInterrupt:
        err_console.print("[yellow]training interrupted[/]: no model was saved")
        return 130
    if result.output_dir is not None:
        console.print(f"[bold green]saved[/] {result.output_dir} ({result.model_type})", highlight=False,
                      soft_wrap=True)
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (the queue cancelling a job) unwinds like Ctrl-C, so the temp output folder is removed."""
    raise KeyboardInterrupt


def _error_event(events_path, message: str) -> None:
    with EventWriter(events_path) as writer:
        writer.emit(EventKind.ERROR, message=message)


def _relaunch(args, ws, preset, gpus: int, events_path) -> int:
    """Run this command again as ``gpus`` data-parallel ranks; report a failure the ranks did not."""
    from engine.runs.data_parallel import launch_data_parallel

    module_args = ["tui.cli", "-w", str(ws.root), "train", str(Path(preset).resolve())]
    for override in args.overrides:
        module_args += ["--set", override]
    if args.overwrite:
        module_args.append("--overwrite")
    if events_path:
        module_args += ["--events", str(events_path)]
    before = len(read_events(events_path)) if events_path else 0
    console.print(f"[bold]data-parallel training[/] on {gpus} processes", highlight=False)
    code = launch_data_parallel(module_args, gpus)
    from engine.jobs.requeue import REQUEUE_EXIT_CODE, stop_requested

    if code != 0 and stop_requested():  # the ranks stopped on the stop signal (the launcher reports a failure)
        return REQUEUE_EXIT_CODE
    if code != 0:
        reported = events_path and any(e.get("kind") == EventKind.ERROR for e in read_events(events_path)[before:])
        if not reported:
            _error_event(events_path, f"data-parallel training failed (exit code {code}); see the log above")
        err_console.print(f"[bold red]error:[/] data-parallel training failed (exit code {code})", highlight=False)
        return 1
    return 0


class _ConsoleReporter:
    """Training events on the console: a progress bar with ETA on a terminal, plain lines otherwise."""

    def __init__(self, interactive: bool):
        self.interactive = interactive
        self.progress = None
        self.task = None

    def __enter__(self):
        if self.interactive:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), console=console)
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == EventKind.PROGRESS:
            if self.progress is not None:
                if self.task is None:
                    self.task = self.progress.add_task("train", total=event["max_steps"], loss="…")
                self.progress.update(self.task, completed=event["step"], total=event["max_steps"])
            return
        line = _describe(event)
        if kind == EventKind.TRAIN_STEP and self.progress is not None and self.task is not None:
            self.progress.update(self.task, loss=f"{event['loss']:.4f}" if event.get("loss") is not None else "…")
        if not line:
            return
        if self.progress is not None:
            self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            print(line, flush=True)


def _describe(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("t", time.time())))
    if kind == EventKind.START:
        what = "snapshot of" if event.get("snapshot") else f"{event.get('peft')} / {event.get('quant')} on"
        return (f"{stamp} start {event.get('model')}: {what} {event.get('base_model')} "
                f"({event.get('dataset')}, {event.get('device')}, world size {event.get('world_size')})")
    if kind == EventKind.TRAIN_STEP:
        parts = [f"{stamp} step {event['step']}/{event['max_steps']}"]
        for key, label, fmt in (("loss", "loss", "{:.4f}"), ("learning_rate", "lr", "{:.2e}"),
                                ("grad_norm", "grad", "{:.3f}"), ("tokens_per_s", "tok/s", "{:.0f}"),
                                ("gpu_mem_gb", "GPU GB", "{:.2f}")):
            if event.get(key) is not None:
                parts.append(f"{label} {fmt.format(event[key])}")
        return "  ".join(parts)
    if kind == EventKind.EVAL:
        loss = event.get("eval_loss")
        return f"{stamp} eval at step {event.get('step')}" + (f": loss {loss:.4f}" if loss is not None else "")
    if kind == EventKind.SAVED:
        return f"{stamp} saved {event.get('path')}"
    return ""


def _console_reporter() -> _ConsoleReporter:
    return _ConsoleReporter(interactive=console.is_terminal)
