"""lm-eval tasks: llmtui's ``llmtui`` model class against lm-eval's own ``hf`` backend, same model, tasks and run.

Two demo models, trained once by the product's own training path: ``trained``, the tiny demo model fully
fine-tuned on the demo's synthetic ARC for 300 steps (about a minute), whose answers to the real questions
below run from a short box to the ceiling, most short: the mixed answer lengths where static batches wait
for their longest answer; and ``weak``, the demo preset arc-qlora-gptq trained without its PTQ step (QLoRA,
50 steps, merged, as ``bench/eval_throughput.py``'s mixed workload), which rambles to the ceiling on most
items: there every static batch runs to the ceiling anyway, so continuous batching saves few forward passes
and only the cost of each step counts (reported, no goal). The tasks are the local ones of
``tests/lmeval_tasks.py`` built from ../shared/datasets, 0-shot with the model's chat template for
generation: ``llmtui_arc_generate`` and ``llmtui_openmath`` (generate_until, ``--max-gen-toks``) and
``llmtui_arc`` + ``llmtui_boolq`` (multiple-choice loglikelihood, ``--fewshot`` examples in each context).
Each backend runs each workload ``--rounds`` times, alternating, with the same batch size. The ratio is of
CPU time (the process's, one torch thread): on this shared machine a process gets a varying share of the
cores, so wall time (also printed) swings 3x between identical runs. Every sample's output must be
identical (generated text equal, loglikelihoods within 1e-4, same greedy flags).
Goals: >= 2x faster on generate_until with mixed answer lengths (OpenMath, the issue's generate_until task, on
the trained model; ARC's is reported beside it), no slower on loglikelihood.

    python bench/lmeval_speed.py [-w DIR] [--model FOLDER] [--items 64] [--batch-size 16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.workspace import Workspace  # noqa: E402
from tests.lmeval_tasks import write_task_folder  # noqa: E402

#: workload → (tasks, chat template, few-shot examples: None = --fewshot, model). The goal's workload is the
#: issue's generate_until task (OpenMath) with mixed answer lengths.
WORKLOADS = {"generate_until_mixed": (["llmtui_openmath"], True, 0, "trained"),
             "generate_until_mixed_arc": (["llmtui_arc_generate"], True, 0, "trained"),
             "generate_until_ceiling_heavy": (["llmtui_openmath"], True, 0, "weak"),
             "generate_until_ceiling_heavy_arc": (["llmtui_arc_generate"], True, 0, "weak"),
             "loglikelihood": (["llmtui_arc", "llmtui_boolq"], False, None, "weak")}
GOAL = "generate_until_mixed"


def run(lm, ws: Workspace, manager, tasks: list[str], items: int, fewshot: int,
        chat: bool) -> tuple[float, float, dict]:
    import lm_eval

    from engine.runs.lmeval_run import in_tasks_folder

    with in_tasks_folder(ws):
        started, cpu = time.perf_counter(), time.process_time()
        results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=fewshot, limit=items, log_samples=True,
                                          task_manager=manager, bootstrap_iters=0, apply_chat_template=chat)
        return time.process_time() - cpu, time.perf_counter() - started, results


def differences(ours: dict, theirs: dict) -> tuple[int, float, int]:
    """(samples whose outputs differ, largest loglikelihood difference, samples compared)."""
    differing, worst, compared = 0, 0.0, 0
    for task, samples in theirs["samples"].items():
        for a, b in zip(ours["samples"][task], samples):
            compared += 1
            same = a["doc_id"] == b["doc_id"]
            for (ra,), (rb,) in zip(a["resps"], b["resps"]):
                if isinstance(ra, str):
                    same &= ra == rb
                else:
                    worst = max(worst, abs(float(ra[0]) - float(rb[0])))
                    same &= abs(float(ra[0]) - float(rb[0])) <= 1e-4 and ra[1] == rb[1]
            differing += not same
    return differing, worst, compared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-w", "--workspace", type=Path, default=Path("/tmp/llmtui-bench-lmeval"))
    parser.add_argument("--model", help="one model folder for every workload (default: the two demo models)")
    parser.add_argument("--items", type=int, default=64, help="items per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-gen-toks", type=int, default=256)
    parser.add_argument("--fewshot", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM

    from engine.runs.lmeval_backend import LlmtuiLM
    from engine.runs.lmeval_run import load_tasks, tasks_folder

    torch.set_num_threads(1)  # a model this small gains nothing from threads on a shared machine
    sys.path.insert(0, str(ROOT / "bench"))
    from eval_throughput import trained_demo_model

    ws, weak = trained_demo_model(args.workspace, "arc-qlora-gptq", test_rows=20, skip_ptq=True)
    _, trained = trained_demo_model(args.workspace, "boolq-full", test_rows=20, dataset="arc", max_steps=300)
    # ../shared/datasets beside the checkout, or beside a folder above it (a git worktree)
    shared = next((p / "shared" / "datasets" for p in ROOT.parents if (p / "shared" / "datasets").is_dir()), None)
    if shared is None:
        parser.error("../shared/datasets not found beside the checkout")
    write_task_folder(tasks_folder(ws), shared, rows=args.items, max_gen_toks=args.max_gen_toks, train_rows=20)
    manager = load_tasks(ws, [t for tasks, _, _, _ in WORKLOADS.values() for t in tasks])
    models = {key: args.model or str(ws.model_dir(name)) for key, name in (("weak", weak), ("trained", trained))}
    report: dict = {"models": models, "items": args.items, "batch_size": args.batch_size,
                    "max_gen_toks": args.max_gen_toks, "fewshot": args.fewshot, "workloads": {}}
    for key, model in models.items():
        backends = {"hf": HFLM(pretrained=model, device="cpu", dtype="float32", batch_size=args.batch_size),
                    "llmtui": LlmtuiLM(pretrained=model, device="cpu", batch_size=args.batch_size)}
        for workload, (tasks, chat, fewshot, model_key) in WORKLOADS.items():
            if model_key != key:
                continue
            fewshot = args.fewshot if fewshot is None else fewshot
            best: dict[str, float] = {}
            wall: dict[str, float] = {}
            outputs: dict[str, dict] = {}
            for _ in range(args.rounds):
                for name, lm in backends.items():
                    seconds, wall_s, outputs[name] = run(lm, ws, manager, tasks, args.items, fewshot, chat)
                    best[name] = min(best.get(name, seconds), seconds)
                    wall[name] = min(wall.get(name, wall_s), wall_s)
            differing, worst, compared = differences(outputs["llmtui"], outputs["hf"])
            lengths = [len(backends["llmtui"].tokenizer(s["resps"][0][0], add_special_tokens=False)["input_ids"])
                       for task in tasks for s in outputs["llmtui"]["samples"][task]] \
                if workload.startswith("generate") else []
            ratio = best["hf"] / best["llmtui"]
            report["workloads"][workload] = {"model": key, "hf_cpu_s": best["hf"], "llmtui_cpu_s": best["llmtui"],
                                             "speedup": ratio, "hf_wall_s": wall["hf"], "llmtui_wall_s": wall["llmtui"],
                                             "differing": differing, "compared": compared, "max_ll_diff": worst,
                                             "answer_tokens": sorted(lengths) or None}
            print(f"{workload} ({', '.join(tasks)}, {key} model): CPU hf {best['hf']:.2f} s, llmtui "
                  f"{best['llmtui']:.2f} s -> {ratio:.2f}x (wall {wall['hf']:.1f} vs {wall['llmtui']:.1f} s); "
                  f"{differing}/{compared} samples differ (max loglikelihood difference {worst:.1e})"
                  + (f"; answers {min(lengths)}-{max(lengths)} tokens (median {sorted(lengths)[len(lengths) // 2]}, "
                     f"{sum(n >= args.max_gen_toks - 1 for n in lengths)} at the ceiling)" if lengths else ""),
                  flush=True)
        del backends
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    goals = report["workloads"]
    ok = goals[GOAL]["speedup"] >= 2 and goals["loglikelihood"]["speedup"] >= 1 and \
        all(w["differing"] == 0 for w in goals.values())
    print("goals met" if ok else f"GOALS NOT MET: >= 2x on {GOAL}, >= 1x on loglikelihood, 0 differing")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
