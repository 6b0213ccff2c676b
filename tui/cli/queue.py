"""``llmtui queue``: add, list, show, cancel, retry and follow jobs of the workspace's persistent queue (CLI process)."""

from __future__ import annotations

import sys
import time
from datetime import datetime

from rich import box
from rich.table import Table
from rich.text import Text

from engine.jobs.job_folder import CANCELLING, JobStatus
from engine.jobs.store import Job, JobError, JobStore
from engine.presets.requests import EvalRequest, QuantizeRequest, TrainRequest
from tui.cli.common import add_workspace_arg, console, err_console, fail, print_json, workspace_from
from tui.format import human_duration, slurm_state_text, status_style


def register(subparsers) -> None:
    parser = subparsers.add_parser("queue", help="the persistent job queue (train, quantize, eval jobs)")
    add_workspace_arg(parser)
    actions = parser.add_subparsers(dest="queue_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="queue a job (starts the worker if none runs)")
    add_workspace_arg(add)
    kinds = add.add_subparsers(dest="kind", metavar="KIND", required=True)
    train = kinds.add_parser("train", help="a preset: train, then its [[ptq]] steps and evaluation as dependent jobs")
    TrainRequest.add_flags(train)
    quantize = kinds.add_parser("quantize", help="post-training quantization of a model")
    quantize.add_argument("model", help="model name in Models/ (or its folder)")
    QuantizeRequest.add_flags(quantize)
    quantize.add_argument("--out", default=None, help="output model name (default: derived from the method)")
    evaluate = kinds.add_parser("eval", help="evaluate models (one job per model)")
    evaluate.add_argument("models", nargs="*", metavar="MODEL", help="model names in Models/")
    evaluate.add_argument("--untested", action="store_true", help="every model without Testing/metrics/{name}.json")
    EvalRequest.add_flags(evaluate)
    for sub in (train, quantize, evaluate):
        add_workspace_arg(sub)
        sub.add_argument("--after", type=int, action="append", default=[], metavar="ID",
                         help="wait for this job to finish successfully first (repeatable)")
        sub.add_argument("--json", action="store_true", help="print the queued jobs as JSON")

    listing = actions.add_parser("list", help="list jobs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--limit", type=int, default=100, help="the most recent N jobs (default 100)")
    listing.add_argument("--all", action="store_true", help="every job (overrides --limit)")
    listing.add_argument("--status", action="append", default=None, help="only jobs with this status (repeatable)")
    show = actions.add_parser("show", help="one job in full")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON")
    cancel = actions.add_parser("cancel", help="cancel a queued or running job (SIGTERM, then SIGKILL)")
    cancel.add_argument("id", type=int)
    retry = actions.add_parser("retry", help="queue a copy of a failed, cancelled or interrupted job")
    retry.add_argument("id", type=int)
    logs = actions.add_parser("logs", help="print a job's log")
    logs.add_argument("id", type=int)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    clear = actions.add_parser("clear", help="remove finished jobs and their logs")
    clear.add_argument("--finished", action="store_true", required=True,
                       help="remove done, failed, cancelled and interrupted jobs")
    for sub in (listing, show, cancel, retry, logs, clear):
        add_workspace_arg(sub)
    parser.set_defaults(func=run)


def run(args) -> int:
    ws = workspace_from(args)
    handler = {"add": _add, "list": _list, "show": _show, "cancel": _cancel, "retry": _retry, "logs": _logs,
               "clear": _clear}[args.queue_action]
    try:
        return handler(ws, args)
    except JobError as exc:
        fail(str(exc))


# ---------------------------------------------------------------------------------------------- add


def _add(ws, args) -> int:
    from engine.jobs import enqueue
    from engine.data.tasks import DatasetError, custom_tasks

    if args.kind == "train":
        from tui.cli.common import load_preset_or_exit, preset_path

        config = load_preset_or_exit(ws, args.preset, args.overrides)
        text = preset_path(ws, args.preset).read_text(encoding="utf-8")
        train = TrainRequest.from_flags(args)
        jobs = enqueue.enqueue_pipeline(ws, config, text, overrides=train.overrides, overwrite=train.overwrite,
                                        after=args.after)
    elif args.kind == "quantize":
        jobs = [enqueue.enqueue_quantize(ws, args.model, QuantizeRequest.from_flags(args), out=args.out,
                                         after=args.after)]
    else:
        if args.untested == bool(args.models):
            fail("name the models to evaluate, or give --untested (not both)")
        models = enqueue.untested_model_names(ws) if args.untested else args.models
        if not models:
            console.print("every model in Models/ is tested; nothing to queue")
            return 0
        try:
            custom = tuple(custom_tasks(ws.datasets_dir))
        except DatasetError as exc:
            fail(str(exc))
        jobs = enqueue.enqueue_eval(ws, models, EvalRequest.from_flags(args), after=args.after,
                                    custom_datasets=custom)
    how = _start_worker(ws)
    if args.json:
        with JobStore(ws) as store:
            jobs = list(store.get_many(job.id for job in jobs).values())
        print_json([job.to_dict() for job in jobs])
        return 0
    with JobStore(ws) as store:
        jobs = list(store.get_many(job.id for job in jobs).values())
    console.print(_jobs_table(jobs, f"queued {len(jobs)} job(s)"))
    console.print(f"{how}; follow with [bold]llmtui queue logs {jobs[0].id} -f[/]")
    return 0


def _start_worker(ws) -> str:
    from engine.jobs.control import run_queued
    from engine.jobs.settings import WorkerError

    try:
        return run_queued(ws)
    except WorkerError as exc:
        fail(f"the jobs are queued, but {exc}")


def _sync(ws) -> None:
    """Bring Slurm jobs up to date (submitting what waits) before showing the queue; a Slurm that does not
    answer is reported, and the last known state is shown."""
    from engine.jobs.settings import WorkerError
    from engine.jobs.slurm import SlurmError, sync

    try:
        sync(ws)
    except (SlurmError, WorkerError) as exc:
        err_console.print(f"[yellow]warning:[/] cannot sync with Slurm: {exc}", highlight=False)


# ---------------------------------------------------------------------------------------------- views


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    moment = datetime.fromtimestamp(timestamp)
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.now().date() else "%Y-%m-%d %H:%M")


