"""Study files: expansion (axes, zip, exclude, overrides, suffixes for runs named alike), validation, the legacy study."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.presets.config import load_preset
from engine.presets.study import StudyError, load_study

REPO = Path(__file__).resolve().parents[3]


def test_the_legacy_study_file_expands_to_exactly_the_18_preset_files():
    study = load_study(REPO / "experiments" / "legacy-study.toml")
    files = {path.stem: load_preset(path).to_dict() for path in (REPO / "experiments").glob("Qwen3-*.toml")}
    assert len(files) == 18
    assert {run.name: run.config.to_dict() for run in study.runs} == files
    assert sum(len(run.config.ptq) for run in study.runs) == 18  # 3 sizes × (snapshot + full) × 3 PTQ methods


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "boolq-lora.toml").write_text('[model]\nbase = "Models/tiny"\n[data]\ndataset = "boolq"\n'
                                              '[peft]\nr = 16\n[eval]\nafter = true\ndatasets = ["boolq"]\n')
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_the_minimal_form_works_as_written_and_names_runs_the_legacy_rule_names_alike_apart(tmp_path):
    study = load_study(_write(tmp_path, '[study]\nbase = "boolq-lora.toml"\n[study.axes]\n'
                                        '"peft.method" = ["LoRa", "DoRa"]\n"train.learning_rate" = [1e-3, 5e-3]\n'))
    assert [run.name for run in study.runs] == [
        "tiny-lr0.001-boolq_SFT_LoRa16_NoQuant", "tiny-lr0.005-boolq_SFT_LoRa16_NoQuant",
        "tiny-lr0.001-boolq_SFT_DoRa16_NoQuant", "tiny-lr0.005-boolq_SFT_DoRa16_NoQuant"]
    assert study.runs[3].config.train.learning_rate == 5e-3 and study.runs[3].config.peft.method == "DoRa"
    assert study.name == "grid" and study.correction == "holm" and study.search is None


def test_zip_exclude_and_per_value_overrides(tmp_path):
    study = load_study(_write(tmp_path, '[study]\nbase = "boolq-lora.toml"\n'
                                        '[study.axes]\n"train.seed" = [1, 2]\n'
                                        '[[study.zip]]\n"peft.method" = ["LoRa", "VeRa", "NoPeft"]\n'
                                        '"quant.merge_after_train" = [true, false, false]\n'
                                        '[[study.exclude]]\n"peft.method" = "NoPeft"\n"train.seed" = 2\n'
                                        '[[study.override]]\nwhen = { "peft.method" = "VeRa" }\n'
                                        'set = { "peft.r" = 512 }\n'))
    got = {(run.config.peft.method, run.config.train.seed): run for run in study.runs}
    assert sorted(got) == [("LoRa", 1), ("LoRa", 2), ("NoPeft", 1), ("VeRa", 1), ("VeRa", 2)]
    assert got[("VeRa", 1)].config.peft.r == 512 and got[("LoRa", 1)].config.peft.r == 16
    assert got[("LoRa", 1)].config.quant.merge_after_train and not got[("VeRa", 2)].config.quant.merge_after_train
    assert got[("VeRa", 2)].name == "tiny-seed2-boolq_SFT_VeRa512_NoQuant"


def test_runs_that_differ_only_in_ptq_follow_ups_share_one_training(tmp_path):
    study = load_study(_write(tmp_path, '[study]\nbase = "boolq-lora.toml"\n[study.axes]\n'
                                        'ptq = [[{ method = "HQQ", bits = 4 }], [{ method = "HQQ", bits = 8 }]]\n'))
    assert len(study.runs) == 1
    assert [(s.method, s.bits) for s in study.runs[0].config.ptq] == [("HQQ", 4), ("HQQ", 8)]


def test_every_invalid_run_is_reported_at_once_naming_its_axis_value(tmp_path):
    with pytest.raises(StudyError) as caught:
        load_study(_write(tmp_path, '[study]\nbase = "boolq-lora.toml"\ncorrection = "bonferroni"\n[study.axes]\n'
                                    '"peft.method" = ["LoRa", "LoRA"]\n"train.learning_rate" = [1e-3, 2.0]\n'))
    problems = caught.value.problems
    assert any("bonferroni" in p for p in problems)
    assert any(p.startswith("run peft.method=LoRA, train.learning_rate=0.001: peft.method:") for p in problems)
    assert any(p.startswith("run peft.method=LoRa, train.learning_rate=2: train.learning_rate:") for p in problems)
    assert len([p for p in problems if p.startswith("run ")]) == 4  # LoRA×2, lr=2×2 (one run has both)


def test_a_missing_base_and_a_search_without_a_space_are_named(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nbase = "nope.toml"\n[study.search]\nn_trials = 0\nobjective = "boolq"\n')
    with pytest.raises(StudyError) as caught:
        load_study(path)
    text = str(caught.value)
    assert "study.base: 'nope.toml' not found" in text and "n_trials" in text and "objective" in text
    assert "study.search.space" in text


def test_the_minimal_search_form_works_as_written(tmp_path):
    study = load_study(_write(tmp_path, '[study]\nbase = "boolq-lora.toml"\n[study.search]\nn_trials = 6\n'
                                        'objective = "boolq.accuracy"\ndirection = "maximize"\n'
                                        '[study.search.space]\n'
                                        '"train.learning_rate" = { low = 1e-4, high = 1e-2, log = true }\n'))
    assert study.search.n_trials == 6 and study.search.objective_parts == ("boolq", "accuracy")
    (dimension,) = study.search.space
    assert (dimension.key, dimension.low, dimension.high, dimension.log) == ("train.learning_rate", 1e-4, 1e-2, True)
    run = study.trial_run(3, {"train.learning_rate": 0.002})
    assert run.name == "tiny-trial3-boolq_SFT_LoRa256_NoQuant".replace("256", "16")
    assert run.config.train.learning_rate == 0.002
