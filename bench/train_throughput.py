"""Training throughput and peak memory of llmtui (padding-free batches, chunked loss) against a bare TRL
``SFTTrainer`` script with its defaults: the same model, data and run, alternated, as ratios measured in one run.

Usage: ``python bench/train_throughput.py [--layers 2] [--steps 6] [--batch 4] [--max-length 512]
[--repeats 2] [--threads 2] [--datasets openmath boolq]``

The model is Qwen3-0.6B's real configuration (``../shared/real-configs/Qwen3-0.6B.json``: hidden size 1,024,
vocabulary 151,936) cut to ``--layers`` layers, randomly initialised, with Qwen3's real chat template and a BPE
tokenizer trained on the two training sets (no Hub download is possible here; the model's vocabulary stays the
real one, so the LM head costs what it costs in Qwen3-0.6B). The data are the real OpenMath and BoolQ training
sets in ``../shared/datasets``. Both sides train the same LoRA (r 16, alpha 32, no dropout, on q/k/v/o) for
``--steps`` optimizer steps of ``--batch`` examples from the same seed, at the precision llmtui picks for the
device (float32 on a CPU: TRL's default would be bf16 autocast there), with activation checkpointing (TRL's
default). Every run is its own child process, so each peak is its own: peak RSS on a CPU (the
child's ``VmHWM``), ``torch.cuda.max_memory_allocated`` on a GPU.

Printed per data set: non-padding tokens per second of both (the trainers' own count of non-padding tokens
over ``train_runtime``, and over the training loop's CPU time, which a loaded machine barely moves),
llmtui/bare ratio (goal >= 1.5), peak memory ratio (goal <= 0.7), and the share of
padding in the bare script's batches. Median over ``--repeats`` alternated runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LORA = {"r": 16, "alpha": 32, "dropout": 0.0}

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child's starts at its
# parent's peak (this script's, when it built the model itself: 2.2 GB, above llmtui's own). llmtui resets VmHWM when
# its training starts (engine.runs.device.reset_memory_peaks), so its side also reads it before calling train.
PEAK = r"""
def peak_mb():
    import resource, torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):  # not Linux: ru_maxrss
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
"""

LLMTUI_RUN = PEAK + r"""
import json, sys
import torch
torch.set_num_threads(int(sys.argv[4]))
from pathlib import Path
from engine.presets.config import load_preset
from engine.runs.train import train
from engine.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
config = load_preset(ws.experiments_dir / f"{sys.argv[2]}.toml", [f"train.max_steps={sys.argv[3]}"])
before_train = peak_mb()
result = train(ws, config, overwrite=True)
stats = result.metadata["training_stats"]
print(json.dumps({"tokens": stats["tokens_seen"], "runtime": stats["train_runtime_s"], "cpu": stats["train_cpu_s"],
                  "peak_mb": max(before_train, peak_mb()),
                  "loss": stats["mean_train_loss"], "padding_free": result.metadata["padding_free"]["used"],
                  "loss_kind": result.metadata["loss_chunk_tokens"]["loss"]}))
"""

BARE_TRL_RUN = PEAK + r"""
import json, sys
import torch
torch.set_num_threads(int(sys.argv[4]))
from pathlib import Path
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from engine.data.tasks import get_task, load_items
from engine.data.prompts import render_example
root, dataset, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
run = json.loads(sys.argv[5])
base = root / "Models" / run["model"]
tokenizer = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
task = get_task(dataset, root / "Datasets")
rows = [render_example(tokenizer, task, item) for item in load_items(root / "Datasets", task, "train", run["rows"])]
use_cpu = not torch.cuda.is_available()
args = SFTConfig(output_dir=str(root / "bare-out"), max_steps=steps, per_device_train_batch_size=run["batch"],
                 gradient_accumulation_steps=1, learning_rate=run["lr"], max_length=run["max_length"], seed=42,
                 use_cpu=use_cpu, bf16=not use_cpu, report_to="none", save_strategy="no", disable_tqdm=True)
lora = LoraConfig(r=run["r"], lora_alpha=run["alpha"], lora_dropout=run["dropout"], task_type="CAUSAL_LM",
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                     peft_config=lora)
collate, padded = trainer.data_collator, [0]
def counting(examples):  # counts the batch's tokens with padding; the batch itself is untouched
    batch = collate(examples)
    padded[0] += batch["input_ids"].numel()
    return batch
trainer.data_collator = counting
import time
cpu_started = time.process_time()
output = trainer.train()
cpu = time.process_time() - cpu_started
print(json.dumps({"tokens": int(trainer._total_train_tokens), "runtime": output.metrics["train_runtime"], "cpu": cpu,
                  "peak_mb": peak_mb(), "loss": output.training_loss, "padded_tokens": padded[0]}))
