"""PTQ: every method really quantizes the tiny demo model on the CPU, reloads through the evaluation
loader and generates; bad input fails with one clear message and leaves no folder behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runs.calibration import calibration_from_dataset, calibration_from_file, load_calibration
from engine.events import EventWriter, read_events
from engine.runs.quantize import QUANTIZATION_METADATA, QuantizeError, quantization_spec, quantize_model

REPO = Path(__file__).resolve().parents[3]
BASE = "tiny-qwen3"
PROMPTS = ["System: Read the passage and answer the question with True or False inside \\boxed{}.\n"
           "User: is the cup red\n\nContext:\nThe cup is red.\nAssistant:",
           "User: What is 2 + 3?\nAssistant:"]
METADATA_KEYS = {"method", "weights_bits", "activations_bits", "kv_bits", "group_size", "symmetric", "lm_head_dtype",
                 "backend", "quant_tag", "has_quantization", "backend_version", "calibration", "source_model",
                 "duration_s", "size_before_bytes", "size_after_bytes"}


def models_listing(ws) -> set[str]:
    """Every entry of Models/, hidden ``.tmp-`` folders included."""
    return set(os.listdir(ws.models_dir))


def make_trained_source(ws, name: str = "tiny-boolq_SFT_NoPeft_NoQuant") -> Path:
    """A copy of the tiny model with a training_metadata.json naming boolq, as a training output has."""
    folder = ws.models_dir / name
    shutil.copytree(ws.models_dir / BASE, folder)
    metadata = {"model_info": {"model_name": name, "base_model": f"Models/{BASE}", "model_type": "full",
                               "quantization_tag": "NoQuant", "has_quantization": False},
                "training_parameters": {"preset": {"data": {"dataset": "boolq"}, "model": {"trust_remote_code": False}}}}
    (folder / "training_metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    (folder / "preset.toml").write_text('[data]\ndataset = "boolq"\n', encoding="utf-8")
    return folder


def logits(model, tokenizer):
    import torch

    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.float(), batch["attention_mask"].bool()


def relative_error(model_dir: Path, loaded) -> float:
    """‖quantized − full precision‖ / ‖full precision‖ over the non-padding positions of PROMPTS."""
    import torch
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ref, mask = logits(reference, loaded.tokenizer)
    got, _ = logits(loaded.model, loaded.tokenizer)
    return float((got[mask] - ref[mask]).norm() / ref[mask].norm())


# ------------------------------------------------------------------------------ every method, for real


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gptq", "awq", "hqq", "int8", "nf4"])
def test_every_method_quantizes_reloads_and_generates(demo_ws, method, tmp_path):
    from engine.runs.loading import load_for_inference
    from engine.models.scan import scan_models

    source = make_trained_source(demo_ws)
    events_file = tmp_path / "events.jsonl"
    with EventWriter(events_file) as events:
        result = quantize_model(demo_ws, source.name, method, samples=16, events=events)

    spec = quantization_spec(method)
    out = Path(result["output_dir"])
    assert out == demo_ws.models_dir / f"tiny-boolq_SFT_NoPeft_{spec.tag}"
    assert sorted(p.name for p in demo_ws.models_dir.iterdir() if p.name.startswith(".")) == []

    meta = json.loads((out / QUANTIZATION_METADATA).read_text())
    assert METADATA_KEYS <= set(meta)
    assert meta["method"] == method.upper() and meta["quant_tag"] == spec.tag and meta["has_quantization"] is True
    assert meta["weights_bits"] == (8 if method == "int8" else 4)
    assert meta["group_size"] == (64 if method in ("gptq", "awq", "hqq") else None)
    assert meta["backend"] == {"gptq": "gptqmodel", "awq": "gptqmodel", "hqq": "hqq"}.get(method, "bitsandbytes")
    assert meta["backend_version"] and meta["source_model"] == source.name
    assert meta["size_before_bytes"] > meta["size_after_bytes"] > 0 and meta["duration_s"] > 0
    if method in ("gptq", "awq"):
        # Default calibration: the source's training dataset, drawn with the fixed seed.
        assert meta["calibration"]["source"] == "boolq" and meta["calibration"]["samples"] == 16
        from transformers import AutoTokenizer

        expected = calibration_from_dataset(demo_ws.datasets_dir, "boolq", AutoTokenizer.from_pretrained(source), 16)
        assert meta["calibration"]["sha256"] == expected.sha256
    else:
        assert meta["calibration"] is None
    assert (out / "training_metadata.json").read_bytes() == (source / "training_metadata.json").read_bytes()
    assert (out / "preset.toml").is_file() and (out / "chat_template.jinja").is_file()

    kinds = [e["kind"] for e in read_events(events_file)]
    assert kinds[0] == "start" and kinds[-2:] == ["saved", "done"] and "quantize_progress" in kinds

    record = next(r for r in scan_models(demo_ws) if r.name == out.name)
    assert record.status == "untested" and record.quant_tag == spec.tag

    loaded = load_for_inference(out, device="cpu")
    assert loaded.kind == ("bnb" if method in ("int8", "nf4") else method)
    assert type(loaded.model.model.layers[0].self_attn.q_proj).__name__ != "Linear"  # really quantized layers
    # the tiny model ties its head to its embeddings: reloading must not make the head a second copy of them
    model = loaded.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    error = relative_error(source, loaded)
    assert 0 < error < (0.1 if method == "int8" else 0.5), error
    batch = loaded.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    generated = loaded.model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == len(PROMPTS) and generated.shape[1] > batch["input_ids"].shape[1]


@pytest.mark.slow
def test_adapter_source_is_merged_before_quantizing(demo_ws):
    """An adapter folder is merged into its base first: the output follows the merged model, not the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.runs.loading import load_for_inference, load_full_precision

    base_dir = demo_ws.models_dir / BASE
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    adapter_dir = demo_ws.models_dir / "tiny-boolq_SFT_LoRa8_NoQuant"
    get_peft_model(base, lora).save_pretrained(str(adapter_dir))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(adapter_dir))
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_dir)

    result = quantize_model(demo_ws, str(adapter_dir), "hqq")
    out = Path(result["output_dir"])
    assert out.name == "tiny-boolq_SFT_LoRa8_HQQ_w4_g64_headfp16"
    assert json.loads((out / QUANTIZATION_METADATA).read_text())["source_kind"] == "adapter"
    assert not any((demo_ws.state_dir / "tmp").iterdir())  # the merged scratch copy is gone

    loaded = load_for_inference(out, device="cpu")
    merged, tokenizer = load_full_precision(adapter_dir, dtype=torch.float32)
    quantized, mask = logits(loaded.model, tokenizer)
    merged_logits, _ = logits(merged, tokenizer)
    base_logits, _ = logits(AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32), tokenizer)
    to_merged = (quantized[mask] - merged_logits[mask]).norm()
    to_base = (quantized[mask] - base_logits[mask]).norm()
    assert to_merged < to_base, (float(to_merged), float(to_base))


