"""``llmtui study plan|run|show FILE``: a grid or search of experiments in one study file (CLI process).

``plan`` lists every run, its jobs and their status and the estimated work; ``run`` queues only what is
missing or failed (with dependencies; a search records finished trials and asks for the next) and hands
the queue to the worker or Slurm; ``show`` prints the study's table (JSON, Markdown, LaTeX or CSV).
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from tui.cli.common import add_workspace_arg, console, err_console, exit_invalid, fail, print_json, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser("study", help="plan, run and read a study: a grid or search of experiments")
    actions = parser.add_subparsers(dest="study_action", metavar="ACTION", required=True)
    for name, help_text in (("plan", "every run, its jobs and their status, the estimated work"),
                            ("run", "queue what is missing or failed (run twice: nothing queued the second time)"),
                            ("show", "the study's table: metrics, deltas, adjusted p-values, costs, Pareto")):
        sub = actions.add_parser(name, help=help_text)
        add_workspace_arg(sub)
        sub.add_argument("file", help="study TOML file, or a study name in the workspace's experiments/")
        formats = sub.add_mutually_exclusive_group()
        formats.add_argument("--json", action="store_true", help="print JSON")
        if name == "show":
            formats.add_argument("--markdown", action="store_true", help="print a Markdown (GitHub) table")
            formats.add_argument("--latex", action="store_true", help="print a LaTeX (booktabs) table")
            formats.add_argument("--csv", action="store_true", help="print CSV")
        if name == "run":
            sub.add_argument("--no-start", action="store_true",
                             help="only queue the jobs (no worker started, nothing submitted to Slurm)")
        sub.set_defaults(func={"plan": run_plan, "run": run_run, "show": run_show}[name])


def _load(args):
    from engine.data.tasks import DatasetError, custom_tasks
    from engine.presets.study import StudyError, load_study
    from tui.cli.common import preset_path

    ws = workspace_from(args)
    path = preset_path(ws, args.file)
    if not path.is_file() and (ws.root / args.file).is_file():  # experiments/x.toml given from elsewhere
        path = ws.root / args.file
    try:
        study = load_study(path, tuple(custom_tasks(ws.datasets_dir)))
    except (StudyError, DatasetError) as exc:
        exit_invalid("study", path, exc.problems if isinstance(exc, StudyError) else [str(exc)],
                     json_errors=args.json)
    return ws, study


def run_plan(args) -> int:
    from engine.jobs.study import plan_study

    ws, study = _load(args)
    plan = plan_study(ws, study)
    data = plan.to_dict()
    if args.json:
        print_json(data)
        return 0
    table = Table("run", "values", "status", "jobs", "steps", "tokens", title=f"study {study.name}",
                  title_justify="left")
    for run in plan.runs:
        work = run.work
        statuses = [plan.jobs[key].status for key in run.jobs]
        jobs = ", ".join(f"{statuses.count(s)} {s}" for s in ("done", "running", "queued", "failed", "missing")
                         if s in statuses)
        table.add_row(Text(run.name), Text(run.label), run.status, jobs, _num(work.get("steps")),
                      _num(work.get("tokens")))
    console.print(table)
    counts = ", ".join(f"{n} {s}" for s, n in data["counts"].items() if n)
    hours = data["work"]["hours"]
    console.print(f"{data['total_jobs']} jobs ({counts}); estimated work {data['work']['tokens']:,} tokens"
                  + (f", about {hours:g} h at this machine's measured speed" if hours else ""), highlight=False)
    for job in plan.jobs.values():
        if job.stale:
            err_console.print(f"[yellow]note:[/] Models/{job.target} was trained with other settings than the "
                              f"study's now ({'; '.join(job.stale)}); it counts as done (train it again with "
                              "llmtui train --overwrite)", highlight=False)
    if study.search is not None:
        console.print(f"search: {len(plan.runs)} of {study.search.n_trials} trials asked so far "
                      f"(objective {study.search.objective}, {study.search.direction})", highlight=False)
    return 0


def run_run(args) -> int:
    from engine.jobs.store import JobError
    from engine.jobs.study import run_study
    from engine.jobs.control import run_queued
    from engine.jobs.settings import WorkerError

    ws, study = _load(args)
    try:
        result = run_study(ws, study)
    except JobError as exc:
        fail(str(exc))
    started = None
    if result["pending"] and not args.no_start:  # also after a worker died: its jobs wait for a new one
        try:
            started = run_queued(ws)
        except WorkerError as exc:
            fail(str(exc), 1)
    if args.json:
        print_json({**result, "started": started})
        return 0
    console.print(f"queued {len(result['queued'])} job(s)"
                  + (f": {', '.join(f'#{i}' for i in result['queued'])}" if result["queued"] else "")
                  + f"; {len(result['skipped'])} run(s) need nothing queued" + (f" ({started})" if started else ""),
                  highlight=False)
    return 0


def run_show(args) -> int:
    from engine.jobs.study import plan_study
    from engine.jobs.study_table import STUDY_RENDERERS, study_notes, study_rows, study_table

    ws, study = _load(args)
    table = study_table(ws, plan_study(ws, study))
    if args.json:
        print_json(table.to_dict())
        return 0
    for name in ("markdown", "latex", "csv"):
        if getattr(args, name):
            print(STUDY_RENDERERS[name](table), end="")
            return 0
    headers, rows = study_rows(table)
    shown = Table(*headers, title=f"study {table.study} ({_progress(table.counts)})", title_justify="left")
    for row in rows:
        shown.add_row(*row)
    console.print(shown)
    for note in study_notes(table):
        console.print(f"  {note}", highlight=False, markup=False)
    return 0


def _progress(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{counts.get('done', 0)} of {total} jobs done" + "".join(
        f", {counts[s]} {s}" for s in ("running", "queued", "failed", "missing") if counts.get(s))


def _num(value) -> str:
    return "?" if value is None else f"{value:,}"
