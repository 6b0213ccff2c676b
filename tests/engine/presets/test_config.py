"""Presets: defaults, lossless round trip, overrides, and one clear message per problem."""

import subprocess
import sys

import pytest

from engine.presets.config import ConfigError, ExperimentConfig, load_preset, load_preset_text, save_preset


def test_defaults_are_the_seeds():
    c = ExperimentConfig()
    assert (c.peft.r, c.peft.alpha, c.peft.dropout) == (256, 16, 0.1)
    assert c.peft.target_modules == ["attention"]  # the legacy scripts' q/k/v/o, as whatever attention projections a model has
    assert c.train.learning_rate == 1e-5
    assert (c.train.per_device_train_batch_size, c.train.gradient_accumulation_steps) == (1, 8)
    assert c.train.warmup_ratio == 0.06 and c.train.max_length == 1024
    assert c.model.trust_remote_code is False


def test_round_trip_is_lossless(tmp_path):
    text = """
[model]
base = "Qwen/Qwen3-0.6B"
[data]
dataset = "arc"
trunc_train = 100
[peft]
method = "DoRa"
r = 8
target_modules = ["q_proj"]
[quant]
method = "QLORA"
merge_after_train = true
[train]
learning_rate = 2e-4
max_steps = 10
[[ptq]]
method = "GPTQ"
bits = 4
[[ptq]]
method = "HQQ"
bits = 3
group_size = 32
[eval]
after = true
datasets = ["arc", "boolq"]
"""
    first = load_preset_text(text)
    path = save_preset(first, tmp_path / "p.toml")
    second = load_preset(path)
    assert second == first
    assert save_preset(second, tmp_path / "q.toml").read_text() == path.read_text()
    assert second.ptq[1].group_size == 32 and second.train.learning_rate == 2e-4


def test_overrides_apply_before_validation():
    c = load_preset_text('[train]\nmax_steps = 5\n', overrides=["train.max_steps=7", "peft.method=VeRa",
                                                                 "data.dataset=boolq"])
    assert c.train.max_steps == 7 and c.peft.method == "VeRa" and c.data.dataset == "boolq"
    with pytest.raises(ConfigError) as err:
        load_preset_text("", overrides=["train.learning_rate=-1"])
    assert "train.learning_rate" in str(err.value)


MALFORMED = [
    ("[peft]\nr = 0\n", "peft.r", "below the minimum 1"),
    ("[train]\nlearning_rate = -1\n", "train.learning_rate", "greater than 0"),
    ("[peft]\nmethd = \"LoRa\"\n", "peft.methd", "did you mean 'method'"),
    ("[trian]\nseed = 1\n", "trian", "did you mean 'train'"),
    ("[train]\nmax_steps = \"ten\"\n", "train.max_steps", "must be an integer"),
    ("[data]\ndataset = \"squadd\"\n", "data.dataset", "did you mean 'squad'"),
    ("[peft]\nmethod = \"lora\"\n", "peft.method", "did you mean 'LoRa'"),
    ("[quant]\nmethod = \"QLORA\"\n[peft]\nmethod = \"NoPeft\"\n", "quant.method", "needs peft.method"),
    ("[peft]\ndropout = 1.5\n", "peft.dropout", "less than 1"),
    ("[[ptq]]\nmethod = \"GPTQ\"\nbits = 5\n", "ptq[0].bits", "supports bits"),
    ("[model]\ntrust_remote_code = \"yes\"\n", "model.trust_remote_code", "true or false"),
    ("[quant]\nmethod = \"QLORA\"\n[peft]\nmethod = \"VeRa\"\n", "peft.method", "use LoRa or DoRa"),
    ("[train\n", "toml", "not valid TOML"),
    ("ptq = 3\n", "ptq", "array of tables"),
]


@pytest.mark.parametrize("text,where,reason", MALFORMED)
def test_malformed_presets_name_field_and_reason(text, where, reason):
    with pytest.raises(ConfigError) as err:
        load_preset_text(text, "bad.toml")
    message = str(err.value)
    assert f"bad.toml: {where}" in message, message
    assert reason in message, message


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_preset_text("[peft]\nr = 0\nalpha = -2\n[train]\nlearning_rate = 0\nseed = -1\n")
    assert {p.where for p in err.value.problems} == {"peft.r", "peft.alpha", "train.learning_rate", "train.seed"}


def test_custom_dataset_is_accepted_when_registered():
    with pytest.raises(ConfigError):
        load_preset_text('[data]\ndataset = "mytask"\n')
    assert load_preset_text('[data]\ndataset = "mytask"\n', custom_datasets=("mytask",)).data.dataset == "mytask"


