"""Queue benchmark: enqueue → running latency with an idle worker (goal ≤ 1 s), and listing 10,000 jobs.

    .venv/bin/python bench/queue_latency.py [--jobs 20] [--list-size 10000]

Uses a temporary workspace and a real detached worker; the jobs are trivial Python commands.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.jobs.store import JobRequest, JobStore, list_jobs
from engine.jobs.process import llmtui_command, python_env
from engine.jobs.worker import ensure_worker, stop_worker
from engine.workspace import Workspace

STAMP = "import time; print(repr(time.time()), flush=True)"  # the job's only output line


def measure_latency(ws: Workspace, jobs: int) -> tuple[list[float], list[float]]:
    """Per job: seconds from enqueue to ``running`` in the queue, and to the job's first printed line."""
    to_running, to_process = [], []
    with JobStore(ws) as store:
        for _ in range(jobs):
            time.sleep(0.5)  # let the worker go idle between jobs
            enqueued = time.time()
            job = store.enqueue("eval", [sys.executable, "-c", STAMP])
            while (current := store.get(job.id)).status == "queued":
                time.sleep(0.002)
            to_running.append(current.started_at - enqueued)
            while not store.get(job.id).finished:
                time.sleep(0.01)
            started = float((ws.root / job.log_path).read_text().splitlines()[-1])
            to_process.append(started - enqueued)
    return to_running, to_process


def measure_listing(ws: Workspace, size: int) -> dict[str, float]:
    """Seconds to read ``size`` jobs through the engine and through ``llmtui queue list``."""
    with JobStore(ws) as store:
        for start in range(0, size, 1000):
            store.enqueue_many([JobRequest("eval", [sys.executable, "-c", "pass"], target=f"model-{i % 300}",
                                           description=f"evaluate model-{i % 300}")
                                for i in range(start, min(start + 1000, size))])
    timings = {}
    began = time.perf_counter()
    jobs = list_jobs(ws)
    timings[f"engine list_jobs ({len(jobs)} jobs)"] = time.perf_counter() - began
    began = time.perf_counter()
    list_jobs(ws, limit=200)
    timings["engine list_jobs(limit=200)"] = time.perf_counter() - began
    for args in (["--json", "--all"], [], ["--all"]):
        began = time.perf_counter()
        subprocess.run(llmtui_command(ws, "queue", "list", *args), env=python_env(),
                       stdout=subprocess.DEVNULL, check=True)
        timings[f"llmtui queue list {' '.join(args)} (whole process)".replace("  ", " ")] = time.perf_counter() - began
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--list-size", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "latency").init()
        began = time.perf_counter()
        ensure_worker(ws)
        print(f"worker start (detached, until it holds the lock): {time.perf_counter() - began:.3f} s")
        try:
            to_running, to_process = measure_latency(ws, args.jobs)
        finally:
            stop_worker(ws)
        for label, values in (("enqueue → running (queue status)", to_running),
                              ("enqueue → job process printing", to_process)):
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            print(f"{label}: median {statistics.median(values):.3f} s, p95 {p95:.3f} s, max {max(values):.3f} s "
                  f"over {len(values)} jobs (goal ≤ 1 s: {'met' if max(to_running) <= 1.0 else 'MISSED'})")
        listing = measure_listing(Workspace(Path(tmp) / "listing").init(), args.list_size)
        for label, seconds in listing.items():
            print(f"{label}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
