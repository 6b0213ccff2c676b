"""Every llmtui stage on real-size models (Qwen3-0.6B and Llama-3.2-1B shaped, random bf16 weights) on the
CPU: wall time, peak resident memory, and peak ÷ the stage's analytic floor.

Each stage runs as its own child process — the real ``llmtui`` commands where one exists — measured by
``engine.jobs.peak.run_measured`` (the larger of the tree's high-water marks and its summed RSS, polled at 0.2 s).

The floor of a stage (``engine.models.estimate``, the formulas are written there) is the sum of what the
stage cannot do without: the weights in the dtype the stage uses (float32 on the CPU for training,
merging and generation; bf16 for the snapshot), the trainable parameters' gradients and AdamW state, the
activations and logits a step keeps, the KV cache of generation — plus the runtime, the resident memory of
a process that has imported torch, transformers, peft and trl, measured in this run.

Decode speed is held against the memory-bandwidth bound: every decode step reads all the weights once, so
tokens/s ≤ bandwidth ÷ weight bytes, with the bandwidth of a plain large copy measured in this run.

    python bench/real_size.py --sizes 0.6b,1b --root /tmp/llmtui-real --out bench/results/real_size-before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.jobs.peak import run_measured  # noqa: E402
from engine.runs.backend_choice import speeds_path  # noqa: E402
from engine.models.estimate import (CPU_RUNTIME_BYTES, Estimate, ModelShape, inference_estimate, merge_estimate,  # noqa: E402
                                     quantize_estimate, snapshot_estimate, train_estimate, vllm_estimate)

SHARED = REPO.parent.parent / "shared" if (REPO.parent.parent / "shared").is_dir() else Path("/work/shared")
PY = sys.executable
#: Eval: each built-in task's kind and test file, with the ceiling on generated tokens cut (random weights
#: never close a \boxed{}, so every item would run to the built-in 256/1,024-token ceiling).
EVAL_TASKS = {"b": ("boolq", "boolq"), "a": ("mcq4", "ai2_arc"), "s": ("squad_v2", "squad_v2"),
              "m": ("math_numeric", "OpenMathInstruct-2")}

LORA = """[model]
base = "Models/{base}"
[data]
dataset = "boolq"
trunc_train = 64
[peft]
method = "{peft}"
{peft_extra}
[quant]
method = "{quant}"
[train]
per_device_train_batch_size = 1
gradient_accumulation_steps = {accum}
max_steps = {steps}
max_length = {max_length}
logging_steps = 1
save_steps = {save_steps}
warmup_ratio = 0.0
"""


def child_env(ws: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def llmtui(ws: Path, *args: str) -> list[str]:
    return [PY, "-m", "tui.cli", "-w", str(ws), *args]


def new_folders(ws: Path, before: set[str]) -> list[str]:
    return sorted(p.name for p in (ws / "Models").iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name not in before)


def stage_estimate(stage: str, shape: ModelShape, a) -> Estimate:
    """The estimator's figure for one bench stage on the CPU (the bench's settings in ``a``)."""
    seq = min(a.seq_for_floor, a.max_length)
    kind, _, rest = stage.partition(" ")
    if stage in ("build", "snapshot"):
        return snapshot_estimate(shape, device="cpu")
    if stage == "LoRA":
        return train_estimate(shape, device="cpu", r=256, seq=seq, accumulation=a.accum)
    if stage in ("checkpoint save (stop)", "resume"):  # their presets: accumulation 1
        return train_estimate(shape, device="cpu", r=256, seq=seq, accumulation=1)
    if stage == "QLoRA":
        return train_estimate(shape, device="cpu", quant="4bit", r=256, seq=seq, accumulation=1)
    if stage == "full fine-tuning":
        return train_estimate(shape, device="cpu", method="full", seq=seq, accumulation=1)
    if stage == "merge":
        return merge_estimate(shape, device="cpu", r=256, targets="attention")
    bits = 8 if kind == "INT8" else 4
    if rest == "quantize":
        return quantize_estimate(shape, device="cpu", method=kind.lower(), bits=bits, samples=a.samples, seq=256)
    if rest == "reload":
        return inference_estimate(shape, device="cpu", bits=bits, context=256, step="reload", method=kind.lower())
    if kind == "eval":
        # the engine's auto batch on the CPU takes a whole test set of ≤ 128 rows at once, each row's cache as
        # long as the set's longest prompt + the ceiling (read from the run's predictions where there are some)
        batch, context = getattr(a, "eval_batch", None) or a.eval_items, getattr(a, "eval_context", None) or 1024
        if rest == "vllm":
            return vllm_estimate(shape, device="cpu", sequences=[context + a.eval_tokens] * batch)
        return inference_estimate(shape, device="cpu", batch=batch, context=context + a.eval_tokens, prompt=context)
    return inference_estimate(shape, device="cpu", context=512, step="chat")


def shape_for(size: str) -> ModelShape:
    return ModelShape.from_file(SHARED / "real-configs" / ("Qwen3-0.6B.json" if size == "0.6b" else "Llama-3.2-1B.json"))


def eval_shape(ws: Path, model: str) -> dict[str, int]:
    """The evaluation's largest set as the engine batched it: the rows it ran at once (the batch its metrics record,
    at most the set's rows) and its longest prompt (tokens), from the files the run wrote; empty where there are
    none."""
    try:
        recorded = json.loads((ws / "Testing" / "metrics" / f"{model}.json").read_text())["eval_config"]
        used = {Path(test_file).stem: batch for test_file, batch in recorded["batch_size_used"].items()}
    except (OSError, ValueError, KeyError):
        used = {}
    best: dict[str, int] = {}
    for path in (ws / "Testing" / "predictions" / model).glob("*.jsonl"):
        prompts = [json.loads(line).get("prompt_tokens", 0) for line in path.read_text().splitlines() if line.strip()]
        batch = min(len(prompts), used.get(path.stem) or len(prompts))
        if prompts and batch * max(prompts) > best.get("eval_batch", 0) * best.get("eval_context", 0):
            best = {"eval_batch": batch, "eval_context": max(prompts)}
    return best


def recompute(rows: list[dict], runtimes: dict[str, int], a) -> None:
    """Floors and estimates of recorded rows with the estimator as it is now (the measurements stay)."""
    for row in rows:
        if row["stage"] == "decode" or not row.get("peak_bytes"):
            continue
        if row["stage"].startswith("eval") and "eval_context" not in row.get("settings", {}):
            row.setdefault("settings", {}).update(eval_shape(Path(a.root) / row["size"] / "ws", row["model"])
                                                  if row.get("model") else {})
        settings = SimpleNamespace(**{**vars(a), **row.get("settings", {})})  # the row's own run settings
        estimate = stage_estimate(row["stage"], shape_for(row["size"]), settings)
        row["estimate_bytes"] = estimate.bytes
        row["floor_bytes"] = estimate.floor_bytes - CPU_RUNTIME_BYTES + runtimes.get(row["size"], CPU_RUNTIME_BYTES)
        row["ratio"] = round(row["peak_bytes"] / row["floor_bytes"], 2)


# ------------------------------------------------------------------------------------------ child snippets

BASELINE = "import torch, transformers, peft, trl; import engine.runs.train, engine.runs.quantize"

BUILD = """
import sys
from engine.data.synthetic import corpus_for_tokenizer
from engine.files import staged_dir
from engine.runs.real_size import build_real_size_model
from pathlib import Path
out, size, shared, datasets = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
with staged_dir(out) as tmp:
    build_real_size_model(tmp, size, shared / "real-configs", shared / "chat-templates", corpus_for_tokenizer(datasets))
