"""Time the results reader and a paired comparison on a big synthetic workspace.

* ``scan_results`` + ``results_table`` over N metrics files of realistic size (the old scripts'
  shape, 200 per-prompt latencies and token counts per test set).
* ``compare`` of two models on a BoolQ set of the full test split's size (3,270 items): one exact
  McNemar test and four paired bootstraps of 1,000 resamples.

Run: python bench/results_compare.py [--files 1000] [--items 3270]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from engine.files import write_json  # noqa: E402
from engine.results.compare import compare  # noqa: E402
from engine.results.metrics_files import results_table, scan_results  # noqa: E402
from engine.workspace import Workspace  # noqa: E402
from metrics_files import boxed, legacy_metrics, write_evaluation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--items", type=int, default=3270)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmtui-bench-") as folder:
        run(Workspace(Path(folder)).init(), args.files, args.items)


def run(ws: Workspace, files: int, items: int) -> None:
    rng = random.Random(0)
    document = legacy_metrics()
    for dataset in document["datasets"].values():
        dataset["latency_seconds"]["per_prompt"] = [round(rng.random(), 4) for _ in range(200)]
        dataset["tokens_generated"] = {"per_prompt": [rng.randint(1, 99) for _ in range(200)], "mean": 50.0}
    for i in range(files):
        document["model_name"] = f"Models\\model-{i:05d}"
        write_json(ws.metrics_dir / f"model-{i:05d}.json", document)

    start = time.perf_counter()
    records = scan_results(ws)
    scanned = time.perf_counter() - start
    start = time.perf_counter()
    table = results_table(ws, records)
    tabled = time.perf_counter() - start
    print(f"{len(records)} metrics files: scan_results {scanned:.3f} s, results_table {tabled:.3f} s "
          f"({len(table.columns)} columns)")

    golds = [rng.random() < 0.6 for _ in range(items)]
    for name, skill in (("bench-base", 0.70), ("bench-tuned", 0.75)):
        outputs = [boxed(g if rng.random() < skill else not g) for g in golds]
        write_evaluation(ws, name, {"test-boolq.parquet": outputs}, {"test-boolq.parquet": golds})
    start = time.perf_counter()
    comparison = compare(ws, ["bench-base", "bench-tuned"], resamples=1000)
    compared = time.perf_counter() - start
    row = next(m for m in comparison.datasets[0].metrics if m.metric == "accuracy")
    print(f"compare on {items} items (McNemar + 4 bootstraps x 1000): {compared:.3f} s; "
          f"accuracy delta {row.pairs[0].delta:+.4f}, p = {row.pairs[0].p_value:.3g}")


if __name__ == "__main__":
    main()