def _duration(job: Job) -> str:
    if job.started_at is None:
        return "-"
    return human_duration((job.ended_at or time.time()) - job.started_at)


COLUMNS = ("id", "kind", "status", "target", "gpus", "after", "started", "took", "error")
#: Added when a job ran on Slurm: its Slurm job id and state, with the pending reason or the node.
SLURM_COLUMNS = ("slurm",)
#: Above this many rows ``queue list`` prints plain aligned lines: a rich table of 10,000 rows takes ~15 s.
TABLE_ROWS_MAX = 500


def _row(job: Job, slurm: bool = False) -> list[str]:
    gpus = ",".join(map(str, job.gpus_assigned)) if job.gpus_assigned else str(job.gpus_requested or "-")
    status = job.status + (f" ({CANCELLING})" if job.status == JobStatus.RUNNING and job.cancel_requested_at else "")
    row = [str(job.id), job.kind, status, job.target, gpus, ",".join(map(str, job.depends_on)) or "-",
           _when(job.started_at), _duration(job)]
    if slurm:
        row += [f"{job.slurm_job_id} {slurm_state_text(job)}" if job.slurm_job_id else "-"]
    return row + [job.error[:80]]


def _columns(jobs: list[Job]) -> tuple[str, ...]:
    if any(job.slurm_job_id for job in jobs):
        return COLUMNS[:-1] + SLURM_COLUMNS + COLUMNS[-1:]
    return COLUMNS


