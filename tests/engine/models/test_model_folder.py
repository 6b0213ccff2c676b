"""Model reference → folder (one rule for train, quantize and eval) and the tolerant/strict kind readers."""

from __future__ import annotations

import json

import pytest

from engine.models.folder import ModelLoadError, detect_kind, inspect_folder
from engine.models.resolve import ModelNotFoundError, resolve_model_folder, resolve_model_ref
from engine.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws").init()


def test_a_name_a_workspace_path_an_absolute_path_and_a_home_path_all_resolve(ws, tmp_path, monkeypatch):
    (ws.models_dir / "m").mkdir()
    outside = tmp_path / "elsewhere" / "ckpt"
    outside.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model_folder(ws, "m") == (ws.models_dir / "m").resolve()
    assert resolve_model_folder(ws, "Models/m") == (ws.models_dir / "m").resolve()
    assert resolve_model_folder(ws, str(outside)) == outside.resolve()
    assert resolve_model_folder(ws, "~/elsewhere/ckpt") == outside.resolve()
    assert resolve_model_ref(ws, str(outside)) == str(outside.resolve())  # issue 12: an absolute base works


def test_a_missing_folder_names_every_place_looked_in_and_a_hub_id_stays_a_hub_id(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_folder(ws, "ghost")
    assert str(error.value) == (f"'ghost' not found: no such model folder (looked in {ws.models_dir / 'ghost'}, "
                                f"{ws.root / 'ghost'}, {tmp_path / 'ghost'})")
    with pytest.raises(ModelNotFoundError, match=r"looked in /nowhere/ckpt\)"):
        resolve_model_ref(ws, "/nowhere/ckpt")
    assert resolve_model_ref(ws, "Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"


def test_tolerant_and_strict_readers_agree(ws):
    folder = ws.models_dir / "odd"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "quantization_metadata.json").write_text(json.dumps({"method": "BRECQ"}))
    found, problems = inspect_folder(folder)
    assert problems == [f"{folder / 'quantization_metadata.json'}: method = 'BRECQ' is not one of "
                        "GPTQ, AWQ, HQQ, INT8, NF4"]
    with pytest.raises(ModelLoadError) as error:
        detect_kind(folder)
    assert str(error.value) == problems[0]
    (folder / "quantization_metadata.json").write_text(json.dumps({"method": "NF4"}))
    assert inspect_folder(folder)[1] == [] and detect_kind(folder).kind == "bnb"
