"""Training overhead of llmtui over a bare TRL script: the same tiny config, steps/s of both and the ratio.

Usage: ``python bench/train_overhead.py [--steps 100] [--repeats 3] [--threads 1]``

Both runs happen in fresh subprocesses (same thread count), alternating, on a demo workspace built in a
temp folder: llmtui through ``engine.runs.train.train`` (events file, progress callback, pre-tokenized data,
metadata, staged output) and a bare ``SFTTrainer`` script on the same prompt/completion pairs. It prints
training-loop steps/s (``steps / train_runtime``, the trainer's own clock) and end-to-end wall time of
each run, the best and the median of each, llmtui's overhead in percent, and the CPU time per training step
(``time.process_time`` around ``trainer.train()``), which other processes' load barely moves. Goal: overhead
<= 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMMON_SETTINGS = {"learning_rate": 2e-3, "per_device_train_batch_size": 16, "max_length": 128,
                   "lr_scheduler_type": "cosine", "logging_steps": 10, "seed": 42}

LLMTUI_RUN = r"""
import json, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[3]))
from pathlib import Path
from engine.presets.config import load_preset
from engine.runs.train import train
from engine.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
config = load_preset(ws.experiments_dir / "boolq-full.toml", [f"train.max_steps={sys.argv[2]}"])
result = train(ws, config, overwrite=True, events_path=ws.root / "bench-events.jsonl")
stats = result.metadata["training_stats"]
print(json.dumps({"steps": stats["total_steps"], "train_runtime": stats["train_runtime_s"], "cpu": stats["train_cpu_s"],
                  "wall": time.perf_counter() - start, "loss": stats["mean_train_loss"]}))
"""

BARE_TRL_RUN = r"""
import json, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[3]))
from pathlib import Path
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from engine.data.tasks import get_task, load_items
from engine.data.prompts import render_example
root, steps = Path(sys.argv[1]), int(sys.argv[2])
settings = json.loads(sys.argv[4])
base = root / "Models" / "tiny-qwen3"
tokenizer = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
task = get_task("boolq", root / "Datasets")
rows = [render_example(tokenizer, task, item) for item in load_items(root / "Datasets", task, "train")]
# bf16=False: TRL defaults to bf16 autocast, llmtui trains in float32 on the CPU; compare like with like.
args = SFTConfig(output_dir=str(root / "bare-out"), max_steps=steps, gradient_accumulation_steps=1,
                 warmup_steps=0.0, activation_checkpointing=False, use_cpu=True, bf16=False, report_to="none",
                 save_strategy="no", disable_tqdm=True, **settings)
trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
cpu_started = time.process_time()
output = trainer.train()
cpu = time.process_time() - cpu_started
trainer.save_model(str(root / "bare-out"))
print(json.dumps({"steps": trainer.state.global_step, "train_runtime": output.metrics["train_runtime"], "cpu": cpu,
                  "wall": time.perf_counter() - start, "loss": output.training_loss}))
"""


def run(kind: str, root: Path, steps: int, threads: int) -> dict:
    code = LLMTUI_RUN if kind == "llmtui" else BARE_TRL_RUN
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", code, str(root), str(steps), str(threads),
                           json.dumps(COMMON_SETTINGS)], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["steps_per_s"] = result["steps"] / result["train_runtime"]
    result["cpu_ms_per_step"] = 1000 * result["cpu"] / result["steps"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from engine.runs.demo import create_demo

    with tempfile.TemporaryDirectory(prefix="llmtui-bench-train-") as tmp:
        root = Path(tmp) / "ws"
        create_demo(root)
        results: dict[str, list[dict]] = {"llmtui": [], "bare TRL": []}
        for repeat in range(args.repeats):
            order = ("llmtui", "bare TRL") if repeat % 2 == 0 else ("bare TRL", "llmtui")
            for kind in order:
                began = time.time()
                result = run("llmtui" if kind == "llmtui" else "bare", root, args.steps, args.threads)
                results[kind].append(result)
                print(f"run {repeat + 1} {kind:8s}: {result['steps_per_s']:.2f} steps/s in the training loop "
                      f"({result['cpu_ms_per_step']:.1f} CPU ms/step), "
                      f"{result['wall']:.1f} s end to end, mean loss {result['loss']:.4f} "
                      f"({time.time() - began:.0f} s with the interpreter)", flush=True)
        print(f"\n{args.steps} steps × batch {COMMON_SETTINGS['per_device_train_batch_size']}, tiny Qwen3, "
              f"{args.threads} thread(s), {args.repeats} runs each (best = least disturbed by other load):")
        summary = {}
        for kind, runs in results.items():
            speeds, walls = [r["steps_per_s"] for r in runs], [r["wall"] for r in runs]
            summary[kind] = {"best": (max(speeds), min(walls)),
                             "median": (statistics.median(speeds), statistics.median(walls))}
            print(f"  {kind:8s}: best {max(speeds):.2f} steps/s ({min(walls):.1f} s end to end), "
                  f"median {statistics.median(speeds):.2f} steps/s ({statistics.median(walls):.1f} s)")
        for statistic in ("best", "median"):
            (ours, our_wall), (bare, bare_wall) = summary["llmtui"][statistic], summary["bare TRL"][statistic]
            print(f"  {statistic:6s}: training loop llmtui/bare time ratio {bare / ours:.3f} "
                  f"(overhead {100 * (bare / ours - 1):+.1f} %, goal <= +5 %); end to end {our_wall / bare_wall:.3f} "
                  f"({100 * (our_wall / bare_wall - 1):+.1f} %)")
        cpu = {kind: statistics.median(r["cpu_ms_per_step"] for r in runs) for kind, runs in results.items()}
        print(f"  CPU time per step (median; barely moved by other processes' load): llmtui {cpu['llmtui']:.1f} ms, "
              f"bare {cpu['bare TRL']:.1f} ms, ratio {cpu['llmtui'] / cpu['bare TRL']:.3f} "
              f"(overhead {100 * (cpu['llmtui'] / cpu['bare TRL'] - 1):+.1f} %)")

if __name__ == "__main__":
    main()
