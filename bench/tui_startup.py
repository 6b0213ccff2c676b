"""How fast the TUI paints on a big workspace: 5,000 model folders and 2,500 metrics files.

Goal (issue 7): first paint ≤ 1.0 s. Each run is a fresh interpreter that imports the app, starts it
headless (the app's own ``run_test``, 200×60) and records when the first frame is displayed (Textual's
``Ready`` event), when the Models table holds every model, and when the Results table is filled.
Times are from the interpreter's start (``process``) and from the ``LlmTuiApp`` import (``app``).

Run: python bench/tui_startup.py [--models 5000 --metrics 2500 --runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 1.0
REPO = Path(__file__).resolve().parents[1]


def child(root: str, spawned_at: float) -> None:
    """One measured start of the app (runs in its own interpreter)."""
    import_start = time.time()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))  # the fixed GPU list the tests use (no NVML on CI machines)
    from fake_gpus import FakeInventory
    from engine.workspace import Workspace
    from tui.app import LlmTuiApp

    marks: dict[str, float] = {}

    class TimedApp(LlmTuiApp):
        def on_ready(self) -> None:
            marks["first_paint"] = time.time()

    async def run() -> None:
        # NVML cannot exist on this machine; the fake inventory keeps the GPU panel's poll trivial.
        app = TimedApp(Workspace(Path(root)), gpu_inventory=FakeInventory.with_gpus(1), autostart_worker=False)
        async with app.run_test(size=(200, 60)) as pilot:
            screen = app.screen
            while "first_paint" not in marks:
                await pilot.pause(0.01)
            while not screen.loaded:
                await pilot.pause(0.01)
            marks["models_table"] = time.time()
            rows = screen.query_one("#models").row_count
            await pilot.press("4")
            results = app.screen
            while results.table_data is None:
                await pilot.pause(0.01)
            marks["results_table"] = time.time()
            marks["rows"] = rows
            marks["results"] = len(results.rows)

    asyncio.run(run())
    print(json.dumps({"process": {k: v - spawned_at for k, v in marks.items() if k not in ("rows", "results")},
                      "app": {k: v - import_start for k, v in marks.items() if k not in ("rows", "results")},
                      "rows": marks["rows"], "results": marks["results"]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--metrics", type=int, default=2500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("WORKSPACE", "SPAWNED_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]))
        return 0
    sys.path.insert(0, str(REPO / "bench"))
    from registry_scan import build_workspace

    with tempfile.TemporaryDirectory(prefix="llmtui-tui-bench-") as tmp:
        started = time.perf_counter()
        build_workspace(Path(tmp), args.models, args.metrics)
        print(f"workspace: {args.models} models, {args.metrics} metrics files "
              f"(built in {time.perf_counter() - started:.1f} s)")
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, __file__, "--child", tmp, repr(time.time())], capture_output=True,
                                 text=True, cwd=REPO)
            if out.returncode:
                sys.exit(f"the measured run failed:\n{out.stderr[-3000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert all(r["rows"] == args.models and r["results"] == args.metrics for r in runs), runs
    for key, what in (("first_paint", "first paint"), ("models_table", f"models table ({args.models} rows)"),
                      ("results_table", f"results table ({args.metrics} rows)")):
        process = statistics.median(r["process"][key] for r in runs)
        app = statistics.median(r["app"][key] for r in runs)
        print(f"{what:<28} {process:6.2f} s from interpreter start, {app:6.2f} s from importing the app "
              f"(median of {args.runs})")
    first = statistics.median(r["process"]["first_paint"] for r in runs)
    print(f"first paint / goal ({GOAL_S:.1f} s) = {first / GOAL_S:.2f}  →  {'OK' if first <= GOAL_S else 'TOO SLOW'}")
    return 0 if first <= GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