def _llmtui(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("text,where,reason", MALFORMED[:10])
def test_plan_exits_2_with_the_message(tmp_path, text, where, reason):
    preset = tmp_path / "bad.toml"
    preset.write_text(text)
    result = _llmtui("-w", str(tmp_path), "plan", str(preset))
    assert result.returncode == 2
    assert where in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_reproduces_the_legacy_names(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('[model]\nbase = "Qwen/Qwen3-0.6B"\n[quant]\nmethod = "QLORA"\n')
    result = _llmtui("-w", str(tmp_path), "plan", str(preset), "--json")
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert data["output_name"] == "Qwen3-0.6B-openmath_SFT_LoRa256_QLORA_w4_headbf16"
    assert [s["kind"] for s in data["steps"]] == ["train"]
    for overrides, name in [
        (["model.base=Qwen/Qwen3-8B", "peft.method=VeRa", "peft.r=512", "quant.method=NoQuant"],
         "Qwen3-8B-openmath_SFT_VeRa512_NoQuant"),
        (["model.base=Qwen/Qwen3-8B", "peft.method=DoRa", "quant.method=NoQuant"], "Qwen3-8B-openmath_SFT_DoRa256_NoQuant"),
        (["model.base=Qwen/Qwen3-4B", "peft.method=NoPeft", "quant.method=NoQuant"], "Qwen3-4B-openmath_SFT_NoPeft_NoQuant"),
        (["model.base=Qwen/Qwen3-4B", "data.dataset=none", "quant.method=NoQuant"], "Qwen3-4B-base"),
    ]:
        args = [a for o in overrides for a in ("--set", o)]
        result = _llmtui("-w", str(tmp_path), "plan", str(preset), "--json", *args)
        assert json.loads(result.stdout)["output_name"] == name


def test_plan_lists_pipeline_steps(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('[[ptq]]\nmethod = "GPTQ"\n[[ptq]]\nmethod = "HQQ"\n[eval]\nafter = true\n')
    import json

    data = json.loads(_llmtui("-w", str(tmp_path), "plan", str(preset), "--json").stdout)
    assert [s["kind"] for s in data["steps"]] == ["train", "quantize", "quantize", "eval", "eval", "eval"]
    assert data["steps"][1]["target"] == "Qwen3-0.6B-openmath_SFT_LoRa256_GPTQ_w4_g64_headfp16"
    assert [s["after"] for s in data["steps"][3:]] == [[0], [1], [2]]


def test_saving_an_unchanged_preset_over_itself_is_byte_identical(tmp_path):
    from engine.runs.demo import DEMO_PRESETS

    for name, text in DEMO_PRESETS.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        save_preset(load_preset(path), path)
        assert path.read_text() == text, name


def test_saving_changes_only_the_changed_keys_and_keeps_comments_and_layout(tmp_path):
    text = """# my sweep: keep r small
[model]
base = "Models/tiny"   # local copy

[peft]
method = "LoRa"
r = 16
target_modules = ["q_proj",
                  "v_proj"]

# the GPTQ step first
[[ptq]]
method = "GPTQ"  # the one we ship

[[ptq]]
method = "HQQ"
bits = 3
"""
    path = tmp_path / "p.toml"
    path.write_text(text)
    config = load_preset(path)
    config.peft.r = 8
    config.train.max_steps = 20  # a section the file does not have
    save_preset(config, path)
    saved = path.read_text()
    assert saved == text.replace("r = 16", "r = 8") + "\n[train]\nmax_steps = 20\n"
    assert load_preset(path).to_dict() == config.to_dict()

    config.ptq.reverse()  # moved steps keep their own tables and comments
    config.ptq[1].bits = 8
    save_preset(config, path)
    saved = path.read_text()
    assert 'method = "HQQ"\nbits = 3\n' in saved and 'method = "GPTQ"  # the one we ship\nbits = 8\n' in saved
    assert saved.index('method = "HQQ"') < saved.index('method = "GPTQ"')
    assert "# my sweep: keep r small" in saved and "alpha" not in saved and "dropout" not in saved
    assert load_preset(path).to_dict() == config.to_dict()

    del config.ptq[0]
    save_preset(config, path)
    assert "HQQ" not in path.read_text() and load_preset(path).to_dict() == config.to_dict()


def test_all_linear_must_stand_alone():
    with pytest.raises(ConfigError, match="peft.target_modules: 'all-linear' already covers every linear layer"):
        load_preset_text('[peft]\ntarget_modules = ["all-linear", "q_proj"]\n')
    assert load_preset_text('[peft]\ntarget_modules = ["all-linear"]\n').peft.target_modules == ["all-linear"]
