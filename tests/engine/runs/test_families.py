"""Each model family end to end on the CPU: a tiny model of its architecture with the vendor's chat template
and tokenizer is LoRA-trained (default target modules), evaluated, quantized with a PTQ method, reloaded
and evaluated again; QLoRA trains on every architecture; target-module and prompt-format rules hold."""

from __future__ import annotations

import json

import pytest

from engine.data.prompts import format_differences, render_prompt, tokenize_prompts
from engine.runs.tiny import FAMILIES

NAMES = tuple(FAMILIES)
TRAIN = ["data.dataset=\"boolq\"", "data.trunc_train=16", "train.max_steps=2", "train.per_device_train_batch_size=4",
         "train.gradient_accumulation_steps=1", "train.gradient_checkpointing=false", "train.max_length=256",
         "train.logging_steps=1", "train.learning_rate=1e-3", "peft.r=4", "peft.alpha=8"]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from threads, and they thrash on a busy machine
    yield
    torch.set_num_threads(threads)


def _config(base: str, extra: list[str] = ()):
    from engine.presets.config import load_preset_text

    return load_preset_text(f'[model]\nbase = "Models/{base}"\n', overrides=[*TRAIN, *extra], custom_datasets=("quick",))


def _evaluate(ws, model: str, limit: int = 2, batch_size: int = 2, dataset: str = "quick"):
    from engine.runs.evaluate import EvalOptions, evaluate_model

    metrics = evaluate_model(ws, model, EvalOptions(datasets=[dataset], limit=limit, batch_size=batch_size,
                                                    force=True, device="cpu"))
    stem = "boolq" if dataset == "quick" else dataset
    rows = [json.loads(line) for line in (ws.predictions_folder(model) / f"test-{stem}.jsonl").read_text().splitlines()]
    return metrics, rows


