"""Evaluation throughput: llmtui's batched engine against the legacy scripts' one-prompt-at-a-time loop.

Same model object, same items, one run. The legacy scripts' loop is re-created here as it was: for each item
render the prompt, ``model.generate`` with ``max_new_tokens=1000`` (greedy), decode the new tokens,
extract the first ``\\boxed{}``. Prints items/s of both, the ratio, and how many predictions differ.

Goal (issue 4): ≥ 10× on the CPU with a trained tiny model and 0 differing predictions.

    python bench/eval_throughput.py                       # demo workspace + boolq-full trained first (temp)
    python bench/eval_throughput.py -w DIR                # the same, kept in DIR and reused on the next run
    python bench/eval_throughput.py -w WS --model NAME    # an existing model (folder name in WS/Models)
    options: --dataset boolq --limit 200 --batch-size auto --threads N --device cpu --rounds 1 --json FILE
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from engine.workspace import Workspace  # noqa: E402

LEGACY_MAX_NEW_TOKENS = 1000


def trained_demo_model(root: Path, test_rows: int) -> tuple[Workspace, str]:
    """The demo workspace at ``root`` with its boolq-full preset trained (the product's own training path).

    Both are reused when ``root`` already has them.
    """
    from engine.presets.config import load_preset
    from engine.runs.demo import create_demo
    from engine.runs.train import train

    ws = create_demo(root, train_rows=1000, test_rows=test_rows)
    preset = ws.experiments_dir / "boolq-full.toml"
    config = load_preset(preset)
    if ws.model_dir(config.output_name()).is_dir():
        return ws, config.output_name()
    print(f"training {config.output_name()} (demo preset boolq-full) …", flush=True)
    started = time.perf_counter()
    result = train(ws, config, preset_text=preset.read_text())
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    return ws, result.model_name


def legacy_loop(model, tokenizer, task, items) -> tuple[list[str | None], list[bool]]:
    """The legacy scripts' evaluation loop: one prompt at a time, max_new_tokens=1000, decode, first box."""
    import torch

    from engine.results.scoring import extract_boxed, score_item
    from engine.data.prompts import render_prompt

    preds, correct = [], []
    for item in items:
        prompt = render_prompt(tokenizer, task, item)
        inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=LEGACY_MAX_NEW_TOKENS, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        preds.append(extract_boxed(text))
        correct.append(score_item(task.kind, text, item.answer).correct)
    return preds, correct


def llmtui_engine(loaded, task, items, batch_size: int | str, device: str):
    """llmtui's path, as ``llmtui eval`` runs it (the brace-token table is built inside the timing)."""
    from engine.runs.evaluate import brace_token_mask, evaluate_dataset, start_batch_size

    mask = brace_token_mask(loaded.tokenizer, int(loaded.model.config.vocab_size))
    run = evaluate_dataset(loaded, task, items, batch_size=start_batch_size(batch_size, device), brace_mask=mask,
                           host_memory_cap=batch_size == "auto" and device == "cpu")
    return [row["extracted"] for row in run.rows], [row["correct"] for row in run.rows], run.batch_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-w", "--workspace",
                        help="workspace holding the model and Datasets/ (or where to build the demo)")
    parser.add_argument("--model", help="model name in the workspace's Models/ (default: train the demo's boolq-full)")
    parser.add_argument("--dataset", default="boolq")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=1, help="alternate both paths this many times; medians")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import torch

    from engine.data.tasks import get_task, load_items
    from engine.runs.loading import load_for_inference

    if args.threads:
        torch.set_num_threads(args.threads)
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    with tempfile.TemporaryDirectory(prefix="llmtui-bench-") as tmp:
        if args.model:
            ws = Workspace(Path(args.workspace or ".").resolve())
            name = args.model
        else:
            root = Path(args.workspace).resolve() if args.workspace else Path(tmp) / "ws"
            ws, name = trained_demo_model(root, test_rows=max(args.limit, 100))
        task = get_task(args.dataset, ws.datasets_dir)
        items = load_items(ws.datasets_dir, task, "test", args.limit)
        loaded = load_for_inference(ws.model_dir(name), device=args.device)
        legacy_loop(loaded.model, loaded.tokenizer, task, items[:2])  # warm both paths up
        llmtui_engine(loaded, task, items[:2], batch_size, args.device)

        legacy_times, llmtui_times = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            legacy_preds, legacy_correct = legacy_loop(loaded.model, loaded.tokenizer, task, items)
            legacy_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            preds, correct, used = llmtui_engine(loaded, task, items, batch_size, args.device)
            llmtui_times.append(time.perf_counter() - started)

    legacy_s, llmtui_s = statistics.median(legacy_times), statistics.median(llmtui_times)
    differing = sum(a != b for a, b in zip(preds, legacy_preds))
    figures = {
        "model": name, "dataset": task.test_file, "items": len(items), "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch_threads": torch.get_num_threads(), "batch_size_used": used, "rounds": args.rounds,
        "legacy_items_per_s": round(len(items) / legacy_s, 2), "llmtui_items_per_s": round(len(items) / llmtui_s, 2),
        "ratio": round(legacy_s / llmtui_s, 2), "differing_predictions": differing,
        "differing_correct": sum(a != b for a, b in zip(correct, legacy_correct)),
        "accuracy": round(sum(correct) / len(correct), 4),
    }
    print(f"{figures['items']} {task.name} items, {name}, {args.device} ({figures['torch_threads']} threads)")
    legacy_label = f"legacy loop (1 prompt/call, max_new_tokens={LEGACY_MAX_NEW_TOKENS})"
    print(f"  {legacy_label:<52} {figures['legacy_items_per_s']:8.2f} items/s")
    llmtui_label = f"llmtui (batch {used}, shared prefix, stop at first box)"
    print(f"  {llmtui_label:<52} {figures['llmtui_items_per_s']:8.2f} items/s")
    print(f"  ratio {figures['ratio']}x, differing predictions: {differing}, accuracy {figures['accuracy']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if differing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
