"""Workspace layout, the demo, the model scan, and the engine's import hygiene."""

import json
import os
import pkgutil
import stat
import subprocess
import sys

import engine
from engine.models.scan import scan_models
from engine.workspace import Workspace


def test_init_creates_layout_without_touching_existing(tmp_path):
    (tmp_path / "Models").mkdir()
    (tmp_path / "Models" / "keep.txt").write_text("mine")
    ws = Workspace(tmp_path).init()
    assert ws.missing_parts() == []
    assert (tmp_path / "Testing" / "predictions").is_dir()
    assert (tmp_path / "Models" / "keep.txt").read_text() == "mine"
    assert stat.S_IMODE(os.stat(ws.state_dir).st_mode) == 0o700


def _llmtui(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True)


def test_demo_then_models_json_shows_untested(demo_template):
    result = _llmtui("-w", str(demo_template), "models", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [(r["name"], r["status"]) for r in records] == [("tiny-qwen3", "untested")]
    assert 100_000 < records[0]["params"] < 10_000_000


def test_model_scan_statuses(demo_ws):
    ws = demo_ws
    (ws.models_dir / "empty").mkdir()
    corrupt = ws.models_dir / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{}")
    (corrupt / "training_metadata.json").write_text("{not json")
    (ws.models_dir / ".tmp-half-written").mkdir()
    tested = ws.models_dir / "Qwen3-8B-arc_SFT_DoRa256_NoQuant"
    tested.mkdir()
    (tested / "config.json").write_text("{}")
    ws.metrics_file(tested.name).write_text(json.dumps({"datasets": {"test-ai2_arc.parquet": {
        "type": "mcq4", "accuracy": 0.5, "metrics": {"macro_f1": 0.42}}}}))
    records = {r.name: r for r in scan_models(ws)}
    assert ".tmp-half-written" not in records
    assert records["empty"].status == "broken" and "config.json" in records["empty"].reason
    assert records["corrupt"].status == "broken" and "training_metadata.json" in records["corrupt"].reason
    assert records["tiny-qwen3"].status == "untested"
    r = records[tested.name]
    assert r.status == "tested" and (r.dataset, r.peft, r.quant_tag) == ("arc", "DoRa256", "NoQuant")
    assert r.headline == {"test-ai2_arc.parquet": {"metric": "macro_f1", "value": 0.42}}


def test_cli_help_and_version():
    result = _llmtui("--help")
    assert result.returncode == 0
    for command in ("init", "demo", "plan", "models"):
        assert command in result.stdout
    assert _llmtui("--version").stdout.startswith("llmtui ")


def test_engine_modules_never_import_the_ui():
    names = [m.name for m in pkgutil.walk_packages(engine.__path__, prefix='engine.')]
    code = ("import importlib, sys\n"
            f"for name in {names!r}: importlib.import_module(name)\n"
            "bad = [m for m in ('textual', 'rich', 'torch', 'transformers') if m in sys.modules]\n"
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    leaked = set(filter(None, result.stdout.strip().split(",")))
    assert not leaked & {"textual", "rich"}, leaked
    assert not leaked & {"torch", "transformers"}, f"heavy imports at module level: {leaked}"
    assert len(names) >= 10


def test_data_prepare_offline_fails_fast_and_clearly(tmp_path):
    Workspace(tmp_path).init()
    result = _llmtui("-w", str(tmp_path), "data", "prepare", "--datasets", "boolq")
    assert result.returncode == 1
    assert "offline" in result.stderr or "HF_HUB_OFFLINE" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "Datasets").iterdir())


def test_events_round_trip_and_partial_lines(tmp_path):
    from engine.events import EventTail, EventWriter, read_events

    path = tmp_path / "events.jsonl"
    with EventWriter(path) as writer:
        for step in range(3):
            writer.emit("train_step", step=step, loss=1.0 / (step + 1))
    with open(path, "a") as handle:
        handle.write('{"t": 1, "kind": "do')  # a line still being written
    tail = EventTail(path)
    assert [e["step"] for e in tail.read_new()] == [0, 1, 2]
    with open(path, "a") as handle:
        handle.write('ne"}\nnot json\n')
    assert [e["kind"] for e in tail.read_new()] == ["done"]
    assert len(read_events(path)) == 4