def _jobs_table(jobs: list[Job], title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = _columns(jobs)
    for name in columns:
        # Short columns keep their width; the model name and the error give way (cut with an ellipsis).
        wide = name in ("target", "error")
        table.add_column(name, no_wrap=not wide, overflow="ellipsis", max_width=60 if wide else None)
    for job in jobs:
        row: list = _row(job, columns != COLUMNS)
        row[2] = f"[{status_style(job.status)}]{row[2]}[/]"
        for index in (3, len(row) - 1):  # the column may shrink, but its cells stay on one line
            row[index] = Text(row[index], no_wrap=True, overflow="ellipsis")
        table.add_row(*row)
    return table


def _print_plain(jobs: list[Job], title: str) -> None:
    columns = _columns(jobs)
    rows = [list(columns)] + [_row(job, columns != COLUMNS) for job in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) - 1)]
    sys.stdout.write(title + "\n" + "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] + "\n" for row in rows))


def _list(ws, args) -> int:
    _sync(ws)
    with JobStore(ws) as store:
        jobs = store.list(None if args.all else args.limit, args.status)
        counts = store.counts()
    if args.json:
        print_json([job.to_dict() for job in jobs])
        return 0
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "empty"
    matching = sum(count for status, count in counts.items() if not args.status or status in args.status)
    shown = "" if len(jobs) == matching else f" (showing the last {len(jobs)}; --all for every job)"
    title = f"queue of {ws.root}: {summary}{shown}"
    if len(jobs) > TABLE_ROWS_MAX:
        _print_plain(jobs, title)
    else:
        console.print(_jobs_table(jobs, title))
    return 0


def _show(ws, args) -> int:
    _sync(ws)
    with JobStore(ws) as store:
        job = store.require(args.id)
    if args.json:
        print_json(job.to_dict())
        return 0
    table = Table.grid(padding=(0, 2))
    rows = [("id", str(job.id)), ("kind", job.kind), ("status", f"[{status_style(job.status)}]{job.status}[/]"),
            ("target", job.target), ("what", job.description),
            ("after", ", ".join(f"#{d}" for d in job.depends_on) or "-"),
            ("gpus", f"{job.gpus_requested} requested, assigned {job.gpus_assigned or '-'}"),
            ("pid", str(job.pid or "-")), ("runs on", job.executor)]
    if job.slurm_job_id:
        rows += [("slurm job", job.slurm_job_id), ("slurm state", slurm_state_text(job)),
                 ("node", job.node or "-"), ("elapsed", human_duration(job.elapsed_s))]
    rows += [("created", _when(job.created_at)), ("started", _when(job.started_at)),
            ("ended", _when(job.ended_at)), ("took", _duration(job)),
            ("exit code", "-" if job.exit_code is None else str(job.exit_code)), ("error", job.error or "-"),
            ("log", str(ws.root / job.log_path)), ("events", str(ws.root / job.events_path)),
            ("retry of", f"#{job.retry_of}" if job.retry_of else "-")]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)
    console.print("[bold]command[/]")
    console.print(" ".join(job.command), markup=False, highlight=False)
    if job.log_tail and job.status != JobStatus.DONE:
        console.print("[bold]last log lines[/]")
        console.print(job.log_tail, markup=False, highlight=False)
    return 0


# ---------------------------------------------------------------------------------------------- actions


def _cancel(ws, args) -> int:
    from engine.jobs.control import cancel_job

    status = cancel_job(ws, args.id)
    if status == JobStatus.RUNNING:
        err_console.print(f"job {args.id} was asked to stop but still runs; check [bold]llmtui queue show {args.id}[/]")
        return 1
    console.print(f"job {args.id}: [{status_style(status)}]{status}[/]")
    return 0


def _retry(ws, args) -> int:
    from engine.jobs.resume import job_checkpoint

    with JobStore(ws) as store:
        checkpoint = job_checkpoint(ws, store.require(args.id))
        jobs = store.retry(args.id)
    how = _start_worker(ws)
    with JobStore(ws) as store:
        jobs = list(store.get_many(job.id for job in jobs).values())
    console.print(_jobs_table(jobs, f"re-queued job {args.id} as #{jobs[0].id}"
                                    + (f" with {len(jobs) - 1} dependent job(s)" if len(jobs) > 1 else "")
                                    + (f"; it resumes from the checkpoint at step {checkpoint.step}"
                                       if checkpoint else "")))
    console.print(how)
    return 0


def _logs(ws, args) -> int:
    with JobStore(ws) as store:
        job = store.require(args.id)
        path = ws.root / job.log_path
        offset, synced = 0, 0.0
        while True:
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if not args.follow or (job.finished and not chunk):
                break
            time.sleep(0.2)
            if job.slurm_job_id and time.monotonic() - synced > 2.0:  # squeue is not free: every 2 s
                _sync(ws)
                synced = time.monotonic()
            job = store.require(args.id)
    if not args.follow and offset == 0:
        err_console.print(f"job {args.id} has no log yet ({job.status})")
    return 0


def _clear(ws, args) -> int:
    with JobStore(ws) as store:
        removed = store.clear_finished()
    console.print(f"removed {len(removed)} finished job(s)")
    return 0
