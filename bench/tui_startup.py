"""How soon model names are on screen when `llmtui` starts in a real terminal (tmux) on a big workspace:
5,000 model folders and 2,500 metrics files.

Goal (issue 17): the first rows of the Models table visible ≤ 1.0 s after the process starts (not the
first, empty frame). Each run starts ``python -m tui.cli -w WS`` in a fresh detached tmux session
(120×40) and reads the screen with ``tmux capture-pane`` until the name of the first model (sorted)
shows; "first frame" is when the tab line shows. The first run finds no persisted index (a cold start:
every folder is read); the later runs start from the index the app saved (``.llmtui/model_index.json``)
and refresh it in the background. The goal is checked on the later runs (median).

Run: python bench/tui_startup.py [--models 5000 --metrics 2500 --runs 5]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 1.0
REPO = Path(__file__).resolve().parents[1]
SESSION = f"llmtui-bench-{os.getpid()}"


def _screen() -> str:
    out = subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True)
    return out.stdout


def measure(ws: Path, first_model: str, keep_until=None, timeout_s: float = 60.0) -> tuple[float, float]:
    """(first frame, first rows visible) in seconds from the start of the process; the app is closed
    then, or once ``keep_until()`` is true."""
    env = {"PYTHONPATH": str(REPO), "LLMTUI_NO_AUTOSTART": "1", "TERM": "xterm-256color"}
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command += f" {shlex.quote(sys.executable)} -m tui.cli -w {shlex.quote(str(ws))}"
    started = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", command], check=True)
    frame = rows = None
    try:
        while rows is None:
            screen = _screen()
            now = time.perf_counter() - started
            if frame is None and "1 Models" in screen:
                frame = now
            if first_model in screen:
                rows = now
            if now > timeout_s:
                raise SystemExit(f"no model name on screen after {timeout_s:.0f} s:\n{screen}")
            time.sleep(0.01)
        while keep_until is not None and not keep_until() and time.perf_counter() - started < timeout_s:
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    return frame or rows, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--metrics", type=int, default=2500)
    parser.add_argument("--runs", type=int, default=5, help="runs from the persisted index (after one cold run)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO))
    from model_scan import build_workspace

    from engine.models.index import index_path

    # one idle session keeps the tmux server up between runs (a server that is exiting refuses new sessions)
    subprocess.run(["tmux", "new-session", "-d", "-s", f"{SESSION}-anchor", "sleep 3600"], check=True)
    try:
        return measure_all(args, build_workspace, index_path)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", f"{SESSION}-anchor"], capture_output=True)


def measure_all(args, build_workspace, index_path) -> int:
    with tempfile.TemporaryDirectory(prefix="llmtui-tui-bench-") as tmp:
        started = time.perf_counter()
        ws = build_workspace(Path(tmp), args.models, args.metrics)
        print(f"workspace: {args.models} models, {args.metrics} metrics files "
              f"(built in {time.perf_counter() - started:.1f} s)")
        first_model = min((p.name for p in ws.models_dir.iterdir()), key=str.lower)
        cold_frame, cold_rows = measure(ws.root, first_model, keep_until=index_path(ws).exists)
        if not index_path(ws).exists():
            raise SystemExit(f"the app saved no index at {index_path(ws)}")
        print(f"cold start (no index):   first frame {cold_frame:5.2f} s, first rows visible {cold_rows:5.2f} s")
        warm = [measure(ws.root, first_model) for _ in range(args.runs)]
    frames = statistics.median(f for f, _ in warm)
    rows = statistics.median(r for _, r in warm)
    print(f"from the saved index:    first frame {frames:5.2f} s, first rows visible {rows:5.2f} s "
          f"(median of {args.runs}; all: {', '.join(f'{r:.2f}' for _, r in warm)})")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"first rows visible / goal ({GOAL_S:.1f} s) = {rows / GOAL_S:.2f}  →  {'OK' if rows <= GOAL_S else 'TOO SLOW'}")
    return 0 if rows <= GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
