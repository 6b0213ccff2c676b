"""The repository's own experiments/ (the legacy study as presets): each validates and is named as the legacy
scripts named its output; the repository root is a workspace whose folders keep only their READMEs in git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXPERIMENTS = REPO / "experiments"


def test_every_legacy_preset_validates_and_is_named_by_the_legacy_rules():
    from engine.presets.config import load_preset
    from engine.presets.naming import ptq_output_name

    import tomllib

    # legacy-study.toml is the same study as one study file (tests/engine/presets/test_study.py)
    presets = sorted(p for p in EXPERIMENTS.glob("*.toml") if "study" not in tomllib.loads(p.read_text()))
    names = {path.stem for path in presets}
    for size in ("0.6B", "4B", "8B"):
        assert {f"Qwen3-{size}-base", f"Qwen3-{size}-openmath_SFT_LoRa256_NoQuant",
                f"Qwen3-{size}-openmath_SFT_DoRa256_NoQuant", f"Qwen3-{size}-openmath_SFT_VeRa512_NoQuant",
                f"Qwen3-{size}-openmath_SFT_NoPeft_NoQuant",
                f"Qwen3-{size}-openmath_SFT_LoRa256_QLORA_w4_headbf16"} <= names
    ptq_outputs = set()
    for path in presets:
        config = load_preset(path)
        assert config.output_name() == path.stem
        ptq_outputs |= {ptq_output_name(path.stem, spec) for spec in config.ptq_specs()}
    assert "Qwen3-0.6B-openmath_SFT_NoPeft_GPTQ_w4_g64_headfp16" in ptq_outputs
    assert "Qwen3-8B-base_AWQ_w4_g64_headfp16" in ptq_outputs


def test_llmtui_plan_accepts_a_legacy_preset_in_the_repository_workspace():
    preset = EXPERIMENTS / "Qwen3-4B-openmath_SFT_LoRa256_QLORA_w4_headbf16.toml"
    done = subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(REPO), "plan", str(preset)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Qwen3-4B-openmath_SFT_LoRa256_QLORA_w4_headbf16" in done.stdout
    assert "target modules  attention → resolved at training time" in done.stdout


def test_workspace_folders_keep_only_their_readmes_in_git(tmp_path):
    for folder in ("Datasets", "Models", "Testing"):
        assert (REPO / folder / "README.md").is_file()
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", f"{folder}/README.md"])
        assert ignored.returncode == 1  # tracked, not ignored
        inside = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", f"{folder}/some-model/x.json"])
        assert inside.returncode == 0
