"""Batched greedy evaluation of model folders on the workspace's test sets (job process).

Prompts (the one prompt builder's text) are sorted by token length and generated in padded batches
with their attention mask; a prefix every prompt of a batch shares (system prompt, chat template) is
computed once. Each sequence stops at EOS or as soon as its first ``\\boxed{…}`` is closed (the scorer
reads only the first box, so this changes no prediction), under the task's ``max_new_tokens``
ceiling. Out of memory halves the batch and retries it; no item is lost.

Per model this writes ``Testing/predictions/{model}/{test stem}.jsonl`` (one row per item) and then
``Testing/metrics/{model}.json`` (the old scripts' schema plus new keys), both atomically. The metrics
file is written last: an interrupted evaluation leaves none, so the model stays untested.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from engine import __version__
from engine.files import file_sha256, read_json_file, staged_dir, write_json, write_jsonl
from engine.data.prompts import format_differences, prompt_format, stop_token_ids, tokenize_prompts
from engine.data.tasks import DatasetError, Item, TaskSpec, get_task, load_items, task_registry
from engine.events import EventKind, EventWriter
from engine.results.scoring import (EXTRACTOR_VERSION, ItemScore, describe, extract_boxed, first_box_closed,
                                    score_item, summarize_dataset)
from engine.results.model_folder import (TRAINING_METADATA, ModelLoadError, ModelNotFoundError, detect_kind, dig,
                                         resolve_model_folder)
from engine.workspace import Workspace, safe_name

#: Auto batch size: the first (longest) batch tries this many prompts, halving on out-of-memory.
AUTO_START_BATCH = {"cuda": 256, "cpu": 128}
FAILURES_FILE = "eval-failures.json"
#: A batch whose prompts share at least this many leading tokens computes them once (prefix KV cache).
MIN_SHARED_PREFIX = 8

#: Called with the batch size before every ``generate`` call. A test seam: a test passes a hook that
#: raises ``torch.OutOfMemoryError`` above some size to exercise the halving path without a GPU.
BeforeGenerate = Callable[[int], None]


class EvalError(ValueError):
    """An evaluation cannot run (unknown model, already evaluated, no test sets…); the message says why."""


class AlreadyEvaluated(EvalError):
    """The model has a readable metrics file and ``force`` was not given (not a failure of the model)."""


@dataclass
class Generation:
    """One item's generated text, its generated-token count, and its share of its batch's wall time."""

    text: str
    tokens: int
    latency_s: float


@dataclass
class EvalOptions:
    """What to evaluate and how: task names (None = every test set present), items per set, batch size."""

    datasets: list[str] | None = None
    limit: int = 0
    batch_size: int | str = "auto"
    force: bool = False
    device: str | None = None


# ------------------------------------------------------------------------------------------ generation


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def brace_token_mask(tokenizer: Any, vocab_size: int):
    """A bool tensor over token ids: True where the token's text contains ``}`` (only those can close a box)."""
    import torch

    size = max(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    mask = torch.zeros(size, dtype=torch.bool)
    mask[[i for i, text in enumerate(texts) if "}" in text]] = True
    return mask


def _stop_criterion(tokenizer: Any, prompt_length: int, batch: int, eos_ids: list[int], brace_mask, device):
    """A StoppingCriteria that finishes each row at EOS or when its first box closes, recording its length."""
    import torch
    from transformers import StoppingCriteria

    class FirstBoxOrEos(StoppingCriteria):
        def __init__(self) -> None:
            self.done = torch.zeros(batch, dtype=torch.bool, device=device)
            self.lengths = [0] * batch
            self.eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
            self.brace = brace_mask.to(device)

        def __call__(self, input_ids, scores, **kwargs):
            generated = input_ids.shape[1] - prompt_length
            last = input_ids[:, -1]
            newly = ~self.done & torch.isin(last, self.eos)
            closers = (~self.done & ~newly & self.brace[last]).nonzero().flatten().tolist()
            for row in closers:
                text = tokenizer.decode(input_ids[row, prompt_length:], skip_special_tokens=True)
                if first_box_closed(text):
                    newly[row] = True
            for row in newly.nonzero().flatten().tolist():
                self.lengths[row] = generated
            self.done |= newly
            return self.done.clone()

    return FirstBoxOrEos()


def _generation_config(model: Any, tokenizer: Any, max_new_tokens: int):
    import copy

    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if isinstance(base, GenerationConfig) else GenerationConfig()
    config.update(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, min_p=None,
                  max_new_tokens=max_new_tokens, max_length=None)
    config.eos_token_id = stop_token_ids(tokenizer, config)  # every end-of-turn token of the template and model
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.eos_token_id[0]
    return config


def _eos_ids(config: Any) -> list[int]:
    eos = config.eos_token_id
    return [eos] if isinstance(eos, int) else [int(e) for e in (eos or [])]


def _input_device(model: Any):
    import torch

    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return torch.device(device)


def shared_prefix_length(token_ids: list[list[int]]) -> int:
    """Tokens every prompt starts with (system prompt, template), leaving each at least one of its own."""
    shortest = min(len(ids) for ids in token_ids)
    first = token_ids[0]
    length = 0
    while length < shortest - 1 and all(ids[length] == first[length] for ids in token_ids):
        length += 1
    return length


def _prefix_cache(model: Any, prefix: list[int], rows: int, config: Any, device: Any):
    """The shared prefix's KV cache computed once and repeated for ``rows`` rows.

    None when the model's cache is not plain full attention (sliding-window or linear-attention layers
    count columns, so the padding this layout puts after the prefix would change what they see).
    """
    import copy

    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    prefill = copy.deepcopy(config)
    prefill.update(max_new_tokens=1, return_dict_in_generate=True)
    output = model.generate(input_ids=torch.tensor([prefix], device=device), generation_config=prefill)
    cache = output.cache
    if not isinstance(cache, DynamicCache) or not all(type(layer) is DynamicLayer for layer in cache.layers):
        return None
    cache.batch_repeat_interleave(rows)
    return cache


def generate_batch(model: Any, tokenizer: Any, token_ids: list[list[int]], max_new_tokens: int,
                   brace_mask: Any) -> list[tuple[str, int]]:
    """Greedy generation for one batch of tokenized prompts; ``(text, generated tokens)`` per prompt.

    Rows are padded with their attention mask (position ids follow the mask, so padding changes no
    output). When the prompts share at least ``MIN_SHARED_PREFIX`` leading tokens, that prefix is
    computed once and its KV cache shared: each row is laid out as prefix, padding, own tokens.
    Otherwise rows are left-padded. A row's token count includes its EOS or box-closing token.
    """
    import torch
    from transformers import StoppingCriteriaList

    device = _input_device(model)
    config = _generation_config(model, tokenizer, max_new_tokens)
    shared = shared_prefix_length(token_ids) if len(token_ids) > 1 else 0
    cache = _prefix_cache(model, token_ids[0][:shared], len(token_ids), config, device) \
        if shared >= MIN_SHARED_PREFIX else None
    if cache is None:
        shared = 0
    width = max(len(ids) for ids in token_ids) - shared
    pad = config.pad_token_id
    input_ids = torch.tensor([ids[:shared] + [pad] * (width - len(ids) + shared) + ids[shared:] for ids in token_ids],
                             device=device)
    attention_mask = torch.tensor([[1] * shared + [0] * (width - len(ids) + shared) + [1] * (len(ids) - shared)
                                   for ids in token_ids], device=device)
    prompt_length = input_ids.shape[1]
    criterion = _stop_criterion(tokenizer, prompt_length, len(token_ids), _eos_ids(config), brace_mask, device)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                                generation_config=config, stopping_criteria=StoppingCriteriaList([criterion]))
    generated = output[:, prompt_length:]
    results = []
    for row in range(len(token_ids)):
        length = criterion.lengths[row] if criterion.done[row] else generated.shape[1]
        text = tokenizer.decode(generated[row, :length], skip_special_tokens=True)
        results.append((text, int(length)))
    return results


