"""``llmtui doctor [--json] [--smoke] [--gpu N]``: what works on this machine (CLI process).

The report (``engine.doctor``) takes about a second and imports no ML library; ``--smoke`` then runs
llmtui's own training, PTQ and evaluation paths on a tiny model (``engine.runs.smoke``, which imports
torch) in a scratch workspace, with the libraries' output sent to ``smoke.log`` there.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import IO

from rich.console import Console
from rich.table import Table

from tui.cli.common import add_workspace_arg, fail, print_json, workspace_from

STYLES = {"ok": "green", "pass": "green", "warning": "yellow", "error": "bold red", "fail": "bold red",
          "skipped": "dim"}
SMOKE_LOG = "smoke.log"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check this machine (packages, driver, GPUs, workspace); --smoke runs every path for real",
        description="Report what works on this machine: Python and package versions, the NVIDIA driver and CUDA, "
                    "each GPU, bf16, bitsandbytes, GPTQModel kernels, disk space, the Hugging Face cache and the "
                    "workspace. Exit status 0 when nothing failed, 1 when something did.")
    add_workspace_arg(parser)
    parser.add_argument("--json", action="store_true", help="print the checks as a JSON list on stdout")
    parser.add_argument("--smoke", action="store_true",
                        help="also train, merge, quantize and evaluate a tiny model for real (minutes; no download)")
    parser.add_argument("--gpu", metavar="N[,M]", default=None,
                        help="NVML index(es) of the GPUs the smoke run may use (default: all); the in-process "
                             "steps use the first, the queue rows all of them")
    parser.set_defaults(func=run)


def _parse_gpus(text: str | None) -> list[int] | None:
    """``--gpu 0,2`` → [0, 2], checked against the GPUs NVML lists."""
    if text is None:
        return None
    from engine.jobs.gpu import NvmlInventory

    try:
        wanted = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        fail(f"--gpu {text!r}: expected GPU indexes such as 0 or 0,1")
    listed = sorted(r.index for r in NvmlInventory().gpus())
    missing = [index for index in wanted if index not in listed]
    if not wanted or missing:
        seen = f"NVML lists GPU {', '.join(map(str, listed))}" if listed else "NVML lists no GPU on this machine"
        fail(f"--gpu {text!r}: no GPU {', '.join(map(str, missing)) or text}; {seen}")
    return wanted


def _printer(stream: IO[str]):
    console = Console(file=stream, soft_wrap=False, highlight=False)

    def show(check) -> None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=8, no_wrap=True)
        grid.add_column(width=22, no_wrap=True)
        grid.add_column(ratio=1, overflow="fold")
        style = STYLES.get(check.status, "")
        grid.add_row(f"[{style}]{check.status}[/]", check.name, check.detail)
        if check.fix and check.status not in ("ok", "pass", "skipped"):
            grid.add_row("", "", f"[cyan]fix:[/] {check.fix}")
        console.print(grid)

    return console, show


def _summary(label: str, checks: list, seconds: float) -> str:
    counts: dict[str, int] = {}
    for check in checks:
        counts[check.status] = counts.get(check.status, 0) + 1
    order = ("ok", "pass", "warning", "error", "fail", "skipped")
    parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
    return f"{label}: {', '.join(parts)} in {seconds:.1f} s"


def run(args) -> int:
    from engine.doctor.check import exit_code
    from engine.doctor.report import run_report

    ws = workspace_from(args, must_exist=False)
    gpus = _parse_gpus(args.gpu)
    _, show = _printer(sys.stderr if args.json else sys.stdout)
    started = time.perf_counter()
    checks = run_report(ws, on_check=None if args.json else show)
    report_s = time.perf_counter() - started
    if not args.json:
        Console(highlight=False).print(_summary("report", checks, report_s) + "\n")
    if args.smoke:
        checks += _smoke(gpus, json_output=args.json)
    if args.json:
        print_json([check.to_dict() for check in checks])
    return exit_code(checks)


def _smoke(gpus: list[int] | None, *, json_output: bool) -> list:
    """Run the smoke steps in a scratch workspace; it is removed after a clean run and kept when a step failed."""
    from engine.doctor.check import exit_code
    from engine.jobs.process import output_to_file

    root = tempfile.mkdtemp(prefix="llmtui-smoke-")
    log_path = os.path.join(root, SMOKE_LOG)
    started = time.perf_counter()
    with output_to_file(log_path) as (out, err):
        console, show = _printer(err if json_output else out)
        console.print(f"smoke run in {root} (library output: {log_path})")
        from engine.runs.smoke import run_smoke

        checks = run_smoke(root, gpus, on_check=show)
        console.print(_summary("smoke", checks, time.perf_counter() - started))
        if exit_code(checks):
            console.print(f"kept {root} for inspection (job logs in .llmtui/jobs/, library output in {SMOKE_LOG})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return checks
