"""``llmtui eval``: evaluate model folders on the workspace's test sets (or every untested model) (CLI or job process)."""

from __future__ import annotations

import signal

from rich.markup import escape

from engine.events import EventKind
from engine.presets.requests import EvalRequest, flag_problems
from tui.cli.common import add_workspace_arg, console, err_console, fail, print_json, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate models on the test sets in Datasets/",
        description="Batched greedy evaluation. Writes Testing/metrics/{model}.json and "
                    "Testing/predictions/{model}/{test set}.jsonl.")
    add_workspace_arg(parser)
    parser.add_argument("models", nargs="*", metavar="MODEL_DIR", help="model folders or names in Models/")
    parser.add_argument("--untested", action="store_true",
                        help="evaluate every model in Models/ without a metrics file, one after another "
                             "(broken folders are listed, never evaluated)")
    EvalRequest.add_flags(parser)
    parser.add_argument("--device", metavar="DEV", help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--events", metavar="FILE", help="append JSONL progress events here (default: $LLMTUI_EVENTS)")
    parser.add_argument("--json", action="store_true", help="print the run's outcome as JSON")
    parser.set_defaults(func=run)


def _terminate(signum, frame) -> None:
    """SIGTERM (a cancelled job) unwinds like Ctrl-C so temp files are removed and no metrics file is written."""
    raise KeyboardInterrupt


def _result_line(name: str, metrics: dict) -> str:
    """``✓ model: boolq accuracy=0.980 (200 items), … — 312.5 items/s`` (each set's headline metric)."""
    from engine.data.kinds import headline_metric

    parts = []
    for test_file, block in metrics["datasets"].items():
        key = headline_metric(block["type"], block["metrics"])
        value = block["metrics"].get(key)
        shown = "n/a" if value is None else f"{value:.3f}"
        parts.append(f"{test_file.removeprefix('test-').removesuffix('.parquet')} {key}={shown} "
                     f"({block['total_samples']} items)")
    speed = metrics["throughput"]["items_per_second"]
    return f"[green]✓[/] {escape(name)}: {escape(', '.join(parts))}" + (f" — {speed:.1f} items/s" if speed else "")


def run(args) -> int:
    from engine.data.tasks import DatasetError
    from engine.models.scan import untested_and_broken
    from engine.runs.evaluate import EvalError, EvalOptions, evaluate_models
    from engine.events import EventWriter, events_path_from_env

    ws = workspace_from(args)
    if args.untested and args.models:
        fail("give MODEL_DIR arguments or --untested, not both")
    if not args.untested and not args.models:
        fail("name at least one MODEL_DIR, or use --untested")
    options = EvalOptions(**EvalRequest.from_flags(args).options(), device=args.device)
    if problems := options.lm_eval_problems():
        fail(flag_problems(problems))
    if options.lm_eval_tasks:
        return _run_lm_eval(ws, args, options)
    signal.signal(signal.SIGTERM, _terminate)
    broken = []
    if args.untested:
        untested, broken = untested_and_broken(ws)
    with EventWriter(args.events or events_path_from_env()) as events:
        try:
            refs = [record.path for record in untested] if args.untested else args.models
            report = evaluate_models(ws, refs, options, events=events)
        except (EvalError, DatasetError) as exc:  # the test sets or options are unusable: no model was tried
            events.emit(EventKind.ERROR, message=str(exc))
            fail(str(exc), 1)
        except KeyboardInterrupt:
            events.emit(EventKind.ERROR, message="evaluation interrupted; no metrics file was written for the model in progress")
            raise
        events.emit(EventKind.DONE, evaluated=report.evaluated, failed=[{"model": n, "error": e} for n, e in report.failed])
    if args.json:
        print_json({"evaluated": report.evaluated, "failed": [{"model": n, "error": e} for n, e in report.failed],
                    "broken": [{"model": r.name, "reason": r.reason} for r in broken],
                    "metrics_files": {n: str(ws.metrics_file(n)) for n in report.evaluated}})
    else:
        for name in report.evaluated:
            console.print(_result_line(name, report.metrics[name]), highlight=False)
        for name, error in report.failed:
            err_console.print(f"[bold red]✗[/] {escape(name)}: {escape(error)}", highlight=False)
        for record in broken:
            err_console.print(f"[bold red]broken, not evaluated:[/] {escape(record.name)}: {escape(record.reason)}",
                              highlight=False)
        if args.untested and not report.evaluated and not report.failed:
            console.print("no untested models")
        else:
            (err_console if report.failed else console).print(report.summary_line(), highlight=False, markup=False)
    return 1 if report.failed or broken else 0


def _run_lm_eval(ws, args, options) -> int:
    """``--lm-eval TASKS``: each model through lm-eval's tasks with the ``llmtui`` model class (exit 1 when one
    failed, 2 when the tasks cannot run at all)."""
    from engine.events import EventWriter, events_path_from_env
    from engine.results.lmeval import untested_for_lm_eval
    from engine.runs.lmeval_run import LmEvalError, run_lm_eval_models

    broken = []
    refs = args.models
    if args.untested:
        untested, broken = untested_for_lm_eval(ws, options.lm_eval_tasks)
        refs = [record.path for record in untested]
    signal.signal(signal.SIGTERM, _terminate)
    with EventWriter(args.events or events_path_from_env()) as events:
        try:
            done, failed = run_lm_eval_models(ws, refs, options, events=events) if refs else ({}, [])
        except LmEvalError as exc:  # unknown task, unreachable data, lm-eval missing: no model was tried
            events.emit(EventKind.ERROR, message=str(exc))
            fail(str(exc))
        events.emit(EventKind.DONE, evaluated=list(done), failed=[{"model": n, "error": e} for n, e in failed])
    if args.json:
        print_json({"evaluated": list(done), "failed": [{"model": n, "error": e} for n, e in failed],
                    "broken": [{"model": r.name, "reason": r.reason} for r in broken],
                    "files": {name: run["files"] for name, run in done.items()},
                    "results": {name: run["results"]["results"] for name, run in done.items()},
                    "llmtui": {name: run["results"]["llmtui"] for name, run in done.items()}})
    else:
        for name, run in done.items():
            parts = []
            for task, values in run["results"]["results"].items():
                shown = [f"{key.replace(',none', '')}={value:.3f}" for key, value in values.items()
                         if "," in key and "stderr" not in key and isinstance(value, (int, float))]
                parts.append(f"{task} {' '.join(shown)}")
            console.print(f"[green]✓[/] {escape(name)}: {escape('; '.join(parts))}", highlight=False)
            agreement = run["results"]["llmtui"].get("backend_agreement")
            if agreement and agreement["measured"]:
                console.print(f"  --check-backends: {agreement['agreeing']}/{agreement['items']} answers identical "
                              f"on the built-in engine and {escape(str(agreement['other'].get('name')))}",
                              highlight=False)
            elif agreement:
                err_console.print(f"  --check-backends: agreement not measured: {escape(agreement['reason'])}",
                                  highlight=False)
        for name, error in failed:
            err_console.print(f"[bold red]✗[/] {escape(name)}: {escape(error)}", highlight=False)
        for record in broken:
            err_console.print(f"[bold red]broken, not evaluated:[/] {escape(record.name)}: {escape(record.reason)}",
                              highlight=False)
        if args.untested and not refs:
            console.print(f"every model has results for {', '.join(options.lm_eval_tasks)}")
    return 1 if failed or broken else 0
