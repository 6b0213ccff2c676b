"""The evaluation engine: batched generation, metrics/predictions files, orchestrator, failures.

Untrained-model tests check structure and robustness only (a random model's near-tied logits can flip
under padding); exact batched-vs-unbatched equality is asserted on a trained model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.data.tasks import get_task, load_items
from engine.runs.evaluate import EvalError, EvalOptions, evaluate_model, read_failures, select_tasks
from engine.runs.generation import (MIN_SHARED_PREFIX, OutOfMemory, brace_token_mask, generate_all,
                                    shared_prefix_length)
from engine.events import EventWriter, read_events
from engine.results.scoring import extract_boxed
from engine.workspace import Workspace

LEGACY_TOP_KEYS = {"model_name", "evaluated_at", "summary", "datasets", "quantization", "hardware"}
LEGACY_SUMMARY_KEYS = {"num_datasets", "total_samples", "total_correct", "total_incorrect", "overall_accuracy",
                     "latency_seconds", "tokens_generated", "quantization", "peak_vram_reserved_gb",
                     "peak_vram_allocated_gb"}
LEGACY_DATASET_KEYS = {"type", "total_samples", "format_success_rate", "correct", "incorrect", "accuracy", "metrics",
                     "latency_seconds", "tokens_generated"}
#: Custom tasks over the demo's files with a small generation ceiling, so an untrained model is quick.
QUICK_TASKS = """
[quickbool]
kind = "boolq"
file_stem = "boolq"
max_new_tokens = 6

[quickarc]
kind = "mcq4"
file_stem = "ai2_arc"
max_new_tokens = 6

[quicksquad]
kind = "squad_v2"
file_stem = "squad_v2"
max_new_tokens = 6

