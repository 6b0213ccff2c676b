"""Arena benchmark: two models answering at once (each its own chat server, the CPU cores divided between them,
as the Arena runs them) vs one after the other (each server alone with every core), on the CPU.

    .venv/bin/python bench/arena.py [--max-tokens 256] [--rounds 2] [--same-threads]

Uses a temporary demo workspace: its tiny Qwen3 and a second one with other random weights (the same
tokenizer). Greedy, so each model writes the same tokens in both arrangements. Prints the wall time from
starting the servers to the last answer (loading included: that is what a person waits for) and the
generation time alone, and their ratios (sequential / together: above 1 means the Arena saves time).
``--same-threads`` gives the servers that run one after the other the same share of the cores as those
that run together (on a machine busy with other work, torch's threads thrash: this separates that effect).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from engine.arena import cpu_cores, placements
from engine.workspace import Workspace
from tui.arena_servers import answer_once

MODELS = ["tiny-qwen3", "tiny-other"]
QUESTION = "Is the cup red or blue? Explain your answer in a few sentences."


def build(root: Path) -> Workspace:
    from engine.data.synthetic import corpus_for_tokenizer
    from engine.runs.demo import create_demo
    from engine.runs.tiny import build_tiny_model

    ws = create_demo(root, train_rows=50, test_rows=10)
    build_tiny_model(ws.models_dir / MODELS[1], corpus_for_tokenizer(ws.datasets_dir), seed=1)
    return ws


def run(ws: Workspace, models: list[str], request: dict, cores: int) -> tuple[float, float, list[int]]:
    """(wall seconds, the longest generation's seconds, tokens per model) for ``models`` at once, sharing
    ``cores``."""
    began = time.perf_counter()
    columns = answer_once(ws, models, placements(len(models), [], [], 0.1, cores), request, timeout_s=600)
    wall = time.perf_counter() - began
    failed = [f"{c.model}: {c.error}" for c in columns if c.state != "done"]
    if failed:
        raise SystemExit("; ".join(failed))
    return wall, max(c.seconds or 0.0 for c in columns), [c.tokens or 0 for c in columns]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="repeat both arrangements, alternating")
    parser.add_argument("--same-threads", action="store_true",
                        help="one after the other, each server gets the share it has together (not every core)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    request = {"messages": [{"role": "user", "content": QUESTION}], "system": None, "temperature": 0,
               "max_new_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory(prefix="llmtui-bench-arena-") as tmp:
        ws = build(Path(tmp) / "ws")
        cores = cpu_cores()
        alone = max(1, cores // len(MODELS)) if args.same_threads else cores
        print(f"{cores} CPU cores; models {', '.join(MODELS)}; up to {args.max_tokens} new tokens, greedy; "
              f"together {max(1, cores // len(MODELS))} thread(s) each, one after the other {alone}")
        together_wall, together_gen, sequential_wall, sequential_gen = [], [], [], []
        for round_ in range(args.rounds):
            wall, gen, tokens = run(ws, MODELS, request, cores)
            together_wall.append(wall)
            together_gen.append(gen)
            walls, gens = zip(*[run(ws, [model], request, alone)[:2] for model in MODELS])
            sequential_wall.append(sum(walls))
            sequential_gen.append(sum(gens))
            print(f"round {round_ + 1}: together {wall:.2f} s wall ({gen:.2f} s generating, tokens {tokens}); "
                  f"one after the other {sum(walls):.2f} s wall ({sum(gens):.2f} s generating)")
        wall_ratio = statistics.median(s / t for s, t in zip(sequential_wall, together_wall))
        gen_ratio = statistics.median(s / t for s, t in zip(sequential_gen, together_gen))
        print(f"wall time, one after the other / together: {wall_ratio:.2f}× (median of {args.rounds} rounds)")
        print(f"generation alone, one after the other / together: {gen_ratio:.2f}×")


if __name__ == "__main__":
    main()
