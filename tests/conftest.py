"""Shared fixtures: a demo workspace (tiny model + synthetic data) built once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> Path:
    """A demo workspace built once; copy it (``demo_ws``) before changing anything in it."""
    from engine.runs.demo import create_demo

    root = tmp_path_factory.mktemp("demo-template")
    create_demo(root, train_rows=1000, test_rows=100)
    return root


@pytest.fixture
def demo_ws(demo_template, tmp_path):
    """A fresh copy of the demo workspace for one test."""
    from engine.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    return Workspace(root)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real benchmark files in ../shared/datasets (skipped with a reason where absent)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def trained_boolq_model(demo_template, tmp_path_factory) -> tuple[Path, str]:
    """``(workspace_root, model_name)``: the tiny demo model fully fine-tuned on synthetic BoolQ with the demo
    preset ``experiments/boolq-full.toml``, trained once per session (read-only by convention; copy the
    workspace before changing it). Its training events are in ``.llmtui/trained-boolq-events.jsonl``."""
    from engine.presets.config import load_preset
    from engine.runs.train import train
    from engine.workspace import Workspace

    root = tmp_path_factory.mktemp("trained-boolq") / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    ws = Workspace(root)
    config = load_preset(ws.experiments_dir / "boolq-full.toml")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from threads, and they thrash on a busy machine
    try:
        result = train(ws, config, events_path=ws.state_dir / "trained-boolq-events.jsonl")
    finally:
        torch.set_num_threads(threads)
    return root, result.model_name


@pytest.fixture
def tui_app():
    """Make the app as the Pilot tests run it: a fixed GPU list (NVML cannot exist here), no worker, fast polls.

    ``tui_app(ws)`` has one fake GPU; ``gpus=0`` none; any other ``LlmTuiApp`` option passes through.
    """
    from fake_gpus import FakeInventory
    from tui.app import LlmTuiApp

    def make(ws, *, gpus: int = 1, **options):
        options.setdefault("gpu_inventory", FakeInventory.with_gpus(gpus))
        options.setdefault("autostart_worker", False)
        options.setdefault("poll_interval_s", 0.1)
        return LlmTuiApp(ws, **options)

    return make


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node Slurm cluster (munged, slurmctld, slurmd from Debian's packages) on private ports,
    with ``SLURM_CONF`` pointing at its config for the whole test process; stopped after the session.
    Skipped, with the reason, only where the packages are not installed (``.ci/run`` installs them)."""
    from slurm_cluster import ClusterError, missing_commands, start_cluster

    missing = missing_commands()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; apt-get install slurmctld slurmd "
                    "slurm-client munge)")
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterError as exc:
        pytest.fail(f"the test Slurm cluster did not start: {exc}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()
