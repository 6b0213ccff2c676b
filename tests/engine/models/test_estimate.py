"""The memory estimator's formulas against values computed by hand for Qwen3-8B and Llama-3.1-8B (their
published config.json from ../shared/real-configs), and ``llmtui plan``'s estimates of a preset on
``Qwen/Qwen3-8B`` whose config.json sits in a Hugging Face cache layout in a temp folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from engine.models.estimate import (CPU_RUNTIME_BYTES, GPU_RUNTIME_BYTES, RUNTIME_SLACK, SLACK,
                                     TOKENIZER_BYTES_PER_ENTRY, VLLM_CPU_KV_CACHE_BYTES, VLLM_CPU_RUNTIME_BYTES,
                                     WEIGHT_SLACK, EstimateError, ModelShape, eval_estimate, inference_estimate,
                                     merge_estimate, quantize_estimate, train_estimate, vllm_estimate,
                                     vllm_kv_cache_bytes, weight_bytes)

from conftest import REAL_CONFIGS

pytestmark = pytest.mark.skipif(not REAL_CONFIGS.is_dir(), reason="../shared/real-configs is not here")


def shape(name: str) -> ModelShape:
    return ModelShape.from_file(REAL_CONFIGS / f"{name}.json")


def test_parameter_counts_equal_the_publishers():
    assert shape("Qwen3-8B").params == 8_190_735_360
    assert shape("Llama-3.1-8B").params == 8_030_261_248
    assert shape("Qwen3-0.6B").params == 596_049_920
    assert shape("Llama-3.2-1B").params == 1_235_814_400


def test_qwen3_8b_lora_on_a_gpu_by_hand():
    s = shape("Qwen3-8B")
    # LoRA r 256 on q, k, v, o: 256 × ((4096+4096) + (4096+1024) × 2 + (4096+4096)) a layer, 36 layers
    lora = 36 * 256 * (8192 + 5120 + 5120 + 8192)
    assert lora == 245_366_784 == s.lora_params(256, "attention")
    e = train_estimate(s, device="gpu", r=256, batch=1, seq=1024, checkpointing=True)
    weights = 8_190_735_360 * 2
    # checkpointed: each layer's input (h × 2 bytes) + one layer's full set (6h + 2kv + 4i) × 2, per token;
    # logits of one 128-token chunk of the loss (train.loss_chunk_tokens' default) × 151,936 × (2 + 12): bf16
    # logits, their float32 copy, the log-softmax and its gradient
    kept = 1024 * (36 * 4096 * 2 + (6 * 4096 + 2 * 1024 + 4 * 12288) * 2)
    activations = kept + 128 * 151_936 * 14
    assert e.parts == {"runtime": GPU_RUNTIME_BYTES, "weights": weights, "adapter": lora * 4, "gradients": lora * 4,
                       "optimizer": lora * 8, "activations": activations}
    assert e.floor_bytes == GPU_RUNTIME_BYTES + weights + lora * 16 + activations
    assert e.bytes == pytest.approx(GPU_RUNTIME_BYTES * RUNTIME_SLACK + (weights + lora * 16) * WEIGHT_SLACK
                                    + activations * SLACK)
    assert round(e.floor_bytes / 1e9, 2) == 21.94
    # TRL's own head (loss_chunk_tokens = 0): the logits of all 1,024 positions at once
    whole = train_estimate(s, device="gpu", r=256, batch=1, seq=1024, checkpointing=True, loss_chunk=0)
    assert whole.parts["activations"] == kept + 1024 * 151_936 * 14


def test_llama_31_8b_qlora_and_full_by_hand():
    s = shape("Llama-3.1-8B")
    linear = 32 * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 4096 * 14336 * 3)
    embeddings = 128_256 * 4096 * 2  # untied: input embedding and head
    norms = 32 * 2 * 4096 + 4096
    assert s.params == linear + embeddings + norms
    nf4 = linear * (0.5 + 4 / 64) + (embeddings + norms) * 2
    assert weight_bytes(s, 4, 64) == nf4
    q = train_estimate(s, device="gpu", quant="4bit", r=16, targets="all-linear", batch=1, seq=1024)
    lora = 32 * 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)
    assert q.parts["weights"] == nf4 and q.parts["optimizer"] == lora * 8
    # full fine-tuning on a GPU in bf16: weights 2 + gradients 2 + AdamW 8 + fp32 master 4 bytes a parameter
    f = train_estimate(s, device="gpu", method="full", seq=1024)
    assert f.parts["weights"] + f.parts["gradients"] + f.parts["optimizer"] == s.params * 16
    # on the CPU llmtui trains in float32: 4 + 4 + 8 (no master copy)
    c = train_estimate(s, device="cpu", method="full", seq=1024)
    assert c.parts["weights"] + c.parts["gradients"] + c.parts["optimizer"] == s.params * 16
    assert c.parts["runtime"] == CPU_RUNTIME_BYTES + 128_256 * TOKENIZER_BYTES_PER_ENTRY  # the tokenizer in RAM
    # QLoRA on the CPU: the bf16 file is read tensor by tensor, not kept mapped beside the 4-bit model
    qc = train_estimate(s, device="cpu", quant="4bit", r=16, targets="all-linear", batch=1, seq=1024)
    assert set(qc.parts) == set(q.parts) == {"runtime", "weights", "adapter", "gradients", "optimizer", "activations"}
    assert qc.parts["adapter"] + qc.parts["gradients"] + qc.parts["optimizer"] == lora * 16
    # one micro-batch a step: the gradients take the place the backward pass frees, only the activations' excess
    # adds up (accumulating, both); full fine-tuning's gradients (4 bytes a parameter) outweigh its activations
    one = train_estimate(s, device="cpu", quant="4bit", r=16, targets="all-linear", batch=1, seq=1024, accumulation=1)
    assert one.parts["activations"] == qc.parts["activations"] - lora * 4
    assert one.floor_bytes == qc.floor_bytes - lora * 4
    assert train_estimate(s, device="cpu", method="full", seq=1024, accumulation=1).parts["activations"] == 0


def test_inference_and_quantize_by_hand():
    s = shape("Llama-3.1-8B")
    e = inference_estimate(s, device="gpu", bits=16, batch=8, context=2048)
    assert e.parts["kv_cache"] == 2 * 32 * (8 * 128) * (8 * 2048) * 2  # K and V, 32 layers, 8 KV heads × 128
    assert e.parts["weights"] == s.params * 2
    # the prefill: one forward pass takes 4,096 prompt positions (2 of the 8 rows of 2,048) through a layer, the
    # MLP's four 14,336-wide tensors and two 4,096-wide ones, bf16
    assert e.parts["prefill"] == 2 * 2048 * (4 * 14336 + 2 * 4096) * 2
    # 32 rows of a 1,024-position prompt: 4 rows a pass, float32 on the CPU; one row longer than a pass goes alone
    prompt = inference_estimate(s, device="cpu", batch=32, context=1040, prompt=1024)
    assert prompt.parts["prefill"] == 4 * 1024 * (4 * 14336 + 2 * 4096) * 4
    assert inference_estimate(s, device="cpu", batch=4, context=9000).parts["prefill"] == \
        9000 * (4 * 14336 + 2 * 4096) * 4
    assert prompt.parts["kv_cache"] == 2 * 32 * (8 * 128) * (32 * 1040) * 4
    int8 = inference_estimate(s, device="gpu", bits=8, batch=1, context=2048)
    rows = 32 * (4096 + 1024 * 2 + 4096 + 14336 * 2 + 4096)
    assert int8.parts["weights"] == 32 * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 4096 * 14336 * 3) + rows * 4 + \
        (128_256 * 4096 * 2 + 32 * 2 * 4096 + 4096) * 2
    # on the CPU bitsandbytes keeps the embeddings 16-bit too; a 4-bit reload adds one 16-bit embedding copy
    int8_cpu = inference_estimate(s, device="cpu", bits=8, context=2048, method="int8")
    assert int8_cpu.parts["weights"] == int8.parts["weights"] and "loading" not in int8_cpu.parts
    nf4_cpu = inference_estimate(s, device="cpu", bits=4, context=2048, method="nf4")
    assert nf4_cpu.parts["loading"] == 128_256 * 4096 * 2
    hqq_cpu = inference_estimate(s, device="cpu", bits=4, context=2048, method="hqq")  # float32 compute on the CPU
    assert hqq_cpu.parts["weights"] - nf4_cpu.parts["weights"] == (128_256 * 4096 * 2 + 32 * 2 * 4096 + 4096) * 2
    gptq_cpu = inference_estimate(s, device="cpu", bits=4, context=2048, method="gptq")  # float32 embedding twice
    assert gptq_cpu.parts["loading"] == 128_256 * 4096 * 4
    # NF4 on the CPU: a measured, untraced transient of a quarter of the stored file; INT8 not
    assert quantize_estimate(s, device="cpu", method="nf4").parts["conversion"] == s.params * 2 / 4
    assert "conversion" not in quantize_estimate(s, device="cpu", method="int8", bits=8).parts
    # HQQ/GPTQ/AWQ on the CPU replace each module in place: beside the source, one layer's quantized modules
    linear_4bit = 32 * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 4096 * 14336 * 3) * (0.5 + 4 / 64)
    assert quantize_estimate(s, device="cpu", method="hqq").parts["quantized"] == pytest.approx(linear_4bit / 32)
    assert merge_estimate(s, device="cpu", r=256, targets="attention").parts["adapter"] == \
        32 * 256 * (4096 + 4096 + 4096 + 1024 + 4096 + 1024 + 4096 + 4096) * 4  # q k v o, float32, once
    g = quantize_estimate(s, device="gpu", method="gptq", samples=128, seq=512)
    assert g.parts["hessian"] == 4 * (4096 ** 2 * 6 + 14336 ** 2)  # q k v gate up see h, o sees 4096, down sees i
    assert g.parts["calibration"] == 128 * 512 * 4096 * 4 + 512 * 14336 * 16


def test_vllm_on_the_cpu_by_hand():
    s = shape("Qwen3-0.6B")
    per_token = 2 * 28 * (8 * 128) * 4  # K and V, 28 layers, 8 KV heads × 128, float32
    # two prompts of 200 and 300 positions with their ceilings: whole 128-position blocks, 256 + 384
    assert vllm_kv_cache_bytes(s, [200, 300], 4) == (256 + 384) * per_token
    # 32 SQuAD-long rows would need 33 × 1,152 positions: capped at 2 GiB, vLLM then runs fewer at once
    assert vllm_kv_cache_bytes(s, [1100] * 32, 4) == VLLM_CPU_KV_CACHE_BYTES == 2 * 2**30
    # never less than the longest sequence and one more block (vLLM refuses a smaller cache)
    assert vllm_kv_cache_bytes(s, [9000], 4) == (9088 + 128) * per_token
    e = vllm_estimate(s, device="cpu", sequences=[200, 300])
    assert e.parts == {"runtime": CPU_RUNTIME_BYTES + 151_936 * TOKENIZER_BYTES_PER_ENTRY,
                       "vllm_runtime": VLLM_CPU_RUNTIME_BYTES, "weights": 596_049_920 * 4,
                       "kv_reserved": 640 * per_token, "mapped_file": 596_049_920 * 2}
    assert e.floor_bytes == sum(e.parts.values()) - 596_049_920 * 2  # the mapped file is the loader's, not the stage's
    assert e.bytes == pytest.approx((e.parts["runtime"] + VLLM_CPU_RUNTIME_BYTES) * RUNTIME_SLACK
                                    + (596_049_920 * 4 + 640 * per_token + 596_049_920 * 2) * WEIGHT_SLACK)


def test_an_evaluation_counts_vllm_where_it_may_run():
    s = shape("Qwen3-0.6B")
    builtin = eval_estimate(s, device="cpu", batch=1)
    assert builtin.step == "eval" and eval_estimate(s, device="cpu", batch=1, vllm=True, backend="hf") == builtin
    assert eval_estimate(s, device="cpu", batch=1, backend="vllm").step == "eval vllm"
    # auto with vLLM configured: either may run, the larger counts (vLLM's own process and reserved cache here)
    assert eval_estimate(s, device="cpu", batch=1, vllm=True).bytes == max(
        builtin.bytes, vllm_estimate(s, device="cpu", sequences=[2048]).bytes) > builtin.bytes
    # a 4-bit model never goes to vLLM
    assert eval_estimate(s, device="cpu", bits=4, backend="vllm").step == "eval"


def test_bad_config_is_named(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(EstimateError, match=r"config.json: no num_attention_heads field"):
        ModelShape.from_file(bad)
    bad.write_text("{")
    with pytest.raises(EstimateError, match="cannot be read as JSON"):
        ModelShape.from_file(bad)


def test_llmtui_plan_prints_estimates_for_qwen3_8b(tmp_path):
    """A preset on the hub id Qwen/Qwen3-8B; its config.json in a Hugging Face cache layout (no download)."""
    snapshot = tmp_path / "hf" / "models--Qwen--Qwen3-8B" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    shutil.copy(REAL_CONFIGS / "Qwen3-8B.json", snapshot / "config.json")
    ws = tmp_path / "ws"
    for sub in ("Models", "Datasets", "experiments", "Testing/metrics"):
        (ws / sub).mkdir(parents=True)
    preset = ws / "experiments" / "q8.toml"
    preset.write_text('[model]\nbase = "Qwen/Qwen3-8B"\n[data]\ndataset = "boolq"\n[quant]\nmethod = "QLORA"\n'
                      '[peft]\nr = 16\n[[ptq]]\nmethod = "HQQ"\n[eval]\nafter = true\n')
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hf"), COLUMNS="160")
    cmd = [sys.executable, "-m", "tui.cli", "-w", str(ws), "plan", str(preset)]
    data = json.loads(subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, check=True).stdout)
    est = data["estimates"]
    assert est["available"] and est["parameters"] == 8_190_735_360
    kinds = [row["kind"] for row in est["steps"]]
    assert kinds == ["train", "quantize", "eval", "eval"]
    train = est["steps"][0]
    s = shape("Qwen3-8B")
    expected = train_estimate(s, device="gpu", quant="4bit", r=16, targets=["attention"], seq=1024)
    assert train["memory_gb"]["gpu"] == expected.gb
    assert set(train["memory_gb"]) == {"gpu", "cpu"}
    # the 4-bit evaluation needs less than the 16-bit one on either device
    assert est["steps"][3]["memory_gb"]["gpu"] < est["steps"][2]["memory_gb"]["gpu"]
    text = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    assert "memory estimate (8.19 B parameters" in text
    assert f"{expected.gb:.1f}" in text


def test_plan_time_from_an_earlier_runs_recorded_speed(tmp_path):
    from engine.models.estimate import plan_estimates
    from engine.presets.config import load_preset_text
    from engine.presets.plan import make_plan
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws").init()
    base = ws.models_dir / "Llama-3.1-8B"
    base.mkdir()
    shutil.copy(REAL_CONFIGS / "Llama-3.1-8B.json", base / "config.json")
    earlier = ws.models_dir / "earlier-run"
    earlier.mkdir()
    earlier.joinpath("training_metadata.json").write_text(json.dumps({
        "model_info": {"base_model": "Models/Llama-3.1-8B"},
        "training_parameters": {"preset": {"peft": {"method": "LoRa"}}},
        "training_stats": {"tokens_per_s": 2048.0}, "hardware_info": {"device": "cuda (Fake H100)"}}))
    config = load_preset_text('[model]\nbase = "Models/Llama-3.1-8B"\n[data]\ndataset = "boolq"\n'
                              '[train]\nmax_steps = 10\n')
    estimates = plan_estimates(config, ws, make_plan(config, ws).steps)
    train = estimates["steps"][0]
    assert train["time_s"] == {"gpu": 10 * 1 * 8 * 1024 / 2048.0}  # steps × batch × accumulation × max_length
    assert train["memory_gb"]["gpu"] == train_estimate(shape("Llama-3.1-8B"), device="gpu", r=256,
                                                       targets=["attention"], seq=1024).gb
