"""What checkpointing costs: the same tiny training with and without checkpoints, steps/s of both and the ratio.

Usage: ``python bench/checkpoint_cost.py [--steps 100] [--save-steps 10] [--repeats 3] [--threads 1]``

Each run is a fresh subprocess on a demo workspace built in a temp folder (full fine-tuning of the tiny
demo model, ``boolq-full`` preset): ``train.save_steps = 0`` against ``train.save_steps = N`` (each
checkpoint holds the weights, the AdamW state, the scheduler and RNG states), alternating so machine
load hits both alike. It prints training-loop steps/s (the trainer's own clock, which includes the saves)
and CPU seconds (``time.process_time`` around ``trainer.train()``, which other processes' load barely
moves; disk waits are not in it), the median of each and their ratios, and each checkpoint's own time
(from the step that decided to save to the end of the save). The tiny model's checkpoint is 4.5 MB, so
this measures the fixed cost of a save; a real model's grows with its size and the disk (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUN = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
from pathlib import Path
import engine.runs.train as training
from engine.presets.config import load_preset
from engine.runs.train import train
from engine.workspace import Workspace

saves = []
plain_callback = training.checkpoint_callback

def timed_callback(save_steps):
    # the time from the step that decided to save to the end of that save (the trainer saves in between)
    callback = plain_callback(save_steps)
    step_end, on_save, began = callback.on_step_end, callback.on_save, []

    def timed_step_end(args, state, control, **kwargs):
        step_end(args, state, control, **kwargs)
        if control.should_save:
            began.append(time.perf_counter())

    def timed_save(args, state, control, **kwargs):
        on_save(args, state, control, **kwargs)
        saves.append(time.perf_counter() - began.pop())

    callback.on_step_end, callback.on_save = timed_step_end, timed_save
    return callback

training.checkpoint_callback = timed_callback
ws = Workspace(Path(sys.argv[1]))
config = load_preset(ws.experiments_dir / "boolq-full.toml",
                     [f"train.max_steps={sys.argv[2]}", f"train.save_steps={sys.argv[3]}", "train.save_total_limit=2"])
result = train(ws, config, overwrite=True)
stats = result.metadata["training_stats"]
print(json.dumps({"steps": stats["total_steps"], "train_runtime": stats["train_runtime_s"],
                  "cpu": stats["train_cpu_s"], "saves": saves}))
"""


def run_once(root: Path, steps: int, save_steps: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", RUN, str(root), str(steps), str(save_steps), str(threads)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--save-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from engine.runs.demo import create_demo

    with tempfile.TemporaryDirectory(prefix="llmtui-bench-ckpt-") as tmp:
        root = Path(tmp) / "ws"
        create_demo(root, train_rows=2000, test_rows=10)
        runtimes: dict[int, list[float]] = {0: [], args.save_steps: []}
        cpu: dict[int, list[float]] = {0: [], args.save_steps: []}
        save_times: list[float] = []
        for _ in range(args.repeats):
            for save_steps in runtimes:
                result = run_once(root, args.steps, save_steps, args.threads)
                runtimes[save_steps].append(result["train_runtime"])
                cpu[save_steps].append(result["cpu"])
                save_times += result["saves"]
                print(f"save_steps={save_steps:<4} {args.steps / result['train_runtime']:.2f} steps/s "
                      f"({result['train_runtime']:.2f} s, {result['cpu']:.2f} CPU s)", flush=True)
    saves = args.steps // args.save_steps  # at each multiple of save_steps (no extra save at the last step)
    for what, values, unit in (("wall", runtimes, "s"), ("CPU", cpu, "CPU s")):
        without, with_saves = statistics.median(values[0]), statistics.median(values[args.save_steps])
        print(f"{what}: median over {args.repeats}: without checkpoints {args.steps / without:.2f} steps/s, with a "
              f"checkpoint every {args.save_steps} steps {args.steps / with_saves:.2f} steps/s; steps/s with ÷ "
              f"without {without / with_saves:.3f}; {(with_saves - without) / saves:.3f} {unit} per checkpoint")
    print(f"one checkpoint, timed around the trainer's save: median {statistics.median(save_times) * 1000:.0f} ms "
          f"over {len(save_times)} saves")


if __name__ == "__main__":
    main()