def _check_rows(ws, model: str, rows: list[dict]) -> None:
    """Each row's prompt is the builder's text and ``prompt_tokens`` is what tokenize_prompts gives for it."""
    from engine.data.tasks import get_task, load_items
    from engine.runs.loading import load_tokenizer

    tokenizer = load_tokenizer(ws.model_dir(model))
    task = get_task("quick", ws.datasets_dir)
    items = {item.index: item for item in load_items(ws.datasets_dir, task, "test")}
    for row in rows:
        assert row["prompt"] == render_prompt(tokenizer, task, items[row["index"]])
        ids = tokenize_prompts(tokenizer, [row["prompt"]])[0]
        assert row["prompt_tokens"] == len(ids) > 10
        if tokenizer.bos_token_id is not None and row["prompt"].startswith(tokenizer.bos_token):
            assert ids.count(tokenizer.bos_token_id) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_family_trains_evaluates_and_quantizes(family_ws, name):
    from engine.data.prompts import render_example
    from engine.data.tasks import get_task, load_items
    from engine.runs.loading import load_tokenizer
    from engine.runs.quantize import quantize_model
    from engine.runs.train import train
    from engine.runs.train_data import build_dataset

    ws, base = family_ws
    config = _config(base(name))
    result = train(ws, config, overwrite=True)
    meta = result.metadata
    assert meta["target_modules"] == {"requested": ["attention"],
                                      "resolved": sorted(FAMILIES[name].attention_modules)}
    assert sorted(meta["peft_config"]["target_modules"]) == sorted(FAMILIES[name].attention_modules)
    assert meta["data"]["prefix_mismatches"] == 0
    trained_format = meta["prompt_format"]
    assert trained_format["system_placement"] == ("user" if name.startswith("gemma") else "system")
    saved = json.loads((result.output_dir / "training_metadata.json").read_text())
    assert saved["prompt_format"] == trained_format

    # Training feeds exactly the evaluation prompt's tokens, then the completion.
    tokenizer = load_tokenizer(result.output_dir)
    task = get_task("boolq")
    item = load_items(ws.datasets_dir, task, "train", 1)[0]
    dataset, _ = build_dataset(ws, config, tokenizer)
    prompt_ids = tokenize_prompts(tokenizer, [render_prompt(tokenizer, task, item)])[0]
    row = dataset[0]
    assert row["input_ids"][:len(prompt_ids)] == prompt_ids
    assert row["completion_mask"] == [0] * len(prompt_ids) + [1] * (len(row["input_ids"]) - len(prompt_ids))
    assert render_example(tokenizer, task, item)["prompt"] == render_prompt(tokenizer, task, item)

    metrics, rows = _evaluate(ws, result.model_name)
    assert format_differences(trained_format, metrics["prompt_format"]) == []
    assert "prompt_format_warning" not in metrics
    _check_rows(ws, result.model_name, rows)

    quantized = quantize_model(ws, base(name), "hqq", overwrite=True)
    metrics, rows = _evaluate(ws, quantized["model_name"], limit=1, batch_size=1)
    assert metrics["quantization"]["method"] == "HQQ" and len(rows) == 1
    _check_rows(ws, quantized["model_name"], rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_family_qlora(family_ws, name):
    from engine.runs.train import train

    ws, base = family_ws
    result = train(ws, _config(base(name), ['quant.method="QLORA"', "train.max_steps=1"]), overwrite=True)
    assert result.metadata["quantization"]["method"] == "QLORA"
    assert result.metadata["target_modules"]["resolved"] == sorted(FAMILIES[name].attention_modules)
    assert result.metadata["training_stats"]["total_steps"] == 1


def test_phi3_explicit_modules_that_do_not_exist_fail_naming_the_real_ones(family_ws):
    from engine.runs.train import train
    from engine.runs.train_errors import TrainError

    ws, base = family_ws
    import shutil

    config = _config(base("phi3"), ['peft.target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]'])
    shutil.rmtree(ws.model_dir(config.output_name()), ignore_errors=True)  # the pipeline test may have trained it
    with pytest.raises(TrainError, match=r"q_proj, k_proj, v_proj not in .*\(phi3\); its linear modules are "
                                         r"down_proj, gate_up_proj, o_proj, qkv_proj"):
        train(ws, config, overwrite=True)
    assert not ws.model_dir(config.output_name()).exists()


def test_all_linear_and_attention_resolve_per_architecture(family_ws):
    from transformers import AutoModelForCausalLM

    from engine.runs.model_setup import resolve_target_modules

    ws, base = family_ws
    model = AutoModelForCausalLM.from_pretrained(ws.model_dir(base("phi3")))
    assert resolve_target_modules(model, _config(base("phi3"), ['peft.target_modules=["all-linear"]'])) == "all-linear"
    mixed = _config(base("phi3"), ['peft.target_modules=["attention", "gate_up_proj"]'])
    assert sorted(resolve_target_modules(model, mixed)) == ["gate_up_proj", "o_proj", "qkv_proj"]


@pytest.mark.slow
def test_llama3_without_pad_token_batches_like_one_at_a_time(family_ws):
    """Llama 3 has no pad token: batched evaluation (padding) gives the same outputs as one prompt at a time."""
    import shutil

    ws, base = family_ws
    name = base("llama3")
    assert json.loads((ws.model_dir(name) / "tokenizer_config.json").read_text()).get("pad_token") is None
    copy = ws.model_dir("tiny-llama3-single")
    if not copy.exists():
        shutil.copytree(ws.model_dir(name), copy)
    _, batched = _evaluate(ws, name, limit=6, batch_size=6, dataset="varied")
    _, single = _evaluate(ws, copy.name, limit=6, batch_size=1, dataset="varied")
    assert len({row["prompt_tokens"] for row in batched}) > 1  # the batch really needed padding
    assert [row["output"] for row in batched] == [row["output"] for row in single]
    assert [row["tokens"] for row in batched] == [row["tokens"] for row in single]


def test_evaluation_warns_when_the_prompt_format_differs_from_training(family_ws):
    import shutil

    from engine.events import EventWriter, read_events
    from engine.runs.evaluate import EvalOptions, evaluate_model

    ws, base = family_ws
    folder = ws.model_dir("tiny-qwen3-other-format")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ws.model_dir(base("qwen3")), folder)
    from engine.data.prompts import prompt_format
    from engine.runs.loading import load_tokenizer

    trained = {**prompt_format(load_tokenizer(folder)), "enable_thinking": True}
    (folder / "training_metadata.json").write_text(json.dumps({"prompt_format": trained}))
    events_file = ws.state_dir / "format-warning.jsonl"
    with EventWriter(events_file) as events:
        metrics = evaluate_model(ws, folder.name, EvalOptions(datasets=["quick"], limit=1, force=True, device="cpu"),
                                 events=events)
    assert "enable_thinking: True != False" in metrics["prompt_format_warning"]
    warnings = [e for e in read_events(events_file) if e["kind"] == "warning"]
    assert len(warnings) == 1 and "enable_thinking" in warnings[0]["message"]


