"""engine.runs.loading: kind detection from the folder's files, loading full and adapter folders, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.runs.loading import (ModelLoadError, detect_kind, load_converting_read, load_for_inference,
                                 load_full_precision)
from engine.presets.naming import ptq_spec, qlora_spec


def _copy_base(ws, name: str) -> Path:
    target = ws.models_dir / name
    shutil.copytree(ws.model_dir("tiny-qwen3"), target)
    return target


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def _make_adapter(ws, name: str, *, base: Path | None = None, metadata: dict | None = None) -> Path:
    """A real LoRA adapter on the tiny model, with non-zero B so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = base or ws.model_dir("tiny-qwen3")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    out = ws.models_dir / name
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    _write_json(out / "adapter_config.json", config)
    if metadata is not None:
        _write_json(out / "training_metadata.json", metadata)
    return out


def _generates_in_batches(loaded) -> bool:
    """The evaluator's batched generation (shared prefix, left padding, stop criterion) runs on this model."""
    from engine.data.prompts import tokenize_prompts
    from engine.runs.generation import brace_token_mask, generate_all

    texts = [f"System: answer in a box.\nUser: is the {thing} red\nAssistant:" for thing in ("cup", "ball", "hat")]
    prompts = tokenize_prompts(loaded.tokenizer, texts)
    mask = brace_token_mask(loaded.tokenizer, loaded.model.config.vocab_size)
    generations, _ = generate_all(loaded.model, loaded.tokenizer, prompts, max_new_tokens=3, batch_size=3,
                                  brace_mask=mask)
    return len(generations) == 3 and all(1 <= g.tokens <= 3 for g in generations)


def _logits(model, tokenizer, text: str = "User: is the cup red\nAssistant:"):
    import torch

    encoded = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return model(**encoded).logits


# ------------------------------------------------------------------------------------ detection