[quickmath]
kind = "math_numeric"
file_stem = "OpenMathInstruct-2"
max_new_tokens = 6
"""


@pytest.fixture
def quick_ws(demo_ws: Workspace) -> Workspace:
    (demo_ws.datasets_dir / "datasets.toml").write_text(QUICK_TASKS)
    return demo_ws


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _leftovers(ws: Workspace) -> list[str]:
    return [p.name for p in ws.testing_dir.rglob("*") if p.name.startswith(".")]


# ------------------------------------------------------------------------------------ files and schema


def test_metrics_file_follows_the_legacy_schema_and_predictions_match_it(quick_ws):
    events_file = quick_ws.root / "events.jsonl"
    with EventWriter(events_file) as events:
        metrics = evaluate_model(quick_ws, "tiny-qwen3",
                                 EvalOptions(datasets=["quickbool", "quickarc", "quicksquad", "quickmath"],
                                             limit=5, batch_size=3), events=events)
    on_disk = json.loads(quick_ws.metrics_file("tiny-qwen3").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert LEGACY_TOP_KEYS <= set(on_disk) and on_disk["model_name"] == "tiny-qwen3"
    assert LEGACY_SUMMARY_KEYS <= set(on_disk["summary"])
    assert set(on_disk["datasets"]) == {"test-boolq.parquet", "test-ai2_arc.parquet", "test-squad_v2.parquet",
                                        "test-OpenMathInstruct-2.parquet"}
    assert on_disk["summary"]["num_datasets"] == 4 and on_disk["summary"]["total_samples"] == 20
    assert on_disk["summary"]["quantization"]["method"] == "NoQuant"
    assert on_disk["hardware"]["device"] == "cpu" and on_disk["hardware"]["peak_rss_gb"] > 0
    assert on_disk["summary"]["peak_vram_reserved_gb"] is None  # no GPU here
    assert on_disk["llmtui_version"] and on_disk["throughput"]["items_per_second"] > 0
    assert on_disk["eval_config"]["batch_size_used"]["test-boolq.parquet"] == 3
    # Provenance for llmtui compare's guard: each test file's SHA-256 and the scoring rules' version.
    import hashlib

    from engine.results.scoring import EXTRACTOR_VERSION

    for file_name, block in on_disk["datasets"].items():
        assert block["dataset_sha256"] == hashlib.sha256((quick_ws.datasets_dir / file_name).read_bytes()).hexdigest()
    assert on_disk["extractor_version"] == EXTRACTOR_VERSION

    from engine.runs.loading import load_tokenizer
    from engine.data.prompts import render_prompt

    tokenizer = load_tokenizer(quick_ws.model_dir("tiny-qwen3"))
    for test_file, block in on_disk["datasets"].items():
        assert LEGACY_DATASET_KEYS <= set(block)
        task = get_task(test_file, quick_ws.datasets_dir)
        assert block["type"] == task.kind and block["total_samples"] == 5
        rows = _read_jsonl(quick_ws.predictions_folder("tiny-qwen3") / f"{Path(test_file).stem}.jsonl")
        items = load_items(quick_ws.datasets_dir, task, "test", 5)
        assert [r["index"] for r in rows] == [item.index for item in items]
        for row, item in zip(rows, items):
            assert row["prompt"] == render_prompt(tokenizer, task, item)
            assert row["gold"] == item.answer and 1 <= row["tokens"] <= 6
            assert row["extracted"] == extract_boxed(row["output"])
            assert ("f1" in row) == (task.kind == "squad_v2")
        assert sum(r["correct"] for r in rows) == block["correct"]
        assert block["latency_seconds"]["per_prompt"] == pytest.approx([r["latency_s"] for r in rows], abs=1e-6)
        assert block["tokens_generated"]["per_prompt"] == [r["tokens"] for r in rows]
    progress = [e for e in read_events(events_file) if e["kind"] == "eval_progress"]
    finals = {e["dataset"]: (e["done"], e["total"]) for e in progress}
    assert finals == {f: (5, 5) for f in on_disk["datasets"]}
    assert [e["done"] for e in progress if e["dataset"] == "test-boolq.parquet"] == [0, 3, 5]
    assert not _leftovers(quick_ws)


def test_default_datasets_are_the_present_test_files_once_each(quick_ws):
    files = [t.test_file for t in select_tasks(quick_ws, None)]
    assert sorted(files) == sorted(p.name for p in quick_ws.datasets_dir.glob("test-*.parquet"))
    assert [t.name for t in select_tasks(quick_ws, None)][:4] == ["openmath", "squad", "arc", "boolq"]
    with pytest.raises(EvalError, match="both read test-boolq.parquet"):
        select_tasks(quick_ws, ["boolq", "quickbool"])


def test_already_evaluated_needs_force_and_a_corrupt_metrics_file_is_replaced(quick_ws):
    options = EvalOptions(datasets=["quickbool"], limit=2)
    path = quick_ws.metrics_file("tiny-qwen3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ not json")
    evaluate_model(quick_ws, "tiny-qwen3", options)
    assert json.loads(path.read_text())["summary"]["total_samples"] == 2
    with pytest.raises(EvalError, match="already evaluated.*--force"):
        evaluate_model(quick_ws, "tiny-qwen3", options)
    evaluate_model(quick_ws, "tiny-qwen3", EvalOptions(datasets=["quickbool"], limit=3, force=True))
    assert json.loads(path.read_text())["summary"]["total_samples"] == 3


# ------------------------------------------------------------------------------------ generation


def _prompts(ws: Workspace, tokenizer, task_name: str, limit: int) -> list[list[int]]:
    """The token ids evaluation generates from for the first ``limit`` items of a test set."""
    from engine.data.prompts import render_prompt
    from engine.data.prompts import tokenize_prompts

    task = get_task(task_name, ws.datasets_dir)
    items = load_items(ws.datasets_dir, task, "test", limit)
    return tokenize_prompts(tokenizer, [render_prompt(tokenizer, task, item) for item in items])


def test_stop_criterion_ends_each_row_at_its_first_closed_box_or_eos(demo_ws):
    import torch

    from engine.runs.generation import _stop_criterion, box_stop
    from engine.runs.loading import load_tokenizer

    tokenizer = load_tokenizer(demo_ws.model_dir("tiny-qwen3"))
    mask = brace_token_mask(tokenizer, len(tokenizer))
    rows = [tokenizer(" \\boxed{A} and \\boxed{B}")["input_ids"],
            tokenizer(" \\boxed{a {nested} box} tail")["input_ids"],
            tokenizer(" no box here at all")["input_ids"] + [tokenizer.eos_token_id],
            tokenizer(" \\boxed{never closed")["input_ids"]]
    width = max(map(len, rows)) + 2
    padded = [r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows]
    prompt = [7, 8, 9]
    criterion = _stop_criterion(tokenizer, len(prompt), len(rows), [tokenizer.eos_token_id], mask, "cpu",
                                box_stop(tokenizer))
    for step in range(1, width + 1):
        criterion(torch.tensor([prompt + r[:step] for r in padded]), None)
    expected = []
    for text_row in rows[:2]:
        # the first prefix whose decoded text has a closed first box
        expected.append(next(k for k in range(1, len(text_row) + 1)
                             if extract_boxed(tokenizer.decode(text_row[:k])) is not None))
    assert criterion.done.tolist() == [True, True, True, False]
    assert criterion.lengths[:3] == [*expected, len(rows[2])]
    assert tokenizer.decode(rows[0][:expected[0]]).endswith("{A}")
    assert tokenizer.decode(rows[1][:expected[1]]).endswith("box}")


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2], [7, 2]]) == 0


def test_out_of_memory_halves_the_batch_and_keeps_every_item(demo_ws):
    """The hook simulates CUDA out-of-memory above 2 prompts: a test seam, since this machine has no GPU."""
    import torch

    from engine.runs.loading import load_for_inference

    loaded = load_for_inference(demo_ws.model_dir("tiny-qwen3"), device="cpu")
    prompts = _prompts(demo_ws, loaded.tokenizer, "boolq", 7)
    mask = brace_token_mask(loaded.tokenizer, loaded.model.config.vocab_size)
    attempts = []

    def small_gpu(size: int) -> None:
        attempts.append(size)
        if size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    gens, used = generate_all(loaded.model, loaded.tokenizer, prompts, max_new_tokens=4, batch_size=8,
                              brace_mask=mask, before_generate=small_gpu)
    assert attempts == [7, 4, 2, 2, 2, 1]  # 8 is more than the 7 prompts; halved (rounding up) until it fits
    assert used == 2 and len(gens) == 7 and all(g.tokens == 4 for g in gens)
    plain, used = generate_all(loaded.model, loaded.tokenizer, prompts, max_new_tokens=4, batch_size=8,
                               brace_mask=mask)
    assert used == 8 and [g.tokens for g in plain] == [g.tokens for g in gens]

    def no_memory(size: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemory, match="out of memory even with one prompt"):
        generate_all(loaded.model, loaded.tokenizer, prompts[:2], max_new_tokens=4, batch_size=2,
                     brace_mask=mask, before_generate=no_memory)


def test_auto_batch_on_the_cpu_is_capped_by_host_memory(demo_ws):
    """CPU out-of-memory is the OOM killer, not an exception: auto sizes the batch from the estimator's KV cache a
    row and the prefill's transient (one forward pass of at most PREFILL_POSITIONS prompt positions)."""
    import psutil

    from engine.models.estimate import PREFILL_POSITIONS, ModelShape, generation_rows
    from engine.runs.generation import host_memory_batch_cap
    from engine.runs.loading import load_for_inference

    loaded = load_for_inference(demo_ws.model_dir("tiny-qwen3"), device="cpu")
    config = loaded.model.config
    shape = ModelShape.from_attributes(config)
    # 2 layers × (keys + values) × 2 KV heads × head_dim 32 × 4 bytes (float32) a position of prompt + answer
    row = 316 * 2 * 2 * 2 * 32 * 4
    # the prefill: (4 × intermediate + 2 × hidden) floats a prompt position, over the 13 rows of 300 one pass takes
    prefill = (PREFILL_POSITIONS // 300) * 300 * (4 * config.intermediate_size + 2 * config.hidden_size) * 4
    assert generation_rows(shape, prefill + 10 * row, 300, 16, 4) == 10
    assert generation_rows(shape, prefill + 10 * row - 1, 300, 16, 4) == 9
    assert host_memory_batch_cap(loaded.model, 10 ** 12, 16) == 1
    expected = (psutil.virtual_memory().available * 0.5 - prefill) // row
    assert abs(host_memory_batch_cap(loaded.model, 300, 16) - expected) <= 0.1 * expected


def test_other_generation_errors_are_not_mistaken_for_out_of_memory(demo_ws):
    from engine.runs.loading import load_for_inference

    loaded = load_for_inference(demo_ws.model_dir("tiny-qwen3"), device="cpu")
    mask = brace_token_mask(loaded.tokenizer, loaded.model.config.vocab_size)

    def broken(size: int) -> None:
        raise RuntimeError("shape mismatch in attention")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate_all(loaded.model, loaded.tokenizer, [[5, 6], [7]], max_new_tokens=2, batch_size=2, brace_mask=mask,
                     before_generate=broken)


def test_the_kv_cache_holds_each_batch_width_and_the_ceiling_not_twice_the_prompts(demo_ws, monkeypatch):
    """Cache buffers take a batch's width + the ceiling on new tokens at once, and keep it while it decodes: growing
    by doubling held twice a long prompt's cache for a short answer (1B, 32 rows of ~780 tokens: 3.3 GB, not 1.7)."""
    import torch

    from engine.runs.generation import _Engine
    from engine.runs.loading import load_for_inference

    loaded = load_for_inference(demo_ws.model_dir("tiny-qwen3"), device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    mask = brace_token_mask(tokenizer, model.config.vocab_size)
    ceiling = 6
    own = [[20 + i] * (30 + 5 * i) for i in range(4)]
    for prompts in (own, [list(range(100, 110)) + ids for ids in own]):  # left-padded, then a shared prefix
        engine = _Engine(model, tokenizer, prompts, ceiling, mask, [-1], lambda _: False)
        assert bool(engine.prefix_length) == (prompts is not own)

        def columns(batch):
            return {buffer.shape[-2] for layer in batch.layers for buffer in layer.buffers}

        with torch.inference_mode():
            batch = engine.prefill([2, 3])
            width = batch.mask.shape[1]
            assert columns(batch) == {width + ceiling}
            for _ in range(ceiling - 1):
                engine.step(batch)
            assert columns(batch) == {width + ceiling} and batch.mask.shape[1] == width + ceiling - 1
            batch.keep([1])
            newcomers = engine.prefill([0, 1])
            batch.join(newcomers, room=ceiling)
            assert columns(batch) == {batch.mask.shape[1] + ceiling}
            # prefilled a row at a time (as rows of long prompts are), each row's keys and values land in its
            # rows of one cache: the same cache, the same first tokens
            whole = engine.prefill([0, 1, 2, 3])
            monkeypatch.setattr("engine.models.estimate.PREFILL_POSITIONS", 1)
            grouped = engine.prefill([0, 1, 2, 3])
            monkeypatch.undo()
            assert columns(grouped) == {grouped.mask.shape[1] + ceiling}
            assert torch.equal(grouped.last, whole.last) and torch.equal(grouped.mask, whole.mask)
            for mine, theirs in zip(grouped.layers, whole.layers):
                assert torch.allclose(mine.keys, theirs.keys, atol=1e-5)
                assert torch.allclose(mine.values, theirs.values, atol=1e-5)


@pytest.mark.slow
def test_continuous_batching_equals_one_prompt_at_a_time(trained_boolq_model, weak_arc_model):
    """Rows leaving and joining the batch, padding and the shared prefix change no output; nor does the stop rule."""
    import torch

    from engine.runs.generation import _Engine, generate_single
    from engine.runs.loading import load_for_inference

    ceiling = 96
    for (root, name), sets in ((trained_boolq_model, ("boolq",)), (weak_arc_model, ("boolq", "openmath"))):
        ws = Workspace(Path(root))
        loaded = load_for_inference(ws.model_dir(name), device="cpu")
        tokenizer, model = loaded.tokenizer, loaded.model
        prompts = [ids for task in sets for ids in _prompts(ws, tokenizer, task, 12)]
        mask = brace_token_mask(tokenizer, model.config.vocab_size)
        # decoding steps take the mask made here, not transformers' (and it gives the same logits)
        assert _Engine(model, tokenizer, prompts, ceiling, mask, [tokenizer.eos_token_id], lambda _: False).ready_mask
        # BoolQ alone shares the system prompt's KV cache; mixed with OpenMath the rows are left-padded
        assert (shared_prefix_length(prompts) >= MIN_SHARED_PREFIX) == (len(sets) == 1)
        single = [generate_single(model, tokenizer, ids, ceiling, mask) for ids in prompts]
        finished = []
        batched, used = generate_all(model, tokenizer, prompts, max_new_tokens=ceiling, batch_size=5,
                                     brace_mask=mask, on_rows_done=finished.extend)
        assert used == 5
        assert [(g.text, g.tokens) for g in batched] == single
        with pytest.MonkeyPatch.context() as patch:  # each row prefilled in a forward pass of its own
            patch.setattr("engine.models.estimate.PREFILL_POSITIONS", 1)
            grouped, _ = generate_all(model, tokenizer, prompts, max_new_tokens=ceiling, batch_size=5, brace_mask=mask)
        assert [(g.text, g.tokens) for g in grouped] == single
        assert sorted(index for index, _ in finished) == list(range(len(prompts)))  # each row reported once
        assert all(batched[index] is generation for index, generation in finished)
    lengths = [g.tokens for g in batched]
    assert max(lengths) == ceiling and min(lengths) < 10  # rows ended far apart, and others took their places
    root, name = trained_boolq_model
    ws = Workspace(Path(root))
    loaded = load_for_inference(ws.model_dir(name), device="cpu")
    tokenizer, model = loaded.tokenizer, loaded.model
    boolq = _prompts(ws, tokenizer, "boolq", 8)
    mask = brace_token_mask(tokenizer, model.config.vocab_size)
    unstopped = []
    for ids in boolq:
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        unstopped.append(tokenizer.decode(out[0][len(ids):], skip_special_tokens=True))
    stopped = [generate_single(model, tokenizer, ids, 64, mask)[0] for ids in boolq]
    assert [extract_boxed(text) for text in stopped] == [extract_boxed(t) for t in unstopped]
    assert all(extract_boxed(text) is not None for text in stopped)  # it answers every BoolQ item in a box


@pytest.mark.parametrize("arch, extra", [
    ("mistral", {"sliding_window": 8}),
    ("gemma2", {"sliding_window": 8, "head_dim": 16, "query_pre_attn_scalar": 16}),
])
def test_sliding_window_models_batch_like_one_prompt_at_a_time(demo_ws, arch, extra):
    """A window shorter than the prompts: rows stay contiguous, so a window of cache columns is one of tokens."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.runs.generation import attention_layout, generate_single, ready_decode_mask
    from engine.runs.loading import load_tokenizer

    tokenizer = load_tokenizer(demo_ws.model_dir("tiny-qwen3"))
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  initializer_range=0.2, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert attention_layout(model) == "sliding" and not ready_decode_mask(model)  # a window: transformers' mask
    mask = brace_token_mask(tokenizer, len(tokenizer))
    prompts = _prompts(demo_ws, tokenizer, "boolq", 3) + _prompts(demo_ws, tokenizer, "arc", 4)
    single = [generate_single(model, tokenizer, ids, 12, mask) for ids in prompts]
    batched, _ = generate_all(model, tokenizer, prompts, max_new_tokens=12, batch_size=3, brace_mask=mask)
    assert [(g.text, g.tokens) for g in batched] == single


def test_a_model_reading_its_mask_for_more_than_attention_keeps_transformers_mask(demo_ws):
    """Falcon with ALiBi builds its biases from the 2D mask: the ready-made decoding mask passes the static check,
    fails the measured one (different logits), and is not used; batches still equal one prompt at a time."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.runs.generation import _Engine, generate_single, ready_decode_mask
    from engine.runs.loading import load_tokenizer

    tokenizer = load_tokenizer(demo_ws.model_dir("tiny-qwen3"))
    config = AutoConfig.for_model("falcon", alibi=True, new_decoder_architecture=False, multi_query=True,
                                  vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    mask = brace_token_mask(tokenizer, len(tokenizer))
    prompts = _prompts(demo_ws, tokenizer, "boolq", 3) + _prompts(demo_ws, tokenizer, "arc", 4)
    assert ready_decode_mask(model)
    assert not _Engine(model, tokenizer, prompts, 12, mask, [tokenizer.eos_token_id], lambda _: False).ready_mask
    single = [generate_single(model, tokenizer, ids, 12, mask) for ids in prompts]
    batched, _ = generate_all(model, tokenizer, prompts, max_new_tokens=12, batch_size=3, brace_mask=mask)
    assert [(g.text, g.tokens) for g in batched] == single


@pytest.mark.slow
def test_predictions_reproduce_the_reported_accuracy_of_a_trained_model(trained_boolq_model, tmp_path):
    root, name = trained_boolq_model
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(root, ws.root, symlinks=True)
    metrics = evaluate_model(ws, name, EvalOptions(datasets=["boolq"], limit=60, batch_size="auto"))
    block = metrics["datasets"]["test-boolq.parquet"]
    rows = _read_jsonl(ws.predictions_folder(name) / "test-boolq.jsonl")
    assert len(rows) == block["total_samples"] == 60
    assert sum(r["correct"] for r in rows) == block["correct"]
    assert block["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert block["accuracy"] >= 0.9 and block["format_success_rate"] == 1.0
    confusion = block["metrics"]["confusion"]
    assert confusion["TP"] == sum(r["correct"] and r["gold"] is True for r in rows)
    assert confusion["TN"] == sum(r["correct"] and r["gold"] is False for r in rows)
    assert metrics["summary"]["overall_accuracy"] == block["accuracy"]


# ------------------------------------------------------------------------------------ failures


def test_interrupted_evaluation_leaves_no_metrics_file(quick_ws):
    from engine.models.scan import scan_models

    calls = []

    def interrupt_on_second_dataset(size: int) -> None:
        calls.append(size)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_model(quick_ws, "tiny-qwen3", EvalOptions(datasets=["quickbool", "quickarc"], limit=2, batch_size=2),
                       before_generate=interrupt_on_second_dataset)
    assert not quick_ws.metrics_file("tiny-qwen3").exists()
    assert not quick_ws.predictions_folder("tiny-qwen3").exists()
    assert not _leftovers(quick_ws)
    assert {r.name: r.status for r in scan_models(quick_ws)}["tiny-qwen3"] == "untested"


def _cli(ws: Workspace, *args: str) -> int:
    """Run ``llmtui eval`` in-process and return its exit status."""
    from tui.cli.main import main

    try:
        return main(["-w", str(ws.root), "eval", *args])
    except SystemExit as exc:
        return exc.code


def test_orchestrator_continues_past_failures_lists_broken_folders_and_exits_nonzero(quick_ws, capsys):
    """A folder that fails to load is tried and recorded; one the model scan calls broken is listed, never tried."""
    base = quick_ws.model_dir("tiny-qwen3")
    garbage = quick_ws.models_dir / "aaa-garbage-weights"
    shutil.copytree(base, garbage)
    # Whole, well-formed weights (the scan lists the folder as untested; a truncated file would be listed as
    # broken) that do not fit the configuration: it fails only when loaded.
    config = json.loads((garbage / "config.json").read_text())
    (garbage / "config.json").write_text(json.dumps({**config, "intermediate_size": 2 * config["intermediate_size"]}))
    bad_json = quick_ws.models_dir / "bbb-bad-config"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{ oops")
    events_file = quick_ws.root / "events.jsonl"
    code = _cli(quick_ws, "--untested", "--datasets", "quickbool", "--limit", "2", "--events", str(events_file))
    captured = capsys.readouterr()
    assert code == 1
    assert quick_ws.metrics_file("tiny-qwen3").is_file()
    assert not quick_ws.metrics_file("aaa-garbage-weights").exists()
    assert not quick_ws.metrics_file("bbb-bad-config").exists()
    assert "evaluated 1 model(s), 1 failed" in captured.err
    assert "aaa-garbage-weights" in captured.err
    assert "broken, not evaluated: bbb-bad-config: config.json: cannot be read as JSON" in captured.err
    assert "Traceback" not in captured.err
    failures = read_failures(quick_ws)
    assert set(failures) == {"aaa-garbage-weights"}
    assert "cannot load the model" in failures["aaa-garbage-weights"]["error"]
    errors = [e for e in read_events(events_file) if e["kind"] == "error"]
    assert {e["model"] for e in errors} == {"aaa-garbage-weights"}
    done = [e for e in read_events(events_file) if e["kind"] == "done"]
    assert done[-1]["evaluated"] == ["tiny-qwen3"]

    shutil.rmtree(garbage)
    shutil.rmtree(bad_json)
    assert _cli(quick_ws, "--untested", "--datasets", "quickbool", "--limit", "2") == 0
    assert "no untested models" in capsys.readouterr().out


def test_a_fixed_model_is_cleared_from_the_failures_file(quick_ws):
    from engine.runs.evaluate import evaluate_models

    broken = quick_ws.models_dir / "later-fixed"
    broken.mkdir()
    (broken / "config.json").write_text("[]")
    report = evaluate_models(quick_ws, [broken], EvalOptions(datasets=["quickbool"], limit=1))
    assert report.failed and "later-fixed" in read_failures(quick_ws)
    shutil.rmtree(broken)
    shutil.copytree(quick_ws.model_dir("tiny-qwen3"), broken)
    report = evaluate_models(quick_ws, [broken], EvalOptions(datasets=["quickbool"], limit=1))
    assert report.evaluated == ["later-fixed"] and read_failures(quick_ws) == {}


def test_dataset_missing_a_column_names_the_file_and_column(quick_ws, capsys):
    import pyarrow.parquet as pq

    path = quick_ws.datasets_dir / "test-boolq.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop(["context"]), path)
    events_file = quick_ws.root / "events.jsonl"
    assert _cli(quick_ws, "tiny-qwen3", "--datasets", "boolq", "--events", str(events_file)) == 1
    err = capsys.readouterr().err
    assert "test-boolq.parquet" in err and "'context'" in err and "Traceback" not in err
    assert any(e["kind"] == "error" and "'context'" in e["message"] for e in read_events(events_file))
    assert not quick_ws.metrics_file("tiny-qwen3").exists()


def test_cli_rejects_bad_arguments_with_one_clear_message(quick_ws, capsys):
    assert _cli(quick_ws, "no-such-model", "--datasets", "quickbool") == 1
    assert "no-such-model" in capsys.readouterr().err
    assert _cli(quick_ws, "tiny-qwen3", "--datasets", "nosuchset") == 1
    assert "unknown dataset 'nosuchset'" in capsys.readouterr().err
    assert _cli(quick_ws, "tiny-qwen3", "--datasets", "quickbool", "--limit", "1") == 0
    capsys.readouterr()
    assert _cli(quick_ws, "tiny-qwen3", "--datasets", "quickbool") == 1
    assert "already evaluated" in capsys.readouterr().err
    assert _cli(quick_ws, "tiny-qwen3", "--batch-size", "0") == 2
    assert "--batch-size" in capsys.readouterr().err
    assert _cli(quick_ws) == 2
    assert "MODEL_DIR" in capsys.readouterr().err
    # a missing model is recorded; bad options and "already evaluated" are not failures of a model
    assert set(read_failures(quick_ws)) == {"no-such-model"}


def test_a_ptq_output_is_evaluated_with_its_quantization_in_the_metrics(quick_ws):
    from engine.runs.quantize import quantize_model

    result = quantize_model(quick_ws, "tiny-qwen3", "hqq", bits=4, group_size=64, device="cpu")
    name = result["model_name"]
    metrics = evaluate_model(quick_ws, name, EvalOptions(datasets=["quickbool"], limit=3))
    quantization = metrics["quantization"]
    assert quantization["method"] == "HQQ" and quantization["bits"] == 4 and quantization["group_size"] == 64
    assert quantization["backend"] == "hqq" and quantization["quant_tag"] == result["quant_tag"]
    assert quantization["has_quantization"] is True and quantization["loaded_as"] == "hqq"
    assert metrics["summary"]["quantization"] == quantization
    assert metrics["eval_config"]["model_kind"] == "hqq"
    rows = _read_jsonl(quick_ws.predictions_folder(name) / "test-boolq.jsonl")
    assert len(rows) == 3 and all(1 <= r["tokens"] <= 6 for r in rows)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resetting the RSS peak needs Linux /proc")
def test_peak_memory_is_measured_per_model_not_per_process():
    """The orchestrator evaluates models one after another in one process; each gets its own peak."""
    import numpy as np

    from engine.runs.device import peak_rss_gb, reset_memory_peaks

    reset_memory_peaks()
    before = peak_rss_gb()
    block = np.ones(400 * 2 ** 20 // 8)  # 400 MiB, touched
    del block
    high = peak_rss_gb()
    assert high >= before + 0.3
    reset_memory_peaks()
    assert peak_rss_gb() < high - 0.3


def test_quantization_block_reports_training_time_qlora_of_a_merged_model():
    from engine.runs.evaluate import quantization_block
    from engine.runs.loading import ModelKind
    from engine.presets.naming import qlora_spec

    merged = ModelKind("full", info={"training_quantization": qlora_spec().metadata()})
    block = quantization_block(merged)
    assert (block["method"], block["quant_tag"], block["source"], block["bits"]) == \
        ("QLORA", "QLORA_w4_headbf16", "training", 4)
    assert quantization_block(ModelKind("full"))["quant_tag"] == "NoQuant"


def test_failure_records_from_concurrent_evaluations_are_all_kept(tmp_path):
    """Four processes record 25 failures each at once into ``.llmtui/eval-failures.json``: the lock around its
    read-modify-write keeps every record (without it, interleaved writes drop some)."""
    import subprocess
    import sys

    ws = Workspace(tmp_path / "ws").init()
    code = ("import sys; from pathlib import Path; from engine.workspace import Workspace; "
            "from engine.runs.evaluate import _record_outcome; ws = Workspace(Path(sys.argv[1])); "
            "[_record_outcome(ws, f'{sys.argv[2]}-{i}', 'boom', '') for i in range(25)]")
    repo = Path(__file__).resolve().parents[3]
    writers = [subprocess.Popen([sys.executable, "-c", code, str(ws.root), f"w{n}"], cwd=repo) for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    assert set(read_failures(ws)) == {f"w{n}-{i}" for n in range(4) for i in range(25)}
