"""Time ``llmtui study plan`` and ``llmtui study show`` on a 200-variant study whose metrics files (and per-item
predictions, so every cell gets its paired test) are all present, against ``llmtui results`` on the same workspace.

The study: 2 PEFT methods × 20 learning rates × 5 seeds = 200 training runs on one base model folder, each
evaluated on BoolQ (300 items). Printed: each command's wall time (the median of 3 runs of the real
``llmtui`` process) and its ratio to ``llmtui results --json``. Target: both under 1 s. ``study show``
keeps its paired statistics in ``.llmtui/studies/NAME.pairs.json`` under the files' sizes and mtimes, so
the first show after evaluations (``cold``: every prediction file read) is timed apart from the next.

Run: python bench/study_speed.py [--items 300]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from engine.presets.study import load_study  # noqa: E402
from engine.workspace import Workspace  # noqa: E402
from metrics_fixtures import boxed, write_evaluation  # noqa: E402
from study_files import study_text  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmtui-bench-") as folder:
        run(Workspace(Path(folder)).init(), args.items)


def _timed(ws: Workspace, *args: str, repeat: int = 3) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of ``llmtui ARGS``: on a loaded machine the CPU time says more."""
    times, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(ws.root), *args], capture_output=True,
                                text=True)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if result.returncode != 0:
            raise SystemExit(f"llmtui {' '.join(args)} failed:\n{result.stderr}")
    return statistics.median(times), statistics.median(cpu)


def run(ws: Workspace, items: int) -> None:
    rng = random.Random(0)
    base = ws.models_dir / "bench-base"
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"model_type": "qwen3"}')
    rates = ", ".join(f"{1e-4 * (i + 1):.4g}" for i in range(20))
    path = ws.experiments_dir / "bench-study.toml"
    path.write_text(study_text("bench-base", f'"peft.method" = ["LoRa", "DoRa"]\n"train.learning_rate" = [{rates}]\n'
                                             '"train.seed" = [1, 2, 3, 4, 5]\n'))
    study = load_study(path)
    golds = {"test-boolq.parquet": [rng.random() < 0.6 for _ in range(items)]}
    names = ["bench-base", *(run.name for run in study.runs)]
    for index, name in enumerate(names):
        skill = 0.6 + 0.3 * index / len(names)
        outputs = {"test-boolq.parquet": [boxed(g if rng.random() < skill else not g)
                                          for g in golds["test-boolq.parquet"]]}
        write_evaluation(ws, name, outputs, golds)
    print(f"{len(study.runs)} variants, {len(names)} metrics files with predictions ({items} items each)")
    results = _timed(ws, "results", "--json")
    plan = _timed(ws, "study", "plan", str(path), "--json")
    cold = _timed(ws, "study", "show", str(path), "--json", repeat=1)
    show = _timed(ws, "study", "show", str(path), "--json")
    print(f"{'':32} {'wall s':>8} {'× results':>10} {'CPU s':>8} {'× results':>10}")
    for label, (wall, cpu) in (("llmtui results --json", results), ("llmtui study plan --json", plan),
                               ("llmtui study show --json", show),
                               (f"study show, cold ({len(names) - 1} tests)", cold)):
        print(f"{label:32} {wall:8.3f} {wall / results[0]:10.2f} {cpu:8.3f} {cpu / results[1]:10.2f}")


if __name__ == "__main__":
    main()