def test_kind_comes_from_metadata_files_never_from_the_folder_name(demo_ws):
    assert detect_kind(demo_ws.model_dir("tiny-qwen3")).kind == "full"
    misleading = _copy_base(demo_ws, "tiny-boolq_SFT_LoRa16_GPTQ_w4_g64_headfp16")
    assert detect_kind(misleading).kind == "full"
    for method, kind in (("GPTQ", "gptq"), ("AWQ", "awq"), ("HQQ", "hqq"), ("INT8", "bnb"), ("NF4", "bnb")):
        folder = _copy_base(demo_ws, f"plain-{method}")
        _write_json(folder / "quantization_metadata.json", {**ptq_spec(method).metadata(), "source_model": "x"})
        found = detect_kind(folder)
        assert found.kind == kind and found.quantization["method"] == method
    config_quant = _copy_base(demo_ws, "from-config")
    config = json.loads((config_quant / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    _write_json(config_quant / "config.json", config)
    assert detect_kind(config_quant).kind == "bnb"
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    _write_json(config_quant / "config.json", config)
    assert detect_kind(config_quant).kind == "gptq"


def test_trust_remote_code_is_the_users_choice_never_the_folders(demo_ws):
    folder = _copy_base(demo_ws, "remote")
    _write_json(folder / "training_metadata.json",
                {"training_parameters": {"preset": {"model": {"trust_remote_code": True}}}})
    assert detect_kind(folder).trust_remote_code is False  # the folder's own metadata decides nothing
    assert detect_kind(folder, trust_remote_code=True).trust_remote_code is True
    config = json.loads((folder / "config.json").read_text())
    _write_json(folder / "config.json", {**config, "auto_map": {"AutoConfig": "x.Config"}})
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        detect_kind(folder)
    assert detect_kind(folder, trust_remote_code=True).remote_code.startswith("config.json has an auto_map")


def test_bad_folders_give_errors_naming_the_file(demo_ws, tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        detect_kind(tmp_path / "nowhere")
    empty = demo_ws.models_dir / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="neither config.json nor adapter_config.json"):
        detect_kind(empty)
    corrupt = _copy_base(demo_ws, "corrupt")
    (corrupt / "training_metadata.json").write_text("{ truncated")
    with pytest.raises(ModelLoadError, match=r"corrupt/training_metadata.json: cannot be read as JSON"):
        detect_kind(corrupt)
    odd = _copy_base(demo_ws, "odd-method")
    _write_json(odd / "quantization_metadata.json", {"method": "BRECQ"})
    with pytest.raises(ModelLoadError, match="quantization_metadata.json: method = 'BRECQ'"):
        detect_kind(odd)
    garbage = _copy_base(demo_ws, "garbage-weights")
    (garbage / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError, match="garbage-weights/model.safetensors: the header is not JSON"):
        load_for_inference(garbage, device="cpu")  # refused from the header, before transformers reads it


# ------------------------------------------------------------------------------------ loading


def test_full_model_loads_in_eval_mode_with_a_left_padding_tokenizer(demo_ws):
    loaded = load_for_inference(demo_ws.model_dir("tiny-qwen3"), device="cpu")
    assert loaded.kind == "full" and not loaded.model.training
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert loaded.info["device"] == "cpu" and loaded.info["trust_remote_code"] is False


def test_adapter_folder_loads_base_plus_adapter_and_merges_for_ptq(demo_ws):
    import torch
    from peft import PeftModel

    adapter = _make_adapter(demo_ws, "tiny-lora")
    loaded = load_for_inference(adapter, device="cpu")
    assert loaded.kind == "adapter" and isinstance(loaded.model, PeftModel)
    assert loaded.info["base_model_path"] == str(demo_ws.model_dir("tiny-qwen3"))
    merged, tokenizer = load_full_precision(adapter)
    assert not isinstance(merged, PeftModel)
    base = load_for_inference(demo_ws.model_dir("tiny-qwen3"), device="cpu")
    with_adapter = _logits(loaded.model, loaded.tokenizer)
    assert torch.allclose(with_adapter, _logits(merged, tokenizer), atol=1e-4)
    assert not torch.allclose(with_adapter, _logits(base.model, base.tokenizer), atol=1e-3)
    assert _generates_in_batches(loaded)


def test_adapter_whose_base_is_gone_names_the_missing_base(demo_ws):
    base_copy = _copy_base(demo_ws, "moved-base")
    adapter = _make_adapter(demo_ws, "orphan-lora", base=base_copy)
    shutil.rmtree(base_copy)
    with pytest.raises(ModelLoadError, match="base model .*moved-base is not a folder"):
        load_for_inference(adapter, device="cpu")


def test_base_path_falls_back_to_training_metadata(demo_ws):
    adapter = _make_adapter(demo_ws, "meta-lora", metadata={
        "model_info": {"base_model_path": str(demo_ws.model_dir("tiny-qwen3"))}})
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    _write_json(adapter / "adapter_config.json", config)
    assert detect_kind(adapter).base_model_path == str(demo_ws.model_dir("tiny-qwen3"))


def test_qlora_adapter_loads_its_base_in_4bit_nf4_as_it_was_trained(demo_ws):
    adapter = _make_adapter(demo_ws, "tiny-qlora", metadata={
        "model_info": {"quantization_tag": qlora_spec().tag, "model_type": "adapter"},
        "quantization": qlora_spec().metadata()})
    found = detect_kind(adapter)
    assert found.kind == "adapter" and found.qlora
    loaded = load_for_inference(adapter, device="cpu")
    four_bit = [m for m in loaded.model.modules() if type(m).__name__ == "Linear4bit"]
    assert four_bit, "the base should be quantized with bitsandbytes 4-bit"
    assert loaded.info["qlora_base_4bit"] is True
    assert _logits(loaded.model, loaded.tokenizer).isfinite().all()
    assert _generates_in_batches(loaded)


def test_quantized_folders_cannot_be_loaded_in_full_precision(demo_ws):
    folder = _copy_base(demo_ws, "q")
    _write_json(folder / "quantization_metadata.json", ptq_spec("HQQ").metadata())
    with pytest.raises(ModelLoadError, match="already quantized"):
        load_full_precision(folder)


def test_cpu_float32_load_read_tensor_by_tensor_equals_transformers_own(demo_ws):
    """The CPU loader reads safetensors with pread (no memory map holding the stored copy): a bf16 model in
    three shards with its own generation settings loads to the same float32 weights, logits and generation
    config as ``from_pretrained(dtype=float32)``."""
    import torch
    from transformers import AutoModelForCausalLM

    source = AutoModelForCausalLM.from_pretrained(demo_ws.model_dir("tiny-qwen3"), dtype=torch.bfloat16)
    source.generation_config.eos_token_id = [1, 2]
    folder = demo_ws.models_dir / "sharded-bf16"
    source.save_pretrained(folder, max_shard_size="200KB")
    shutil.copy(demo_ws.model_dir("tiny-qwen3") / "tokenizer.json", folder)
    shutil.copy(demo_ws.model_dir("tiny-qwen3") / "tokenizer_config.json", folder)
    assert len(list(folder.glob("model-*.safetensors"))) >= 3
    assert load_converting_read(folder, device="cpu", dtype=torch.float32) is not None  # not the mmap fallback

    loaded = load_for_inference(folder, device="cpu").model
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert loaded.dtype == torch.float32 and loaded.name_or_path == str(folder)
    assert loaded.generation_config.eos_token_id == [1, 2] == reference.generation_config.eos_token_id
    ids = torch.tensor([[5, 9, 14, 3]])
    with torch.inference_mode():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)
    for (name, mine), (_, theirs) in zip(sorted(loaded.state_dict().items()), sorted(reference.state_dict().items())):
        assert torch.equal(mine, theirs), name
