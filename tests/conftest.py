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
    from engine.demo import create_demo

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
