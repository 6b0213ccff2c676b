"""``llmtui worker``: start (detached or in the foreground), stop or check the queue worker (CLI process)."""

from __future__ import annotations

from tui.cli.common import add_workspace_arg, console, fail, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker", help="run queued jobs (one worker per workspace; jobs survive the terminal closing)",
        description="Without an action, start a detached worker unless one runs. Settings come from "
                    ".llmtui/worker.toml (max_parallel, busy_gpu_memory_fraction, cancel_grace_s, "
                    "poll_interval_s, vllm_python). Stopping the worker leaves its running jobs running; the next "
                    "worker adopts them.")
    add_workspace_arg(parser)
    parser.add_argument("action", nargs="?", choices=("start", "stop", "status"), default="start")
    parser.add_argument("--foreground", action="store_true", help="run in this terminal until Ctrl-C")
    parser.add_argument("--max-parallel", type=int, default=None, metavar="N",
                        help="jobs at once (default: one per GPU, one on a CPU-only machine)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.jobs.settings import WorkerError, load_worker_settings
    from engine.jobs.worker import ensure_worker, run_worker, stop_worker, worker_pid

    ws = workspace_from(args)
    if args.max_parallel is not None and args.max_parallel < 1:
        fail(f"--max-parallel {args.max_parallel}: must be at least 1")
    try:
        if args.action == "stop":
            pid = stop_worker(ws)
            console.print(f"worker {pid} stopped" if pid else "no worker runs for this workspace")
            return 0
        if args.action == "status":
            pid = worker_pid(ws)
            console.print(f"worker pid {pid}" if pid else "no worker runs for this workspace")
            return 0 if pid else 1
        if args.foreground:
            settings = load_worker_settings(ws)
            if args.max_parallel is not None:
                settings.max_parallel = args.max_parallel
            return run_worker(ws, settings)
        pid = ensure_worker(ws, max_parallel=args.max_parallel)
    except WorkerError as exc:
        fail(str(exc))
    console.print(f"worker pid {pid} (log: {ws.state_dir / 'worker.log'})")
    return 0