def kv_cache_bytes_per_token(model: Any) -> int:
    """Bytes of KV cache one token of one sequence takes (keys and values, every layer)."""
    import torch

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = getattr(model, "dtype", torch.float32)
    element = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 4
    return 2 * config.num_hidden_layers * heads * head_dim * element


def host_memory_batch_cap(model: Any, tokens_per_row: int) -> int:
    """The most rows whose KV cache (×3 for activations and copies) fits in half the free host memory.

    On the CPU running out of memory is not an exception but the OOM killer, so ``auto`` must not
    find the limit by trying.
    """
    import psutil

    per_row = 3 * tokens_per_row * kv_cache_bytes_per_token(model)
    return max(1, int(psutil.virtual_memory().available * 0.5 // per_row))


def generate_all(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, batch_size: int,
                 brace_mask: Any, host_memory_cap: bool = False,
                 on_progress: Callable[[int, int], None] | None = None,
                 before_generate: BeforeGenerate | None = None) -> tuple[list[Generation], int]:
    """Generate for every prompt, longest first, in batches of ``batch_size``.

    Out of memory halves the batch (rounding up) and retries the same prompts; ``host_memory_cap``
    first lowers the batch to what host memory holds (for ``auto`` on the CPU). Returns the
    generations in the prompts' order and the batch size in use at the end.
    """
    total = len(prompts)
    token_ids = tokenize_prompts(tokenizer, prompts)
    lengths = [len(ids) for ids in token_ids]
    order = sorted(range(total), key=lambda i: -lengths[i])
    results: dict[int, Generation] = {}
    done = 0
    size = max(1, batch_size)
    if host_memory_cap and lengths:
        size = min(size, host_memory_batch_cap(model, max(lengths) + max_new_tokens))
    while done < total:
        chunk = order[done:done + size]
        try:
            if before_generate is not None:
                before_generate(len(chunk))
            started = time.perf_counter()
            outputs = generate_batch(model, tokenizer, [token_ids[i] for i in chunk], max_new_tokens, brace_mask)
            elapsed = time.perf_counter() - started
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            _free_memory()
            if len(chunk) == 1:
                raise EvalError(f"out of memory even with one prompt of {lengths[chunk[0]]} tokens") from None
            size = (len(chunk) + 1) // 2
            continue
        for index, (text, tokens) in zip(chunk, outputs):
            results[index] = Generation(text, tokens, elapsed / len(chunk))
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, total)
    return [results[index] for index in range(total)], size


# ------------------------------------------------------------------------------------------- datasets


def select_tasks(ws: Workspace, names: list[str] | None) -> list[TaskSpec]:
    """The tasks named (preset names or test file names), or every task whose test file is present.

    Two tasks reading the same test file cannot both run (the metrics file keys datasets by file).
    """
    if names:
        tasks: dict[str, TaskSpec] = {}
        for name in names:
            task = get_task(name.strip(), ws.datasets_dir)
            other = tasks.setdefault(task.test_file, task)
            if other.name != task.name:
                raise EvalError(f"datasets {other.name!r} and {task.name!r} both read {task.test_file}; pick one")
        return list(tasks.values())
    present: dict[str, TaskSpec] = {}
    for task in task_registry(ws.datasets_dir).values():  # built-in tasks first, so they win a shared file
        if (ws.datasets_dir / task.test_file).is_file():
            present.setdefault(task.test_file, task)
    if not present:
        raise EvalError(f"{ws.datasets_dir}: no test sets (test-*.parquet of a known or declared dataset)")
    return list(present.values())


def prediction_row(task: TaskSpec, item: Item, prompt: str, generation: Generation,
                   score: ItemScore, prompt_tokens: int) -> dict[str, Any]:
    """One predictions-file row: the exact prompt and its token count, raw output, extracted box, normalised
    pred, gold, score."""
    row = {
        "index": item.index,
        "prompt": prompt,
        "prompt_tokens": prompt_tokens,
        "output": generation.text,
        "extracted": extract_boxed(generation.text),
        "pred": score.pred,
        "gold": item.answer,
        "correct": bool(score.correct),
        "has_box": score.has_box,
        "tokens": generation.tokens,
        "latency_s": round(generation.latency_s, 6),
    }
    if task.kind == "squad_v2":
        row["f1"] = score.f1
    return row


@dataclass
class DatasetRun:
    """One test set's results: the metrics block, the predictions rows, and how generation went."""

    task: TaskSpec
    block: dict[str, Any]
    rows: list[dict[str, Any]]
    generation_s: float
    batch_size: int


def evaluate_dataset(loaded: Any, task: TaskSpec, items: list[Item], *, batch_size: int, brace_mask: Any,
                     host_memory_cap: bool = False, on_progress: Callable[[int, int], None] | None = None,
                     before_generate: BeforeGenerate | None = None) -> DatasetRun:
    """Generate, score and summarise one test set."""
    from engine.data.prompts import render_prompt

    prompts = [render_prompt(loaded.tokenizer, task, item) for item in items]
    started = time.perf_counter()
    generations, used = generate_all(loaded.model, loaded.tokenizer, prompts, max_new_tokens=task.max_new_tokens,
                                     batch_size=batch_size, brace_mask=brace_mask, host_memory_cap=host_memory_cap,
                                     on_progress=on_progress, before_generate=before_generate)
    elapsed = time.perf_counter() - started
    scores = [score_item(task.kind, gen.text, item.answer) for item, gen in zip(items, generations)]
    prompt_tokens = [len(ids) for ids in tokenize_prompts(loaded.tokenizer, prompts)]
    rows = [prediction_row(task, *entry) for entry in zip(items, prompts, generations, scores, prompt_tokens)]
    block = summarize_dataset(task.kind, scores, [g.latency_s for g in generations], [g.tokens for g in generations])
    block["max_new_tokens"] = task.max_new_tokens
    block["batch_size"] = used
    block["items_per_second"] = round(len(items) / elapsed, 4) if elapsed > 0 else None
    return DatasetRun(task, block, rows, elapsed, used)


# ------------------------------------------------------------------------------------------- one model


def resolve_model_dir(ws: Workspace, ref: str | Path) -> Path:
    """A model folder from a model name in ``Models/`` or a path (as given, or relative to the workspace)."""
    try:
        return resolve_model_folder(ws, ref)
    except ModelNotFoundError as exc:
        raise EvalError(f"model {exc}") from None


def quantization_block(found: Any) -> dict[str, Any]:
    """The metrics file's ``quantization`` section: method, source, bits, group size, backend, tag."""
    meta = found.quantization or {}
    if not meta and isinstance(found.info.get("training_quantization"), dict):
        meta = found.info["training_quantization"]  # no PTQ: the training-time spec (QLoRA) if any
    method = str(meta.get("method") or "NoQuant")
    return {
        "method": method,
        "source": meta.get("source_model") or ("training" if found.qlora or method == "QLORA" else None),
        "bits": meta.get("weights_bits", meta.get("bits")),
        "group_size": meta.get("group_size"),
        "backend": meta.get("backend"),
        "quant_tag": meta.get("quant_tag") or ("NoQuant" if method == "NoQuant" else None),
        "has_quantization": bool(meta.get("has_quantization", method != "NoQuant")),
        "loaded_as": found.kind + ("+bnb-nf4-base" if found.qlora else ""),
    }


def start_batch_size(batch_size: int | str, device: str) -> int:
    """The first batch size to try: the number given, or for ``auto`` a device-dependent start (halved on OOM)."""
    if batch_size == "auto":
        return AUTO_START_BATCH["cuda" if device.startswith("cuda") else "cpu"]
    if isinstance(batch_size, int) and batch_size >= 1:
        return batch_size
    raise EvalError(f"batch size {batch_size!r} must be a positive integer or 'auto'")


def _existing_metrics_problem(path: Path) -> str | None:
    """Why an existing metrics file should not block re-evaluation (it is unreadable), or None if it is fine."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{path.name} is unreadable ({exc})"
    return None if isinstance(data, dict) else f"{path.name} is not a JSON object"


@dataclass
class TestSets:
    """The test sets of a run, read and checked once for all its models: tasks and their items."""

    tasks: list[TaskSpec]
    items: dict[str, list[Item]]

    __test__ = False  # not a pytest class


def load_test_sets(ws: Workspace, options: EvalOptions) -> TestSets:
    """Select and read the test sets (DatasetError naming the file or column when one is unusable)."""
    tasks = select_tasks(ws, options.datasets)
    items = {task.name: load_items(ws.datasets_dir, task, "test", options.limit) for task in tasks}
    for task in tasks:
        if not items[task.name]:
            raise DatasetError(f"{ws.datasets_dir / task.test_file}: no rows to evaluate")
    return TestSets(tasks, items)


def evaluate_model(ws: Workspace, model_ref: str | Path, options: EvalOptions | None = None, *,
                   test_sets: TestSets | None = None, events: EventWriter | None = None,
                   before_generate: BeforeGenerate | None = None) -> dict[str, Any]:
    """Evaluate one model folder on the chosen test sets; write predictions, then the metrics file.

    Returns the metrics dict. Raises EvalError, DatasetError or ModelLoadError with a clear message;
    on any error or interruption no metrics file is written.
    """
    import torch

    from engine.runs.device import reset_memory_peaks
    from engine.runs.loading import load_for_inference, resolve_device

    options = options or EvalOptions()
    events = events or EventWriter(None)
    wall_started = time.perf_counter()
    model_dir = resolve_model_dir(ws, model_ref)
    name = safe_name(model_dir.name)
    metrics_path = ws.metrics_file(name)
    if metrics_path.exists() and not options.force and _existing_metrics_problem(metrics_path) is None:
        raise AlreadyEvaluated(f"{name} is already evaluated ({metrics_path}); use --force to evaluate it again")
    test_sets = test_sets or load_test_sets(ws, options)
    tasks, items = test_sets.tasks, test_sets.items
    found = detect_kind(model_dir)
    device = resolve_device(options.device)
    start_batch = start_batch_size(options.batch_size, device)
    events.emit(EventKind.START, model=name, model_dir=str(model_dir), model_kind=found.kind,
                datasets=[t.test_file for t in tasks], total=sum(len(v) for v in items.values()))
    reset_memory_peaks()
    loaded = load_for_inference(model_dir, device=device)
    load_s = time.perf_counter() - wall_started
    try:
        used_format, format_warning = check_prompt_format(model_dir, loaded.tokenizer, tasks[0],
                                                          items[tasks[0].name][0], events)
        brace_mask = brace_token_mask(loaded.tokenizer, int(getattr(loaded.model.config, "vocab_size", 0) or 0))
        runs = []
        for task in tasks:
            def progress(done: int, total: int, dataset: str = task.test_file) -> None:
                events.emit(EventKind.EVAL_PROGRESS, model=name, dataset=dataset, done=done, total=total)

            events.emit(EventKind.EVAL_PROGRESS, model=name, dataset=task.test_file, done=0, total=len(items[task.name]))
            runs.append(evaluate_dataset(loaded, task, items[task.name], batch_size=start_batch,
                                         brace_mask=brace_mask, on_progress=progress,
                                         host_memory_cap=options.batch_size == "auto" and device == "cpu",
                                         before_generate=before_generate))
        peaks = memory_peaks()
        dtype = str(getattr(loaded.model, "dtype", "")).replace("torch.", "")
    finally:
        del loaded
        _free_memory()
    metrics = build_metrics(name, runs, quantization_block(found), peaks, {
        "model_dir": str(model_dir), "model_kind": found.kind, "device": device, "dtype": dtype,
        "datasets": [t.test_file for t in tasks], "limit": options.limit,
        "batch_size_requested": options.batch_size, "decoding": "greedy",
        "stop": "EOS or the first closed \\boxed{}", "torch_version": torch.__version__,
    }, load_s=load_s, wall_s=time.perf_counter() - wall_started)
    metrics["prompt_format"] = used_format
    if format_warning:
        metrics["prompt_format_warning"] = format_warning
    for task in tasks:  # provenance: llmtui compare warns when two runs read different files
        metrics["datasets"][task.test_file]["dataset_sha256"] = file_sha256(ws.datasets_dir / task.test_file)
    with staged_dir(ws.predictions_folder(name), overwrite=True) as folder:
        for run in runs:
            write_jsonl(folder / f"{Path(run.task.test_file).stem}.jsonl", run.rows)
    write_json(metrics_path, metrics)
    events.emit(EventKind.SAVED, path=str(metrics_path))
    return metrics


def check_prompt_format(model_dir: Path, tokenizer: Any, task: TaskSpec, item: Item,
                        events: EventWriter) -> tuple[dict[str, Any], str | None]:
    """The prompt format this evaluation uses, and a warning (logged, and emitted as a ``warning`` event) when
    it differs from the one recorded in the model's ``training_metadata.json`` (``example`` not compared)."""
    used = prompt_format(tokenizer, task, item)
    training, _ = read_json_file(model_dir / TRAINING_METADATA)
    differences = format_differences(dig(training, "prompt_format"), used)
    if not differences:
        return used, None
    warning = (f"{model_dir.name}: evaluated with a different prompt format than it was trained with ("
               + "; ".join(differences) + ")")
    logging.getLogger(__name__).warning(warning)
    events.emit(EventKind.WARNING, message=warning)
    return used, warning


def memory_peaks() -> dict[str, Any]:
    """Peaks since ``reset_memory_peaks``: CUDA allocated/reserved overall and per GPU (None on the CPU), RSS."""
    from engine.runs.device import local_gpu_peaks, peak_rss_gb

    per_gpu = local_gpu_peaks()
    return {
        "peak_vram_allocated_gb": round(sum(g["peak_allocated_gb"] for g in per_gpu), 3) if per_gpu else None,
        "peak_vram_reserved_gb": round(sum(g["peak_reserved_gb"] for g in per_gpu), 3) if per_gpu else None,
        "per_gpu": per_gpu,
        "peak_rss_gb": peak_rss_gb(),
    }


def build_metrics(name: str, runs: list[DatasetRun], quantization: dict[str, Any], peaks: dict[str, Any],
                  eval_config: dict[str, Any], *, load_s: float, wall_s: float) -> dict[str, Any]:
    """The metrics file: the old scripts' keys (``summary``, ``datasets``…) plus llmtui's new ones."""
    total = sum(run.block["total_samples"] for run in runs)
    correct = sum(run.block["correct"] for run in runs)
    latencies = [v for run in runs for v in run.block["latency_seconds"]["per_prompt"]]
    tokens = [v for run in runs for v in run.block["tokens_generated"]["per_prompt"]]
    generation_s = sum(run.generation_s for run in runs)
    without_lists = lambda stats: {k: v for k, v in stats.items() if k != "per_prompt"}  # noqa: E731
    return {
        "model_name": name,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": {
            "num_datasets": len(runs),
            "total_samples": total,
            "total_correct": correct,
            "total_incorrect": total - correct,
            "overall_accuracy": correct / total if total else None,
            "latency_seconds": without_lists(describe(latencies)),
            "tokens_generated": without_lists(describe(tokens)),
            "quantization": quantization,
            "peak_vram_reserved_gb": peaks["peak_vram_reserved_gb"],
            "peak_vram_allocated_gb": peaks["peak_vram_allocated_gb"],
        },
        "datasets": {run.task.test_file: run.block for run in runs},
        "quantization": quantization,
        "hardware": {"device": eval_config["device"], **peaks},
        "eval_config": {**eval_config, "batch_size_used": {run.task.test_file: run.batch_size for run in runs},
                        "max_new_tokens": {run.task.test_file: run.task.max_new_tokens for run in runs}},
        "throughput": {
            "items_per_second": round(total / generation_s, 4) if generation_s > 0 else None,
            "tokens_per_second": round(sum(tokens) / generation_s, 4) if generation_s > 0 else None,
            "generation_seconds": round(generation_s, 4),
            "load_seconds": round(load_s, 4),
            "wall_seconds": round(wall_s, 4),
        },
        "llmtui_version": __version__,
        "extractor_version": EXTRACTOR_VERSION,
    }


