"""Time `scan_models` on a big synthetic workspace: 5,000 model folders, 2,500 metrics files.

Goal (issue 2): ≤ 1.5 s. Run: python bench/model_scan.py [--models 5000 --metrics 2500]
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models.scan import scan_models  # noqa: E402
from engine.workspace import Workspace  # noqa: E402


def _safetensors_stub(path: Path) -> None:
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [2048, 128], "data_offsets": [0, 0]},
                         "__metadata__": {"format": "pt"}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def metrics_document(name: str, rng: random.Random, items: int = 200) -> dict:
    """A metrics JSON of realistic size (per-prompt latency and token lists for four test sets)."""
    datasets = {}
    for test_file, kind, key in (("test-ai2_arc.parquet", "mcq4", "macro_f1"), ("test-boolq.parquet", "boolq", "accuracy"),
                                 ("test-squad_v2.parquet", "squad_v2", "F1"),
                                 ("test-OpenMathInstruct-2.parquet", "math_numeric", "accuracy")):
        datasets[test_file] = {"type": kind, "total_samples": items, "accuracy": rng.random(),
                               "metrics": {key: rng.random(), "accuracy": rng.random()},
                               "latency_seconds": {"mean": 0.1, "per_prompt": [rng.random() for _ in range(items)]},
                               "tokens_generated": {"mean": 9, "per_prompt": [rng.randint(1, 30) for _ in range(items)]}}
    return {"model_name": name, "evaluated_at": "2026-11-25T00:00:00", "summary": {}, "datasets": datasets}


def build_workspace(root: Path, models: int, metrics: int, seed: int = 0) -> Workspace:
    """Create ``models`` model folders and ``metrics`` metrics files under ``root``."""
    rng = random.Random(seed)
    ws = Workspace(root).init()
    for i in range(models):
        name = f"Qwen3-{i % 7}B-{rng.choice(['arc', 'boolq', 'squad', 'openmath'])}_SFT_LoRa{2 ** (i % 9)}_NoQuant-{i:05d}"
        folder = ws.models_dir / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 128}))
        (folder / "training_metadata.json").write_text(json.dumps({
            "model_info": {"model_name": name, "base_model": "Qwen/Qwen3-0.6B", "total_params": 596049920,
                           "quantization_tag": "NoQuant", "fine_tuning_date": "2026-11-20T10:00:00"},
            "training_parameters": {"preset": {"data": {"dataset": "arc"}, "peft": {"method": "LoRa", "r": 16}}}}))
        _safetensors_stub(folder / "model.safetensors")
        (folder / "tokenizer.json").write_text("{}")
        if i < metrics:
            ws.metrics_file(name).write_text(json.dumps(metrics_document(name, rng)))
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--metrics", type=int, default=2500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ws = build_workspace(Path(tmp), args.models, args.metrics)
        print(f"built {args.models} models / {args.metrics} metrics files in {time.perf_counter() - t0:.1f} s")
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            records = scan_models(ws)
            timings.append(time.perf_counter() - t0)
        tested = sum(r.status == "tested" for r in records)
        print(f"scan_models: {len(records)} records ({tested} tested); cold (first) scan {timings[0]:.3f} s "
              f"(goal ≤ 1.5 s) -> {'OK' if timings[0] <= 1.5 else 'SLOW'}; warm rescans (metrics headline "
              f"cached by mtime) {min(timings[1:]):.3f} s")


if __name__ == "__main__":
    main()