@pytest.mark.slow
def test_gptq_calibration_reaches_the_backend_with_one_bos(family_ws, monkeypatch):
    """GPTQModel tokenizes raw calibration text with special tokens (a second BOS after Gemma's template's);
    llmtui hands it token ids from tokenize_prompts instead. The backend's own dataset preparation is wrapped
    to see what it receives, then runs unchanged."""
    from gptqmodel.models.base import BaseQModel

    from engine.runs.loading import load_tokenizer
    from engine.runs.quantize import quantize_model

    ws, base = family_ws
    name = base("gemma2")
    bos = load_tokenizer(ws.model_dir(name)).bos_token_id
    received = []
    original = BaseQModel.prepare_dataset

    def recording(self, calibration_dataset, *args, **kwargs):
        received.extend(calibration_dataset)
        return original(self, calibration_dataset, *args, **kwargs)

    monkeypatch.setattr(BaseQModel, "prepare_dataset", recording)
    result = quantize_model(ws, name, "gptq", calibration="boolq", samples=4, overwrite=True)
    assert len(received) == 4 and all(row[0] == bos and row.count(bos) == 1 for row in received)
    metrics, rows = _evaluate(ws, result["model_name"], limit=1, batch_size=1)
    assert metrics["quantization"]["method"] == "GPTQ" and rows[0]["prompt_tokens"] > 10


def test_a_doubled_bos_after_the_trainer_preparation_stops_training(family_tokenizer):
    from types import SimpleNamespace

    from datasets import Dataset

    from engine.runs.train_data import check_trainer_inputs
    from engine.runs.train_errors import TrainError

    tokenizer = family_tokenizer("gemma2")
    bos = tokenizer.bos_token_id
    check_trainer_inputs(SimpleNamespace(train_dataset=Dataset.from_dict({"input_ids": [[bos, 7, 8], [bos, 9]]})),
                         tokenizer)
    doubled = SimpleNamespace(train_dataset=Dataset.from_dict({"input_ids": [[bos, bos, 7], [bos, 9]]}))
    with pytest.raises(TrainError, match="1 training sequence"):
        check_trainer_inputs(doubled, tokenizer)


def test_absolute_and_home_model_base_train_and_evaluate(family_ws, tmp_path, monkeypatch):
    """``model.base`` as an absolute folder and as ``~/…`` (users' own checkpoints) trains and evaluates."""
    import shutil

    from engine.runs.train import train
    from engine.runs.train_errors import TrainError

    ws, base = family_ws
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    absolute = tmp_path / "checkpoints" / "tiny-abs"
    home = tmp_path / "home" / "models" / "tiny-home"
    for folder in (absolute, home):
        shutil.copytree(ws.model_dir(base("qwen3")), folder)
    for ref in (str(absolute), "~/models/tiny-home"):
        config = _config("x", [f'model.base="{ref}"', "train.max_steps=1"])
        result = train(ws, config, overwrite=True)
        assert result.metadata["model_info"]["base_model_path"] in (str(absolute.resolve()), str(home.resolve()))
        metrics, rows = _evaluate(ws, result.model_name, limit=1, batch_size=1)
        assert metrics["summary"]["total_samples"] == 1 and rows[0]["prompt_tokens"] > 10
    with pytest.raises(TrainError, match="no-such-folder"):
        train(ws, _config("x", [f'model.base="{tmp_path / "no-such-folder"}"']), overwrite=True)
