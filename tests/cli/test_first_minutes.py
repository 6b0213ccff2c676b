"""A newcomer's first commands (issue 22, items 15–17): ``llmtui demo`` prints only llmtui's own lines, its
parting hint works from any folder, and a Hub id that is not cached on an offline machine fails at once with
llmtui's message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: What the libraries printed before issue 22 (torch's pytree warning, bitsandbytes' kernel notice, progress bars).
NOISE = ("_pytree", "KernelPreference", "gemm_4bit", "kernels-community", "Writing model shards", "Loading weights",
         "it/s]")


def _llmtui(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    environment.pop("LLMTUI_EVENTS", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=600,
                          env=environment, cwd=cwd)


def test_demo_is_quiet_and_its_hint_works_from_anywhere(tmp_path):
    """Before: torch's and bitsandbytes' import warnings and a progress bar came first, and the hint's
    ``plan experiments/boolq-full.toml`` run from another folder answered "file: not found"."""
    ws = tmp_path / "demo ws"
    done = _llmtui("-w", str(ws), "demo", "--train-rows", "20", "--test-rows", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert not [word for word in NOISE if word in output], output
    hint = next(line for line in done.stdout.splitlines() if line.strip().startswith("try:"))
    assert f"'{ws}'" in hint  # quoted: the path has a space
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planned = _llmtui("-w", str(ws), "plan", "experiments/boolq-full.toml", cwd=elsewhere)
    assert planned.returncode == 0, planned.stderr
    missing = _llmtui("-w", str(ws), "plan", "experiments/nope.toml", cwd=elsewhere)
    assert missing.returncode == 2 and f"{ws}/experiments/nope.toml" in missing.stderr and "looked in" in missing.stderr


def test_an_uncached_hub_id_offline_fails_at_once_with_llmtuis_message(demo_ws, tmp_path):
    """Before: transformers retried five times with back-off and printed its generic "couldn't connect".
    The Hub is made unreachable for certain with an endpoint nobody listens on (port 9, refused at once)."""
    done = _llmtui("-w", str(demo_ws.root), "train", "boolq-full", "--set", "model.base=nobody/not-cached-here",
                   cwd=tmp_path, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    message = done.stderr
    assert "'nobody/not-cached-here' is not in the Hugging Face cache" in message and "cannot be reached" in message
    assert "hf download nobody/not-cached-here" in message and "model.base" in message
    assert "couldn't connect" not in message.lower()