"""


SHARED: list[Path] = []  # --shared, when given


def _shared(name: str) -> Path:
    for folder in [*SHARED, *(parent / "shared" for parent in REPO.parents)]:
        if (folder / name).is_dir():
            return folder / name
    raise SystemExit(f"shared/{name} not found (beside {REPO} or in --shared)")


def build_workspace(root: Path, layers: int, vocab: int, batch: int, steps: int, max_length: int,
                    datasets: list[str]) -> tuple[Path, dict]:
    """A workspace with the real data linked in, the reduced Qwen3-0.6B and one llmtui preset per data set."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.data.tasks import get_task, load_items
    from engine.runs.tiny import family_tokenizer
    from engine.workspace import Workspace

    ws = Workspace(root).init()
    data = _shared("datasets")
    for path in data.glob("*.parquet"):
        (ws.datasets_dir / path.name).symlink_to(path)
    texts = []
    for name in ("openmath", "boolq"):
        task = get_task(name, ws.datasets_dir)
        texts += [f"{item.context or ''} {item.question} {item.answer}" for item in
                  load_items(ws.datasets_dir, task, "train", 0)]
    template = (_shared("chat-templates") / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    tokenizer = family_tokenizer("qwen3", template, texts, vocab_size=vocab)
    real = json.loads((_shared("real-configs") / "Qwen3-0.6B.json").read_text())
    real.update(num_hidden_layers=layers, max_window_layers=layers, torch_dtype="float32",
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model_type = real.pop("model_type")
    real.pop("architectures", None)
    config = AutoConfig.for_model(model_type, **real)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    name = f"Qwen3-0.6B-{layers}layers"
    model.save_pretrained(ws.models_dir / name)
    tokenizer.save_pretrained(ws.models_dir / name)
    run = {"model": name, "rows": batch * steps, "batch": batch, "max_length": max_length, "lr": 2e-4, **LORA}
    for dataset in datasets:
        (ws.experiments_dir / f"{dataset}.toml").write_text(
            f'[model]\nbase = "Models/{name}"\ndtype = "float32"\n[data]\ndataset = "{dataset}"\n'
            f'trunc_train = {run["rows"]}\n[peft]\nmethod = "LoRa"\nr = {LORA["r"]}\nalpha = {LORA["alpha"]}\n'
            f'dropout = {LORA["dropout"]}\ntarget_modules = ["attention"]\n[train]\nlearning_rate = {run["lr"]}\n'
            f'per_device_train_batch_size = {batch}\ngradient_accumulation_steps = 1\nmax_length = {max_length}\n'
            f'warmup_ratio = 0.0\nsave_steps = 0\nlogging_steps = 1\n', encoding="utf-8")
    return ws.root, run


def _build_in_child(shared: list[Path], *args) -> tuple[Path, dict]:
    SHARED.extend(shared)
    return build_workspace(*args)


def run_side(kind: str, root: Path, dataset: str, steps: int, threads: int, run: dict) -> dict:
    code = LLMTUI_RUN if kind == "llmtui" else BARE_TRL_RUN
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", code, str(root), dataset, str(steps), str(threads), json.dumps(run)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run on {dataset} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["tokens_per_s"] = result["tokens"] / result["runtime"]
    result["tokens_per_cpu_s"] = result["tokens"] / result["cpu"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=16000, help="BPE tokenizer size (the model keeps 151,936)")
    parser.add_argument("--datasets", nargs="+", default=["openmath", "boolq"])
    parser.add_argument("--shared", type=Path, help="the shared folder (datasets, real-configs, chat-templates); "
                                                    "default: ../shared beside the checkout")
    args = parser.parse_args()
    SHARED.extend([args.shared] if args.shared else [])

    with tempfile.TemporaryDirectory(prefix="llmtui-bench-throughput-") as tmp:
        # built in a process of its own: this one stays small (no torch, no model) while the runs go
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            root, run = pool.submit(_build_in_child, SHARED, Path(tmp) / "ws", args.layers, args.vocab, args.batch,
                                    args.steps, args.max_length, args.datasets).result()
        print(f"Qwen3-0.6B config with {args.layers} layers (hidden 1024, vocabulary 151,936), LoRA r {LORA['r']}, "
              f"{args.steps} steps x batch {args.batch}, max_length {args.max_length}, {args.threads} thread(s)",
              flush=True)
        summary = []
        for dataset in args.datasets:
            results: dict[str, list[dict]] = {"llmtui": [], "bare": []}
            for repeat in range(args.repeats):
                order = ("llmtui", "bare") if repeat % 2 == 0 else ("bare", "llmtui")
                for kind in order:
                    began = time.time()
                    result = run_side(kind, root, dataset, args.steps, args.threads, run)
                    results[kind].append(result)
                    print(f"{dataset} run {repeat + 1} {kind:6s}: {result['tokens_per_s']:.1f} non-padding tokens/s "
                          f"({result['tokens']} tokens in {result['runtime']:.1f} s, {result['cpu']:.1f} CPU s), "
                          f"peak {result['peak_mb']:.0f} MB, "
                          f"mean loss {result['loss']:.4f} ({time.time() - began:.0f} s with the interpreter)",
                          flush=True)
            ours, bare = results["llmtui"], results["bare"]
            speed = statistics.median(r["tokens_per_s"] for r in ours) / statistics.median(
                r["tokens_per_s"] for r in bare)
            cpu_speed = statistics.median(r["tokens_per_cpu_s"] for r in ours) / statistics.median(
                r["tokens_per_cpu_s"] for r in bare)
            memory = statistics.median(r["peak_mb"] for r in ours) / statistics.median(r["peak_mb"] for r in bare)
            padding = 1 - bare[0]["tokens"] / bare[0]["padded_tokens"]
            same = ours[0]["tokens"] == bare[0]["tokens"]
            summary.append((dataset, speed, cpu_speed, memory, padding, same, ours[0], bare[0]))
        print("\nmedian of the alternated runs:")
        for dataset, speed, cpu_speed, memory, padding, same, ours, bare in summary:
            print(f"  {dataset:9s}: non-padding tokens/s llmtui/bare {speed:.2f}x (goal >= 1.5; per CPU second, "
                  f"which other processes' load barely moves: {cpu_speed:.2f}x), peak memory "
                  f"llmtui/bare {memory:.2f}x (goal <= 0.7), padding in the bare script's batches "
                  f"{100 * padding:.1f} %; "
                  f"tokens trained {ours['tokens']} vs {bare['tokens']}{'' if same else ' (differ)'}; llmtui used "
                  f"padding_free={ours['padding_free']}, loss={ours['loss_kind']}")


if __name__ == "__main__":
    main()
