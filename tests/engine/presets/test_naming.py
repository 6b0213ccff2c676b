"""Model names and quantization tags, identical to the legacy scripts'."""

import pytest

from engine.presets.config import load_preset_text
from engine.presets.naming import QuantizationSpec, model_name, ptq_output_name, ptq_spec, qlora_spec
from engine.workspace import UnsafeNameError, Workspace, safe_name

LEGACY_CASES = [
    ("Qwen/Qwen3-0.6B", "openmath", "LoRa", 256, "QLORA", "Qwen3-0.6B-openmath_SFT_LoRa256_QLORA_w4_headbf16"),
    ("Qwen/Qwen3-8B", "openmath", "VeRa", 512, "NoQuant", "Qwen3-8B-openmath_SFT_VeRa512_NoQuant"),
    ("Qwen/Qwen3-8B", "openmath", "DoRa", 256, "NoQuant", "Qwen3-8B-openmath_SFT_DoRa256_NoQuant"),
    ("Qwen/Qwen3-4B", "openmath", "NoPeft", 256, "NoQuant", "Qwen3-4B-openmath_SFT_NoPeft_NoQuant"),
    ("Qwen/Qwen3-4B", "none", "LoRa", 256, "NoQuant", "Qwen3-4B-base"),
]


@pytest.mark.parametrize("base,dataset,peft,r,quant,expected", LEGACY_CASES)
def test_legacy_names_through_presets(base, dataset, peft, r, quant, expected):
    text = (f'[model]\nbase = "{base}"\n[data]\ndataset = "{dataset}"\n'
            f'[peft]\nmethod = "{peft}"\nr = {r}\n[quant]\nmethod = "{quant}"\n')
    assert load_preset_text(text).output_name() == expected


def test_quant_tags():
    assert qlora_spec().tag == "QLORA_w4_headbf16"
    assert QuantizationSpec().tag == "NoQuant"
    assert ptq_spec("gptq", 4, 64).tag == "GPTQ_w4_g64_headfp16"
    assert ptq_spec("AWQ", 4, 128).tag == "AWQ_w4_g128_headfp16"
    assert ptq_spec("INT8").tag == "INT8_w8_headfp16"
    assert ptq_spec("NF4").tag == "NF4_w4_headfp16"
    assert QuantizationSpec(method="SMOOTH", weights_bits=8, activations_bits=8, kv_bits=8).tag == \
        "SMOOTH_w8_a8_kv8_headfp16"


def test_ptq_output_replaces_noquant():
    spec = ptq_spec("GPTQ", 4, 64)
    assert ptq_output_name("Qwen3-8B-openmath_SFT_DoRa256_NoQuant", spec) == \
        "Qwen3-8B-openmath_SFT_DoRa256_GPTQ_w4_g64_headfp16"
    assert ptq_output_name("Qwen3-4B-base", spec) == "Qwen3-4B-base_GPTQ_w4_g64_headfp16"


def test_spec_metadata_round_trip():
    spec = ptq_spec("HQQ", 3, 32)
    data = spec.metadata()
    assert data["quant_tag"] == "HQQ_w3_g32_headfp16" and data["has_quantization"] is True
    assert QuantizationSpec.from_metadata(data) == spec


@pytest.mark.parametrize("raw", ["../evil", "a/../../b", "/etc/passwd", "x\x00y", "../..x", "C:\\Windows\\x"])
def test_names_never_escape_models(tmp_path, raw):
    ws = Workspace(tmp_path)
    path = ws.model_dir(raw)
    assert path.parent == ws.models_dir
    assert ws.contains(path)
    assert "/" not in safe_name(raw) and "\x00" not in safe_name(raw)


@pytest.mark.parametrize("raw", ["", "..", "/", "...", "\x00"])
def test_unusable_names_are_refused(raw):
    with pytest.raises(UnsafeNameError):
        safe_name(raw)


def test_model_name_for_local_folder():
    quant = QuantizationSpec()
    assert model_name("Models/tiny-qwen3", "boolq", "SFT", "LoRa", 16, quant) == "tiny-qwen3-boolq_SFT_LoRa16_NoQuant"
    assert model_name("C:\\models\\Qwen3-4B\\", "arc", "SFT", "NoPeft", 1, quant) == "Qwen3-4B-arc_SFT_NoPeft_NoQuant"
