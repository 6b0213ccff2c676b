"""Evaluation throughput: llmtui's engines against one-prompt-at-a-time loops, every figure from one run.

Workloads (``--workload``, default all three):
  short    the demo's boolq-full model on 200 BoolQ items: the built-in engine vs the legacy scripts' loop (one
           prompt per ``generate`` call, ``max_new_tokens=1000``, no stop at the box). Goal (issue 4): >= 10x,
           0 differing.
  mixed    a weakly trained demo model (the demo preset arc-qlora-gptq trained without its PTQ step: QLoRA, 50
           steps, merged) on 32 items of each of the four test sets, answers from 3 tokens to the 1,024-token
           ceiling. The built-in engine's total time against the physical bound (the sum over the test sets of
           each set's slowest item generated alone under the same ceiling), goal <= 2x; against the
           one-at-a-time loop (transformers' ``generate``, same stop rule and ceilings), whose predictions
           must be identical; and with ``--vllm PYTHON``, vLLM on the same token ids (its startup reported apart).
  threads  the mixed workload's built-in engine with torch's default threads (one per core) against
           ``choose_threads``'s pick, while ``--busy`` processes spin on the CPU (a busy machine, made on purpose).

    python bench/eval_throughput.py [-w DIR] [--workload short,mixed,threads] [--vllm .venv-vllm/bin/python]
    options: --limit 32 (mixed items per set) --short-limit 200 --busy N (default: one per core) --json FILE
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from engine.workspace import Workspace  # noqa: E402

LEGACY_MAX_NEW_TOKENS = 1000
MIXED_SETS = ("openmath", "squad", "arc", "boolq")


def trained_demo_model(root: Path, preset_name: str, *, test_rows: int, skip_ptq: bool = False,
                       dataset: str | None = None, max_steps: int | None = None) -> tuple[Workspace, str]:
    """The demo workspace at ``root`` with one of its presets trained by the product's own training path
    (on ``dataset`` instead of the preset's, for ``max_steps``, when given: the name says so).

    Both are reused when ``root`` already has them.
    """
    from engine.presets.config import load_preset
    from engine.runs.demo import create_demo
    from engine.runs.train import train

    ws = create_demo(root, train_rows=1000, test_rows=test_rows)
    preset = ws.experiments_dir / f"{preset_name}.toml"
    config = load_preset(preset)
    if skip_ptq:
        config.ptq = []
    if dataset:
        config.data.dataset, config.eval.datasets = dataset, [dataset]
    if max_steps:
        config.train.max_steps, config.model.output_suffix = max_steps, f"s{max_steps}"
    if ws.model_dir(config.output_name()).is_dir():
        return ws, config.output_name()
    print(f"training {config.output_name()} (demo preset {preset_name}) …", flush=True)
    started = time.perf_counter()
    result = train(ws, config)
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    return ws, result.model_name


def prompt_ids(ws: Workspace, tokenizer, task_name: str, limit: int):
    from engine.data.prompts import render_prompt
    from engine.data.tasks import get_task, load_items
    from engine.data.prompts import tokenize_prompts

    task = get_task(task_name, ws.datasets_dir)
    items = load_items(ws.datasets_dir, task, "test", limit)
    return task, items, tokenize_prompts(tokenizer, [render_prompt(tokenizer, task, item) for item in items])


# ------------------------------------------------------------------------------------------------ short


def legacy_loop(model, tokenizer, task, items) -> list[str | None]:
    """The legacy scripts' evaluation loop: one prompt at a time, max_new_tokens=1000, decode, first box."""
    import torch

    from engine.data.prompts import render_prompt
    from engine.results.scoring import extract_boxed

    preds = []
    for item in items:
        inputs = tokenizer(render_prompt(tokenizer, task, item), return_tensors="pt").to(model.device)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=LEGACY_MAX_NEW_TOKENS, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[0][inputs["input_ids"].shape[1]:]
        preds.append(extract_boxed(tokenizer.decode(new_tokens, skip_special_tokens=True)))
    return preds


def short_workload(root: Path, limit: int) -> dict:
    from engine.results.scoring import extract_boxed
    from engine.runs.generation import brace_token_mask, generate_all
    from engine.runs.loading import load_for_inference

    ws, name = trained_demo_model(root / "short", "boolq-full", test_rows=max(limit, 100))
    loaded = load_for_inference(ws.model_dir(name), device="cpu")
    task, items, ids = prompt_ids(ws, loaded.tokenizer, "boolq", limit)
    started = time.perf_counter()
    legacy = legacy_loop(loaded.model, loaded.tokenizer, task, items)
    legacy_s = time.perf_counter() - started
    started = time.perf_counter()
    mask = brace_token_mask(loaded.tokenizer, loaded.model.config.vocab_size)  # inside the timing, as in eval
    gens, used = generate_all(loaded.model, loaded.tokenizer, ids, max_new_tokens=task.max_new_tokens,
                              batch_size=128, brace_mask=mask, host_memory_cap=True)
    engine_s = time.perf_counter() - started
    differing = sum(extract_boxed(g.text) != p for g, p in zip(gens, legacy))
    return {"model": name, "items": len(items), "legacy_loop_s": round(legacy_s, 2), "engine_s": round(engine_s, 2),
            "speedup": round(legacy_s / engine_s, 2), "batch_size": used, "differing_predictions": differing}


# ------------------------------------------------------------------------------------------------ mixed


def engine_pass(model, tokenizer, sets, mask) -> tuple[float, list]:
    from engine.runs.generation import generate_all

    started = time.perf_counter()
    gens = [generate_all(model, tokenizer, ids, max_new_tokens=task.max_new_tokens, batch_size=128,
                         brace_mask=mask, host_memory_cap=True)[0] for task, _, ids in sets]
    return time.perf_counter() - started, gens


def slowest_alone(model, tokenizer, task, ids, gens, mask) -> float:
    """The set's slowest item generated alone: its two longest answers, each by the engine (one row) and by
    transformers' ``generate``, the faster way for each; the slower item."""
    from engine.runs.generation import generate_all, generate_single

    longest = sorted(range(len(ids)), key=lambda i: (-gens[i].tokens, -len(ids[i])))[:2]
    times = []
    for index in longest:
        started = time.perf_counter()
        generate_all(model, tokenizer, [ids[index]], max_new_tokens=task.max_new_tokens, batch_size=1, brace_mask=mask)
        engine_s = time.perf_counter() - started
        started = time.perf_counter()
        generate_single(model, tokenizer, ids[index], task.max_new_tokens, mask)
        times.append(min(engine_s, time.perf_counter() - started))
    return max(times)


def mixed_workload(root: Path, limit: int, vllm_python: str | None) -> dict:
    from engine.data.prompts import stop_token_ids
    from engine.runs.generation import brace_token_mask, choose_threads, generate_single
    from engine.runs.loading import load_for_inference

    ws, name = trained_demo_model(root / "mixed", "arc-qlora-gptq", test_rows=max(limit, 100), skip_ptq=True)
    loaded = load_for_inference(ws.model_dir(name), device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    threads = choose_threads()
    sets = [prompt_ids(ws, tokenizer, task, limit) for task in MIXED_SETS]
    mask = brace_token_mask(tokenizer, model.config.vocab_size)
    engine_pass(model, tokenizer, [(t, i, ids[:4]) for t, i, ids in sets], mask)  # warm up
    engine_s, gens = engine_pass(model, tokenizer, sets, mask)
    bound = {task.name: slowest_alone(model, tokenizer, task, ids, g, mask) for (task, _, ids), g in zip(sets, gens)}
    started = time.perf_counter()
    single = [[generate_single(model, tokenizer, row, task.max_new_tokens, mask) for row in ids]
              for task, _, ids in sets]
    single_s = time.perf_counter() - started
    differing = sum((g.text, g.tokens) != s for gs, ss in zip(gens, single) for g, s in zip(gs, ss))
    tokens = [g.tokens for gs in gens for g in gs]
    figures = {
        "model": name, "items_per_set": limit, "threads": threads, "tokens_min": min(tokens),
        "tokens_max": max(tokens), "tokens_total": sum(tokens),
        "engine_s": round(engine_s, 2),
        "bound_s": round(sum(bound.values()), 2), "bound_s_per_set": {k: round(v, 2) for k, v in bound.items()},
        "engine_over_bound": round(engine_s / sum(bound.values()), 2),
        "one_at_a_time_s": round(single_s, 2), "speedup_over_one_at_a_time": round(single_s / engine_s, 2),
        "differing_from_one_at_a_time": differing,
    }
    if vllm_python:
        from engine.runs.vllm_client import VLLMBackend

        started = time.perf_counter()
        sequences = [[len(row) + task.max_new_tokens for row in ids] for task, _, ids in sets]
        backend = VLLMBackend(vllm_python, ws.model_dir(name), tokenizer, sequences=sequences, device="cpu",
                              threads=threads["threads"])
        figures["vllm_startup_s"] = round(time.perf_counter() - started, 1)
        eos = stop_token_ids(tokenizer, model.generation_config)
        try:
            backend.generate(sets[0][2][:4], 8, eos_ids=eos, brace_mask=mask)  # warm up
            started = time.perf_counter()
            vgens = [backend.generate(ids, task.max_new_tokens, eos_ids=eos, brace_mask=mask) for task, _, ids in sets]
            vllm_s = time.perf_counter() - started
        finally:
            backend.close()
        agree = sum((v.text, v.tokens) == (g.text, g.tokens) for vs, gs in zip(vgens, gens) for v, g in zip(vs, gs))
        figures.update({"vllm": backend.versions, "vllm_s": round(vllm_s, 2),
                        "vllm_over_bound": round(vllm_s / sum(bound.values()), 2),
                        "vllm_speedup_over_engine": round(engine_s / vllm_s, 2),
                        "vllm_agreeing_items": agree, "items": len(tokens)})
    return figures


# ---------------------------------------------------------------------------------------------- threads


def threads_workload(root: Path, limit: int, busy: int, rounds: int = 2) -> dict:
    import torch

    from engine.runs.generation import brace_token_mask, choose_threads
    from engine.runs.loading import load_for_inference

    ws, name = trained_demo_model(root / "mixed", "arc-qlora-gptq", test_rows=max(limit, 100), skip_ptq=True)
    loaded = load_for_inference(ws.model_dir(name), device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    sets = [prompt_ids(ws, tokenizer, task, limit) for task in MIXED_SETS]
    mask = brace_token_mask(tokenizer, model.config.vocab_size)
    cores = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(1.0)
        pick = choose_threads()
        times: dict[int, list[float]] = {cores: [], pick["threads"]: []}
        for _ in range(rounds):  # alternate, so both see the same machine
            for threads in times:
                torch.set_num_threads(threads)
                times[threads].append(engine_pass(model, tokenizer, sets, mask)[0])
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    best = {threads: min(values) for threads, values in times.items()}
    return {"cores": cores, "busy_processes": busy, "pick": pick, "rounds": rounds,
            "seconds": {str(k): [round(v, 2) for v in vs] for k, vs in times.items()},
            "default_over_pick": round(best[cores] / best[pick["threads"]], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-w", "--workspace", help="where to build (and reuse) the demo workspaces and models")
    parser.add_argument("--workload", default="short,mixed,threads")
    parser.add_argument("--limit", type=int, default=32, help="mixed workload: items per test set")
    parser.add_argument("--short-limit", type=int, default=200, help="short workload: BoolQ items")
    parser.add_argument("--vllm", metavar="PYTHON", help="vLLM's interpreter: also time vLLM on the mixed workload")
    parser.add_argument("--busy", type=int, help="threads workload: spinning processes (default: one per core)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    wanted = {w.strip() for w in args.workload.split(",") if w.strip()}
    figures = {}
    with tempfile.TemporaryDirectory(prefix="llmtui-bench-") as tmp:
        root = Path(args.workspace).resolve() if args.workspace else Path(tmp)
        if "short" in wanted:
            short = figures["short"] = short_workload(root, args.short_limit)
            print(f"short: {short['items']} BoolQ items: legacy loop {short['legacy_loop_s']} s, engine "
                  f"{short['engine_s']} s: {short['speedup']}x, differing predictions {short['differing_predictions']}",
                  flush=True)
        if "mixed" in wanted:
            mixed = figures["mixed"] = mixed_workload(root, args.limit, args.vllm)
            print(f"mixed: {args.limit} items x {len(MIXED_SETS)} sets, answers {mixed['tokens_min']}-"
                  f"{mixed['tokens_max']} tokens, {mixed['threads']['threads']} thread(s)\n"
                  f"  engine {mixed['engine_s']} s = {mixed['engine_over_bound']}x the bound {mixed['bound_s']} s "
                  f"{mixed['bound_s_per_set']}\n"
                  f"  one at a time {mixed['one_at_a_time_s']} s: engine {mixed['speedup_over_one_at_a_time']}x "
                  f"faster, differing {mixed['differing_from_one_at_a_time']}", flush=True)
            if "vllm_s" in mixed:
                print(f"  vLLM {mixed['vllm']['vllm']}: {mixed['vllm_s']} s (+ startup {mixed['vllm_startup_s']} s) = "
                      f"{mixed['vllm_over_bound']}x the bound, {mixed['vllm_speedup_over_engine']}x the engine, "
                      f"agreeing on {mixed['vllm_agreeing_items']}/{mixed['items']} items", flush=True)
        if "threads" in wanted:
            cores = len(os.sched_getaffinity(0))
            spinning = args.busy if args.busy is not None else cores
            busy = figures["threads"] = threads_workload(root, args.limit, spinning)
            print(f"threads: {busy['busy_processes']} spinning processes on {busy['cores']} cores: pick "
                  f"{busy['pick']['threads']} ({busy['pick']['reason']}); seconds {busy['seconds']}; torch's default "
                  f"{busy['cores']} threads took {busy['default_over_pick']}x the pick", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    short_ok = "short" not in figures or figures["short"]["differing_predictions"] == 0
    mixed_ok = "mixed" not in figures or figures["mixed"]["differing_from_one_at_a_time"] == 0
    return 0 if short_ok and mixed_ok else 1


if __name__ == "__main__":
    sys.exit(main())