"""

MERGE = "import sys; from engine.runs.loading import save_merged; save_merged(sys.argv[1], sys.argv[2])"

DECODE = """
import json, sys, time, torch
from engine.runs.loading import load_for_inference
torch.set_num_threads(int(sys.argv[2]))
# bandwidth of a plain large copy: bytes read + written per second, best of 5
src = torch.empty(256 * 1024 * 1024, dtype=torch.float32).fill_(1.0); dst = torch.empty_like(src)
best = min((lambda t: (dst.copy_(src), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
bandwidth = 2 * src.numel() * 4 / best
del src, dst
loaded = load_for_inference(sys.argv[1], device="cpu")
model, tok = loaded.model, loaded.tokenizer
weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
prompt = tok.apply_chat_template([{"role": "user", "content": "Is the sky blue on a clear day?"}], tokenize=False,
                                 add_generation_prompt=True)
rows = []
for batch in [int(b) for b in sys.argv[3].split(",")]:
    enc = tok([prompt] * batch, return_tensors="pt", padding=True)
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
        t = time.perf_counter(); model.generate(**enc, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        prefill = time.perf_counter() - t
        n = 16; t = time.perf_counter()
        model.generate(**enc, max_new_tokens=n + 1, min_new_tokens=n + 1, do_sample=False)
        decode = time.perf_counter() - t - prefill
    rows.append({"batch": batch, "tokens_per_s": round(batch * n / decode, 2), "step_s": round(decode / n, 4)})
print(json.dumps({"bandwidth_gb_s": round(bandwidth / 1e9, 2), "weight_bytes": weight_bytes,
                  "bound_tokens_per_s": round(bandwidth / weight_bytes, 2), "rows": rows}))
"""


# ------------------------------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        earlier = self.file(".json")
        data = json.loads(earlier.read_text()) if (args.append or args.recompute) and earlier.exists() else {}
        self.rows: list[dict] = data.get("rows", [])
        self.runtimes: dict[str, int] = data.get("runtimes", {})  # measured once per model size
        self.log = self.file(".log")

    def file(self, suffix: str) -> Path:
        return self.out.parent / (self.out.name + suffix)

    def stage(self, size: str, name: str, argv: list[str], env: dict, floor, *, timeout: float | None = None,
              note: str = "", **kwargs) -> dict:
        print(f"{time.strftime('%H:%M:%S')} {size} {name} …", flush=True)
        with open(self.log, "a") as f:
            f.write(f"\n===== {size} {name}: {' '.join(argv)[:400]}\n")
        result = vars(run_measured(argv, env=env, cwd=REPO, timeout=timeout or self.args.stage_timeout, log=self.log,
                                   **kwargs))
        floor_bytes = floor.floor_bytes if floor is not None else None
        settings = {k: getattr(self.args, k) for k in ("eval_items", "eval_tokens", "samples", "max_length")}
        row = {"size": size, "stage": name, **result, "settings": settings, "floor_bytes": floor_bytes,
               "estimate_bytes": floor.bytes if floor is not None else None,
               "ratio": round(result["peak_bytes"] / floor_bytes, 2) if floor_bytes else None, "note": note}
        self.rows.append(row)
        self.save()
        print(f"    {fmt_row(row)}", flush=True)
        return row

    def save(self) -> None:
        tmp = self.file(".json.tmp")
        tmp.write_text(json.dumps({"argv": sys.argv, "runtimes": self.runtimes, "rows": self.rows}, indent=1))
        tmp.replace(self.file(".json"))
        self.file(".md").write_text(markdown(self.rows))

    def runtime(self, env) -> int:
        return run_measured([PY, "-c", BASELINE], env=env, cwd=REPO, timeout=600, log=self.log).peak_bytes

    def run_size(self, size: str) -> None:
        a = self.args
        root = Path(a.root) / size
        ws = root / "ws"
        for sub in ("Datasets", "Models", "Testing/metrics", "experiments"):
            (ws / sub).mkdir(parents=True, exist_ok=True)
        for parquet in (SHARED / "datasets").glob("*.parquet"):
            if not (ws / "Datasets" / parquet.name).exists():
                shutil.copy(parquet, ws / "Datasets" / parquet.name)
        tasks = "".join(f'[{key}{a.eval_tokens}]\nkind = "{kind}"\nfile_stem = "{stem}"\nmax_new_tokens = {a.eval_tokens}\n'
                        for key, (kind, stem) in EVAL_TASKS.items())
        (ws / "Datasets" / "datasets.toml").write_text(tasks + '[quick]\nkind = "boolq"\nfile_stem = "boolq"\n'
                                                       'max_new_tokens = 4\n')
        env = child_env(ws)
        runtime = self.runtimes.get(size) or self.runtime(env)
        self.runtimes[size] = runtime
        print(f"runtime (torch & co. imported): {runtime / 1e9:.2f} GB", flush=True)
        base = f"real-{size}"
        shape = shape_for(size)

        def floor(estimate):
            """The floor with the runtime measured in this run (+ the tokenizer), beside the estimator's own bound."""
            bound = estimate.bytes
            estimate.parts["runtime"] += runtime - CPU_RUNTIME_BYTES
            return SimpleNamespace(floor_bytes=estimate.floor_bytes, bytes=bound)

        if not (ws / "Models" / base).is_dir():
            self.stage(size, "build", [PY, "-c", BUILD, str(ws / "Models" / base), size, str(SHARED),
                                       str(ws / "Datasets")], env, floor(stage_estimate("build", shape, a)))
        want = set(a.stages.split(",")) if a.stages else None

        def on(name):
            return want is None or name in want

        def preset(name, **fields):
            text = LORA.format(base=base, max_length=a.max_length, **fields)
            path = ws / "experiments" / f"{name}.toml"
            path.write_text(text)
            return str(path)

        lora_extra = 'r = 256\nalpha = 512\ntarget_modules = ["attention"]\ndropout = 0.0'
        snapshot = None
        before = {p.name for p in (ws / "Models").iterdir()}
        if on("snapshot"):
            path = ws / "experiments" / "snapshot.toml"
            path.write_text(f'[model]\nbase = "Models/{base}"\n[data]\ndataset = "none"\n')
            self.stage(size, "snapshot", llmtui(ws, "train", str(path), "--overwrite"), env,
                       floor(stage_estimate("snapshot", shape, a)))
        snapshot = next(iter(new_folders(ws, before)), None) or next(
            (p.name for p in (ws / "Models").iterdir() if p.name.endswith("-base")), base)
        adapter = None
        if on("lora"):
            before = {p.name for p in (ws / "Models").iterdir()}
            p = preset("lora", peft="LoRa", peft_extra=lora_extra, quant="NoQuant", accum=a.accum, steps=a.steps,
                       save_steps=0)
            self.stage(size, "LoRA", llmtui(ws, "train", p, "--overwrite"), env,
                       floor(stage_estimate("LoRA", shape, a)),
                       note=f"{a.steps} step × batch 1 × accumulation {a.accum}, r 256 attention, max_length {a.max_length}")
        adapter = next((n for n in sorted((ws / "Models").iterdir()) if n.name.startswith(base) and "LoRa" in n.name
                        and (n / "adapter_config.json").exists()), None)
        if on("qlora"):
            # two steps: AdamW's moments exist from the first optimizer step on, beside the next step's activations
            p = preset("qlora", peft="LoRa", peft_extra=lora_extra, quant="QLORA", accum=1, steps=a.steps,
                       save_steps=0)
            self.stage(size, "QLoRA", llmtui(ws, "train", p, "--overwrite"), env,
                       floor(stage_estimate("QLoRA", shape, a)),
                       note=f"{a.steps} steps × batch 1 × accumulation 1")
        if on("full") and size == "0.6b":
            p = preset("full", peft="NoPeft", peft_extra="", quant="NoQuant", accum=1, steps=1, save_steps=0)
            self.stage(size, "full fine-tuning", llmtui(ws, "train", p, "--overwrite"), env,
                       floor(stage_estimate("full fine-tuning", shape, a)),
                       note="1 step × batch 1, AdamW fp32")
        if on("checkpoint"):
            # 3 steps: the signal is sent once step 1 is logged, so it lands in step 2, before the last step
            # (a signal during the last step lets the run finish instead)
            p = preset("ckpt", peft="LoRa", peft_extra=lora_extra, quant="NoQuant", accum=1, steps=3, save_steps=1)
            events = root / "ckpt-events.jsonl"
            events.unlink(missing_ok=True)

            def stop_after_first_step(child):
                while child.poll() is None:
                    if events.exists() and '"train_step"' in events.read_text():
                        child.send_signal(signal.SIGUSR1)
                        return
                    time.sleep(0.5)

            self.stage(size, "checkpoint save (stop)", llmtui(ws, "train", p, "--overwrite", "--events", str(events)),
                       env, floor(stage_estimate("LoRA", shape, a)), alongside=stop_after_first_step,
                       note="3-step LoRA stopped after step 2: checkpoint written, exit 75")
            self.stage(size, "resume", llmtui(ws, "train", p, "--overwrite"), env,
                       floor(stage_estimate("LoRA", shape, a)), note="from the step-2 checkpoint to step 3")
        if on("merge") and adapter is not None:
            self.stage(size, "merge", [PY, "-c", MERGE, str(adapter), str(ws / "Models" / f"{base}-merged")], env,
                       floor(stage_estimate("merge", shape, a)),
                       note="load_full_precision (stored bf16) + merge_and_unload + save")
        for method in ("hqq", "int8", "nf4", "gptq", "awq"):
            if not on(method) and not on(f"{method}-reload"):
                continue
            bits = 8 if method == "int8" else 4
            extra = ["--samples", str(a.samples), "--calibration", "boolq"] if method in ("gptq", "awq") else []
            before = {p.name for p in (ws / "Models").iterdir()}
            if on(method):  # "METHOD-reload" alone reloads the output an earlier run made
                self.stage(size, f"{method.upper()} quantize", llmtui(ws, "quantize", snapshot, "--method", method,
                                                                        "--overwrite", "--device", "cpu", *extra),
                           env, floor(stage_estimate(f"{method.upper()} quantize", shape, a)),
                           note=f"{a.samples} calibration samples" if extra else "")
            made = new_folders(ws, before) or [n.name for n in (ws / "Models").iterdir()
                                               if n.name.startswith(snapshot + "_") and method in n.name.lower()]
            if made:
                self.stage(size, f"{method.upper()} reload", llmtui(ws, "eval", made[0], "--datasets", "quick",
                                                                      "--limit", "1", "--force", "--backend", "hf",
                                                                      "--device", "cpu"), env,
                           floor(stage_estimate(f"{method.upper()} reload", shape, a)),
                           note="load + 1 item of 4 tokens")
        sets = ",".join(f"{key}{a.eval_tokens}" for key in EVAL_TASKS)
        for backend in ("hf", "vllm"):
            if not on(f"eval-{backend}") or (backend == "vllm" and not os.environ.get("LLMTUI_VLLM_PYTHON")):
                continue
            row = self.stage(size, f"eval {backend}", llmtui(ws, "eval", snapshot, "--datasets", sets, "--limit",
                                                             str(a.eval_items), "--force", "--backend", backend,
                                                             "--device", "cpu"), env,
                             floor(stage_estimate(f"eval {backend}", shape, a)),
                             note=f"{a.eval_items} items × 4 sets, ≤ {a.eval_tokens} new tokens")
            row["model"] = snapshot
            recompute([row], self.runtimes, a)  # with the batch and prompt lengths the run really had
            self.save()
        if on("chat"):
            self.chat(size, ws, snapshot, env, floor(stage_estimate("chat", shape, a)))
        if on("decode"):
            self.decode(size, ws, snapshot, env)

    def chat(self, size, ws, model, env, floor) -> None:
        times: dict[str, float] = {}

        def converse(child):
            start = time.perf_counter()
            request = {"type": "generate", "id": 1, "messages": [{"role": "user", "content": "Tell me about rivers."}],
                       "max_new_tokens": 32}
            for line in child.stdout:
                message = json.loads(line)
                if message["type"] == "ready":
                    times["ready_s"] = time.perf_counter() - start
                    sent = time.perf_counter()
                    child.stdin.write((json.dumps(request) + "\n").encode())
                    child.stdin.flush()
                elif message["type"] == "token" and "first_token_s" not in times:
                    times["first_token_s"] = time.perf_counter() - sent
                elif message["type"] == "done":
                    times["tokens"], times["seconds"] = message["tokens"], message["seconds"]
                    child.stdin.close()
                    return
                elif message["type"] == "error":
                    times["error"] = message["message"]
                    child.stdin.close()
                    return

        row = self.stage(size, "chat", llmtui(ws, "chat-server", model, "--device", "cpu"), env, floor,
                         stdin_pipe=True, alongside=converse)
        if times.get("seconds"):
            row["note"] = (f"load {times['ready_s']:.1f} s, first token {times.get('first_token_s', 0):.2f} s, "
                           f"{times['tokens'] / times['seconds']:.2f} tokens/s ({times['tokens']} tokens)")
        else:
            row["note"] = str(times)
        self.save()

    def decode(self, size, ws, model, env) -> None:
        print(f"{time.strftime('%H:%M:%S')} {size} decode …", flush=True)
        done = subprocess.run([PY, "-c", DECODE, str(ws / "Models" / model), env["OMP_NUM_THREADS"],
                               self.args.batches], env=env, capture_output=True, text=True, cwd=str(REPO))
        try:
            data = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            data = {"error": done.stderr[-500:]}
        rows = data.get("rows", [])
        stops = next((r2["batch"] for r1, r2 in zip(rows, rows[1:])
                      if r2["tokens_per_s"] < 1.25 * r1["tokens_per_s"]), None)
        if rows:
            one = rows[0]["tokens_per_s"]
            data["batch1_vs_bound"] = round(data["bound_tokens_per_s"] / one, 2)
            data["stops_paying_at"] = stops
        self.rows.append({"size": size, "stage": "decode", "decode": data})
        self.save()
        print(f"    {json.dumps(data)}", flush=True)


def auto_check(rows: list[dict], speeds: Path) -> list[str]:
    """``auto``'s choice for each size's evaluation predicted from the *other* size's recorded speeds (the
    records this run's evaluations wrote), against which backend this run measured faster (wall time)."""
    from engine.runs.backend_choice import auto_backend, read_speeds  # plain Python, no torch

    records = read_speeds(speeds)
    lines = []
    for size in sorted({r["size"] for r in rows}):
        walls = {r["stage"].split()[1]: r["wall_s"] for r in rows if r["size"] == size and r["stage"] in
                 ("eval hf", "eval vllm") and r.get("rc") == 0}
        items = next((4 * r["settings"]["eval_items"] for r in rows if r["size"] == size and r["stage"] == "eval hf"),
                     None)
        params = shape_for(size).params
        others = [r for r in records if r.get("device") == "cpu" and abs(r["params"] - params) / params > 0.2]
        if len(walls) < 2 or not items or {r["backend"] for r in others} != {"hf", "vllm"}:
            continue
        tmp = speeds.with_name(f"auto-check-{size}.json")
        tmp.write_text(json.dumps(others))
        choice, why = auto_backend(device="cpu", params=params, items=items, path=tmp)
        tmp.unlink()
        faster = min(walls, key=walls.get)
        lines.append(f"- {size}, {items} items: auto from the other size's records → {choice} ({why}); measured here "
                     f"built-in {walls['hf']:.0f} s, vLLM {walls['vllm']:.0f} s wall → {faster}: "
                     f"{'right' if choice == faster else 'wrong'}")
    return lines


def gb(value) -> str:
    return "—" if value is None else f"{value / 1e9:.2f}"


def fmt_row(row: dict) -> str:
    return (f"{row['stage']:<24} {row['wall_s']:>7.1f} s  peak {gb(row['peak_bytes'])} GB  floor "
            f"{gb(row['floor_bytes'])} GB  ×{row['ratio']}  rc {row['rc']}  {row['note']}")


def markdown(rows: list[dict]) -> str:
    lines = ["| model | stage | wall s | peak GB | floor GB | peak ÷ floor | estimate GB | estimate ÷ peak | rc | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        if row["stage"] == "decode":
            d = row["decode"]
            if "rows" in d:
                speeds = ", ".join(f"b{r['batch']} {r['tokens_per_s']}" for r in d["rows"])
                lines.append(f"| {row['size']} | decode | | | | | | | | copy bandwidth {d['bandwidth_gb_s']} GB/s, "
                             f"weights {d['weight_bytes'] / 1e9:.2f} GB → bound {d['bound_tokens_per_s']} tokens/s; "
                             f"measured tokens/s {speeds}; batch 1 is {d['batch1_vs_bound']}× the bound; "
                             f"batching stops paying (<1.25× a doubling) at {d['stops_paying_at']} |")
            else:
                lines.append(f"| {row['size']} | decode | | | | | | | | failed: {d.get('error', '')[:200]} |")
            continue
        over = f"{row['estimate_bytes'] / row['peak_bytes']:.2f}" if row.get("estimate_bytes") else "—"
        lines.append(f"| {row['size']} | {row['stage']} | {row['wall_s']:.1f} | {gb(row['peak_bytes'])} | "
                     f"{gb(row['floor_bytes'])} | {row['ratio']} | {gb(row['estimate_bytes'])} | {over} | {row['rc']} | "
                     f"{row['note']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.6b,1b")
    parser.add_argument("--root", default="/tmp/llmtui-real", help="workspaces (models of 1.2-2.5 GB each)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "real_size"),
                        help="writes OUT.json, OUT.md and OUT.log")
    parser.add_argument("--stages", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--steps", type=int, default=1, help="LoRA optimizer steps")
    parser.add_argument("--accum", type=int, default=8, help="LoRA gradient accumulation")
    parser.add_argument("--max-length", type=int, default=1024, help="train.max_length of the training stages")
    parser.add_argument("--samples", type=int, default=4, help="GPTQ/AWQ calibration samples")
    parser.add_argument("--eval-items", type=int, default=4, help="items of each of the 4 test sets")
    parser.add_argument("--eval-tokens", type=int, default=16, help="ceiling on generated tokens in evaluation")
    parser.add_argument("--batches", default="1,2,4,8", help="decode batch sizes")
    parser.add_argument("--append", action="store_true", help="add to OUT.json's rows instead of starting anew")
    parser.add_argument("--recompute", action="store_true",
                        help="only recompute OUT.json's floors and estimates with the estimator as it is now")
    parser.add_argument("--seq-for-floor", type=int, default=256,
                        help="tokens of the longest training sequence (the synthetic BoolQ rows are shorter than "
                             "max_length 1024; the floor uses what a step really holds)")
    parser.add_argument("--stage-timeout", type=float, default=1500)
    parser.add_argument("--speeds", type=Path, default=speeds_path(),
                        help="the evaluation speeds file the run's evaluations recorded (for the auto check)")
    args = parser.parse_args()
    bench = Bench(args)
    if args.recompute:
        recompute(bench.rows, bench.runtimes, args)
        bench.save()
        print(markdown(bench.rows))
        print("\n".join(auto_check(bench.rows, args.speeds)))
        return 0
    started = time.time()
    for size in args.sizes.split(","):
        bench.run_size(size)
    print(f"\ntotal {time.time() - started:.0f} s\n")
    print(markdown(bench.rows))
    print("\n".join(auto_check(bench.rows, args.speeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
