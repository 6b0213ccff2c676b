"""Each PEFT method and QLoRA on the tiny model for a few steps: the loss falls, the folder loads back,
and the merged output gives the same logits as the adapter-only output (same seed, same data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STEPS = 8
COMMON = [f"train.max_steps={STEPS}", "train.logging_steps=1", "train.per_device_train_batch_size=8",
          "train.gradient_checkpointing=false", "train.max_length=128", "train.warmup_ratio=0.0",
          "data.trunc_train=128", "peft.r=8", "peft.alpha=16", "peft.dropout=0.0",
          'peft.target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]']
METHODS = {
    "LoRa": ['peft.method="LoRa"', "train.learning_rate=5e-3"],
    "DoRa": ['peft.method="DoRa"', "train.learning_rate=5e-3"],
    "VeRa": ['peft.method="VeRa"', "peft.r=64", "train.learning_rate=5e-2"],
    "QLoRA": ['peft.method="LoRa"', 'quant.method="QLORA"', "train.learning_rate=5e-3"],
}


def _run(ws, name: str, extra: list[str]):
    from engine.presets.config import load_preset
    from engine.events import read_events
    from engine.runs.train import train

    config = load_preset(ws.experiments_dir / "boolq-full.toml", [*COMMON, *extra])
    events_file = ws.state_dir / f"{name}.jsonl"
    result = train(ws, config, events_path=events_file)
    losses = [e["loss"] for e in read_events(events_file) if e["kind"] == "train_step"]
    return result, losses


@pytest.fixture(scope="module")
def peft_runs(demo_template, tmp_path_factory):
    """Per method: the adapter-only run and the merged run (identical otherwise), in one workspace."""
    import shutil

    import torch

    from engine.workspace import Workspace

    root = tmp_path_factory.mktemp("peft") / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    ws = Workspace(root)
    runs: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and they thrash on a busy machine
    try:
        _train_all(ws, runs)
    finally:
        torch.set_num_threads(threads)
    return ws, runs


def _train_all(ws, runs) -> None:
    for method, extra in METHODS.items():
        adapter = _run(ws, f"{method}-adapter", extra)
        renamed = ws.models_dir / f"{adapter[0].model_name}-adapter-only"
        adapter[0].output_dir.rename(renamed)
        merged = _run(ws, f"{method}-merged", [*extra, "quant.merge_after_train=true"])
        runs[method] = {"adapter": (renamed, adapter[1], adapter[0]), "merged": (merged[0].output_dir, merged[1],
                                                                                 merged[0])}
    full = _run(ws, "full", ["train.learning_rate=2e-3"])
    runs["NoPeft"] = {"full": (full[0].output_dir, full[1], full[0])}


def _prompt_batch(ws, tokenizer):
    from engine.data.tasks import get_task, load_items
    from engine.data.prompts import render_prompt

    task = get_task("boolq", ws.datasets_dir)
    tokenizer.padding_side = "left"
    texts = [render_prompt(tokenizer, task, item) for item in load_items(ws.datasets_dir, task, "test", 4)]
    return tokenizer(texts, return_tensors="pt", padding=True)


def _logits(model, batch):
    import torch

    with torch.no_grad():
        return model(**batch).logits.float()


def _load_full(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _load_adapter(folder: Path, *, four_bit: bool = False):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    kwargs = {"dtype": torch.float32}
    if four_bit:
        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                             bnb_4bit_use_double_quant=True,
                                                             bnb_4bit_compute_dtype=torch.float32),
                      device_map={"": "cpu"})
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, **kwargs), folder).eval()


def _falls(losses: list[float]) -> bool:
    return len(losses) == STEPS and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_falls_and_merged_matches_adapter(peft_runs, method):
    import torch
    from transformers import AutoTokenizer

    ws, runs = peft_runs
    adapter_dir, adapter_losses, adapter_result = runs[method]["adapter"]
    merged_dir, merged_losses, merged_result = runs[method]["merged"]
    assert _falls(adapter_losses), adapter_losses
    assert adapter_losses == pytest.approx(merged_losses, rel=1e-5), "same seed and data: the same run"
    assert adapter_result.model_type == "adapter" and merged_result.model_type == "merged"
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "model.safetensors").exists()
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    base_dir = ws.models_dir / "tiny-qwen3"
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(base_dir.resolve())

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    batch = _prompt_batch(ws, tokenizer)
    merged = _logits(_load_full(merged_dir), batch)
    adapter = _logits(_load_adapter(adapter_dir), batch)
    base = _logits(_load_full(base_dir), batch)
    assert (adapter - merged).abs().max().item() < 1e-4
    assert (adapter - base).abs().max().item() > 1e-2, "training must have changed the model"
    if method == "QLoRA":
        # Trained on a 4-bit base: base + adapter in 4-bit (as trained) differs from the merged
        # full-precision weights by the NF4 rounding of the base; it must still be nearer the merged
        # model than the untrained base, with logits pointing the same way on average.
        four_bit = _logits(_load_adapter(adapter_dir, four_bit=True), batch)
        mask = batch["attention_mask"].bool()
        to_merged = (four_bit - merged)[mask].abs().mean().item()
        to_base = (four_bit - base)[mask].abs().mean().item()
        assert to_merged < 0.5 * to_base, (to_merged, to_base)
        cosine = torch.nn.functional.cosine_similarity(four_bit[mask], merged[mask], dim=-1)
        assert cosine.mean().item() > 0.9, cosine.mean().item()


@pytest.mark.parametrize("method", list(METHODS))
def test_peft_metadata(peft_runs, method):
    ws, runs = peft_runs
    for variant, (folder, _, result) in runs[method].items():
        meta = json.loads((folder / "training_metadata.json").read_text())
        info = meta["model_info"]
        assert info["model_type"] == variant
        assert 0 < info["trainable_params"] < info["total_params"]
        assert 0 < info["percentage_trainable"] < 100
        assert info["base_model_path"] == str((ws.models_dir / "tiny-qwen3").resolve())
        peft_type = meta["peft_config"]["peft_type"]
        assert peft_type == ("VERA" if method == "VeRa" else "LORA")
        assert meta["peft_config"].get("use_dora", False) is (method == "DoRa")
        if method == "QLoRA":
            assert result.model_name.endswith("_LoRa8_QLORA_w4_headbf16")
            assert info["quantization_tag"] == "QLORA_w4_headbf16" and info["has_quantization"] is True
            assert meta["quantization"]["method"] == "QLORA"
            bnb = meta["quantization_config"]
            assert bnb["load_in_4bit"] is True and bnb["bnb_4bit_quant_type"] == "nf4"
            assert bnb["bnb_4bit_use_double_quant"] is True
        else:
            assert result.model_name.endswith(f"_{method}{64 if method == 'VeRa' else 8}_NoQuant")
            assert meta["quantization_config"] is None


def test_full_finetuning_few_steps(peft_runs):
    from transformers import AutoTokenizer

    ws, runs = peft_runs
    folder, losses, result = runs["NoPeft"]["full"]
    assert _falls(losses), losses
    assert result.model_type == "full" and result.model_name.endswith("_NoPeft_NoQuant")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = _prompt_batch(ws, tokenizer)
    trained = _logits(_load_full(folder), batch)
    base = _logits(_load_full(ws.models_dir / "tiny-qwen3"), batch)
    assert (trained - base).abs().max().item() > 1e-2


def test_outputs_load_through_the_shared_loader(peft_runs):
    """The rest of llmtui (engine.runs.loading) loads adapter and merged outputs to the same logits."""
    from engine.runs.loading import load_for_inference  # a broken module fails here, never skips

    ws, runs = peft_runs
    adapter_dir, _, _ = runs["LoRa"]["adapter"]
    merged_dir, _, _ = runs["LoRa"]["merged"]
    adapter = load_for_inference(adapter_dir, device="cpu")
    merged = load_for_inference(merged_dir, device="cpu")
    assert adapter.kind == "adapter" and merged.kind == "full"
    batch = _prompt_batch(ws, adapter.tokenizer)
    assert (_logits(adapter.model, batch) - _logits(merged.model, batch)).abs().max().item() < 1e-4


@pytest.mark.parametrize("extra", [['peft.method="NoPeft"'], ['peft.method="LoRa"'], ['peft.method="DoRa"'],
                                   ['peft.method="LoRa"', 'quant.method="QLORA"']],
                         ids=["NoPeft", "LoRa", "DoRa", "QLoRA"])
def test_gradient_checkpointing(demo_ws, extra):
    """The presets' default (train.gradient_checkpointing = true) trains every method."""
    result, losses = _run(demo_ws, "gc", ["train.gradient_checkpointing=true", "train.max_steps=4",
                                   "train.learning_rate=5e-3", *extra])
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert result.metadata["training_parameters"]["trl_args"]["activation_checkpointing"] is True
    assert (result.output_dir / "training_metadata.json").is_file()