# ---------------------------------------------------------------------------------------- many models


@dataclass
class EvalReport:
    """What a run over several models did: names evaluated, and ``(name, error message)`` per failure."""

    evaluated: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary_line(self) -> str:
        line = f"evaluated {len(self.evaluated)} model(s), {len(self.failed)} failed"
        if self.failed:
            line += ": " + "; ".join(f"{name} ({error})" for name, error in self.failed)
        return line


def _failures_path(ws: Workspace) -> Path:
    return ws.state_dir / FAILURES_FILE


def read_failures(ws: Workspace) -> dict[str, dict[str, Any]]:
    """``{model name: {"error", "at", "model_dir"}}`` of the last failed evaluations (empty when none)."""
    import json

    try:
        data = json.loads(_failures_path(ws).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_outcome(ws: Workspace, name: str, error: str | None, model_dir: str = "") -> None:
    failures = read_failures(ws)
    if error is None:
        if failures.pop(name, None) is None:
            return
    else:
        failures[name] = {"error": error, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "model_dir": model_dir}
    write_json(_failures_path(ws), failures)


def _model_name(ws: Workspace, ref: str | Path) -> str:
    try:
        return safe_name(resolve_model_dir(ws, ref).name)
    except (EvalError, ValueError):
        return Path(str(ref)).name or str(ref)


def evaluate_models(ws: Workspace, refs: list[str | Path], options: EvalOptions | None = None, *,
                    events: EventWriter | None = None,
                    before_generate: BeforeGenerate | None = None) -> EvalReport:
    """Evaluate each model in turn, continuing past failures (each recorded in ``.llmtui/eval-failures.json``).

    The test sets are read first: an unusable one raises (EvalError, DatasetError) before any model loads.
    """
    options = options or EvalOptions()
    events = events or EventWriter(None)
    report = EvalReport()
    if not refs:
        return report
    test_sets = load_test_sets(ws, options)
    for ref in refs:
        name = _model_name(ws, ref)
        try:
            report.metrics[name] = evaluate_model(ws, ref, options, test_sets=test_sets, events=events,
                                                  before_generate=before_generate)
        except Exception as exc:  # one model's failure (any kind: a bad file, a backend error) must not stop the rest
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, (EvalError, DatasetError, ModelLoadError)):
                message = f"{type(exc).__name__}: {message}"
            report.failed.append((name, message))
            events.emit(EventKind.ERROR, model=name, message=message)
            if not isinstance(exc, AlreadyEvaluated):
                _record_outcome(ws, name, message, str(ref))
            continue
        report.evaluated.append(name)
        _record_outcome(ws, name, None)
    return report
