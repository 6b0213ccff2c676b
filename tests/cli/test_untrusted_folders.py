"""Code from a model folder runs only when the user asked for it; outputs follow the umask (issue 22, items 8, 12).

Before: ``training_metadata.json`` inside the folder (``…preset.model.trust_remote_code = true``) switched
``trust_remote_code`` on for ``eval``/``chat``/``quantize``, so a copied folder with an ``auto_map`` and a planted
module ran that module. Here the planted module writes a marker file when imported.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from engine.files import staged_dir, write_text

REPO = Path(__file__).resolve().parents[2]


def _plant(ws_root: Path, marker: Path) -> Path:
    import shutil

    folder = ws_root / "Models" / "planted"
    shutil.copytree(ws_root / "Models" / "tiny-qwen3", folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "planted_code.PlantedConfig",
                          "AutoModelForCausalLM": "planted_code.PlantedModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "planted_code.py").write_text(
        f"open({str(marker)!r}, 'w').write('the folder ran its code')\n"
        "from transformers import Qwen3Config, Qwen3ForCausalLM\n"
        "class PlantedConfig(Qwen3Config):\n    pass\n"
        "class PlantedModel(Qwen3ForCausalLM):\n    config_class = PlantedConfig\n")
    # what someone else's metadata says must not matter
    (folder / "training_metadata.json").write_text(json.dumps(
        {"training_parameters": {"preset": {"model": {"trust_remote_code": True}}}}))
    return folder


def _llmtui(ws_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("LLMTUI_EVENTS", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(ws_root), *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_a_planted_auto_map_module_never_runs_unless_asked(demo_ws, tmp_path):
    marker = tmp_path / "MARKER"
    _plant(demo_ws.root, marker)
    listed = {r["name"]: r for r in json.loads(_llmtui(demo_ws.root, "models", "--json").stdout)}
    assert listed["planted"]["status"] == "broken" and "--trust-remote-code" in listed["planted"]["reason"]
    for args in (["eval", "planted", "--limit", "1", "--datasets", "boolq"],
                 ["quantize", "planted", "--method", "hqq"],
                 ["chat", "planted", "-m", "hi"]):
        done = _llmtui(demo_ws.root, *args)
        assert done.returncode != 0 and "--trust-remote-code" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert not marker.exists(), f"{args} ran the folder's code"
    queued = _llmtui(demo_ws.root, "queue", "add", "eval", "--untested", "--json")
    assert "planted" in queued.stderr and "broken, not queued" in queued.stderr
    assert all(job["target"] != "planted" for job in json.loads(queued.stdout))
    _llmtui(demo_ws.root, "worker", "stop")
    # The control: asked for on the command, the same folder's module does run (so the test above could fail).
    _llmtui(demo_ws.root, "eval", "planted", "--limit", "1", "--datasets", "boolq", "--trust-remote-code")
    assert marker.read_text() == "the folder ran its code"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_follow_the_umask(tmp_path):
    """Before: mkstemp/mkdtemp gave metrics 0600 and model folders 0700 whatever the umask."""
    old = os.umask(0o022)
    try:
        shared = write_text(tmp_path / "a" / "metrics.json", "{}")
        with staged_dir(tmp_path / "Models" / "m") as folder:
            (folder / "w").write_text("x")
        assert _mode(shared) == 0o644 and _mode(tmp_path / "Models" / "m") == 0o755
        os.umask(0o077)
        private = write_text(tmp_path / "b.json", "{}")
        with staged_dir(tmp_path / "Models" / "p") as folder:
            pass
        assert _mode(private) == 0o600 and _mode(tmp_path / "Models" / "p") == 0o700
    finally:
        os.umask(old)