@pytest.mark.slow
def test_cli_prints_only_json_on_stdout_and_writes_events(demo_ws, tmp_path):
    source = make_trained_source(demo_ws)
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(f"User: is the box number {i} open\nAssistant: \\boxed{{True}}" for i in range(8)))
    events = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(demo_ws.root), "quantize", source.name,
                           "--method", "gptq", "--bits", "8", "--group-size", "32", "--calibration", str(calibration),
                           "--samples", "4", "--out", "my-gptq", "--events", str(events), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["model_name"] == "my-gptq" and result["quant_tag"] == "GPTQ_w8_g32_headfp16"
    lines = [line.strip() for line in calibration.read_text().splitlines()][:4]
    assert result["metadata"]["calibration"] == {"source": str(calibration), "samples": 4,
                                                 "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}
    assert [e["kind"] for e in read_events(events)][-1] == "done"


# ------------------------------------------------------------------------------------------ bad input


def quantize_fails(ws, *args, match: str, **kwargs) -> QuantizeError:
    before = models_listing(ws)
    with pytest.raises(QuantizeError, match=match) as caught:
        quantize_model(ws, *args, **kwargs)
    assert models_listing(ws) == before, "a failed run left something in Models/"
    return caught.value


def test_missing_source(demo_ws):
    quantize_fails(demo_ws, "no-such-model", "gptq", match="'no-such-model' not found")
    quantize_fails(demo_ws, "../../no-such-dir-xyz", "hqq", match="not found")


def test_already_quantized_sources_are_refused(demo_ws):
    with_metadata = make_trained_source(demo_ws, "done_HQQ_w4_g64_headfp16")
    (with_metadata / QUANTIZATION_METADATA).write_text(json.dumps({"method": "HQQ", "weights_bits": 4}))
    quantize_fails(demo_ws, with_metadata.name, "gptq", match=r"already quantized \(hqq, per its quantization_metadata")

    with_config = make_trained_source(demo_ws, "someone-elses-gptq")
    config = json.loads((with_config / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (with_config / "config.json").write_text(json.dumps(config))
    quantize_fails(demo_ws, with_config.name, "nf4", match="already quantized.*config.json's quantization_config")


@pytest.mark.parametrize("method, bits, group_size, message", [
    ("gptq", 5, 64, "GPTQ supports bits 2, 3, 4, 8, not 5"),
    ("awq", 3, 64, "AWQ supports bits 4, not 3"),
    ("hqq", 6, 64, "HQQ supports bits 1, 2, 3, 4, 8, not 6"),
    ("int8", 4, None, "INT8 supports bits 8, not 4"),
    ("nf4", 8, None, "NF4 supports bits 4, not 8"),
    ("gptq", 4, 48, "GPTQ group size 48 is not supported"),
    ("hqq", 4, -1, "HQQ group size -1 is not supported"),
    ("awq", 4, 256, r"does not divide the model's hidden_size = 128 .*config.json\); use 16, 32, 64, 128"),
    ("fp8", 8, None, "unknown method 'fp8'"),
])
def test_unsupported_bits_and_group_sizes(demo_ws, method, bits, group_size, message):
    source = make_trained_source(demo_ws)
    quantize_fails(demo_ws, source.name, method, bits, group_size, match=message)


def test_bad_calibration(demo_ws, tmp_path):
    source = make_trained_source(demo_ws)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    quantize_fails(demo_ws, source.name, "gptq", calibration=str(empty), match=f"{empty}: the calibration file has no text")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    quantize_fails(demo_ws, source.name, "awq", calibration=str(binary), match="not UTF-8 text")
    quantize_fails(demo_ws, source.name, "gptq", calibration="nosuchset", match="'nosuchset' is neither a file nor a dataset")
    quantize_fails(demo_ws, BASE, "gptq", match="no training dataset .* pass --calibration")
    quantize_fails(demo_ws, source.name, "gptq", samples=0, match="--samples must be at least 1")
    quantize_fails(demo_ws, source.name, "hqq", calibration="boolq", match="HQQ is data-free")


def test_existing_output_is_kept_without_overwrite(demo_ws):
    source = make_trained_source(demo_ws)
    taken = demo_ws.models_dir / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    quantize_fails(demo_ws, source.name, "hqq", out_name="taken", match="already exists .*--overwrite")
    assert (taken / "keep.txt").read_text() == "mine"
    quantize_fails(demo_ws, source.name, "hqq", out_name=source.name, overwrite=True, match="replace its own source")


def test_missing_backend_gives_install_hint_and_leaves_nothing(demo_ws, monkeypatch, tmp_path):
    # hqq is installed here; a None entry in sys.modules makes ``import hqq`` fail as if it were not.
    monkeypatch.setitem(sys.modules, "hqq", None)
    source = make_trained_source(demo_ws)
    events_file = tmp_path / "events.jsonl"
    with EventWriter(events_file) as events:
        error = quantize_fails(demo_ws, source.name, "hqq", events=events, match="HQQ needs the hqq package")
    assert "install it with: pip install hqq" in str(error)
    last = read_events(events_file)[-1]
    assert last["kind"] == "error" and last["message"] == str(error)


def test_cli_bad_input_is_one_clear_line(demo_ws, tmp_path):
    events = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(demo_ws.root), "quantize", "ghost",
                           "--method", "awq", "--events", str(events)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    looked = ", ".join(str(p) for p in (demo_ws.models_dir / "ghost", demo_ws.root / "ghost", REPO / "ghost"))
    assert proc.stderr.strip().splitlines() == [f"error: source model 'ghost' not found: no such model folder "
                                                f"(looked in {looked})"]
    assert read_events(events)[-1]["kind"] == "error"


# ---------------------------------------------------------------------------------------- calibration


def test_calibration_from_file_and_dataset(demo_ws, tmp_path):
    from transformers import AutoTokenizer

    from engine.data.tasks import get_task, load_items
    from engine.data.prompts import render_example

    text_file = tmp_path / "calib.txt"
    text_file.write_text("first sample\n\n  second sample  \nthird\n")
    calibration = calibration_from_file(text_file, samples=2)
    assert calibration.texts == ("first sample", "second sample")
    assert calibration.sha256 == hashlib.sha256(b"first sample\nsecond sample").hexdigest()

    tokenizer = AutoTokenizer.from_pretrained(demo_ws.models_dir / BASE)
    one = calibration_from_dataset(demo_ws.datasets_dir, "arc", tokenizer, 5)
    again = load_calibration(demo_ws, "arc", tokenizer=tokenizer, default_dataset=None, samples=5)
    assert one == again and len(one.texts) == 5 and one.metadata()["samples"] == 5
    task = get_task("arc")
    rendered = {render_example(tokenizer, task, item)["prompt"] + render_example(tokenizer, task, item)["completion"]
                for item in load_items(demo_ws.datasets_dir, task, "train")}
    assert set(one.texts) <= rendered
    assert one != calibration_from_dataset(demo_ws.datasets_dir, "arc", tokenizer, 5, seed=1)
    everything = calibration_from_dataset(demo_ws.datasets_dir, "arc", tokenizer, 10**6)
    assert len(everything.texts) == len(rendered)
    inside = demo_ws.root / "calibration" / "mine.txt"
    inside.parent.mkdir()
    shutil.copy(text_file, inside)
    relative = load_calibration(demo_ws, "calibration/mine.txt", tokenizer=tokenizer, default_dataset=None, samples=9)
    assert relative.texts == ("first sample", "second sample", "third") and relative.source == str(inside)
