"""Deterministic workspaces for the TUI tests: model folders with fixed metadata (no weights), and a
helper that waits in a Pilot test until the app shows something, and one that opens a comparison."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from engine.files import write_json
from engine.workspace import Workspace

MODEL_DATE = "2026-01-02T03:04:05+00:00"


def make_workspace(root: Path) -> Workspace:
    """An empty workspace with the full layout at ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root).init()


def make_model(ws: Workspace, name: str, *, params: int = 751_632_384, dataset: str = "boolq", peft: str = "LoRa",
               r: int = 16, base: str = "Qwen/Qwen3-0.6B", train_peak_gb: float = 3.5) -> Path:
    """A model folder the registry reads as a trained model (config + training metadata, no weights)."""
    folder = ws.model_dir(name)
    folder.mkdir(parents=True)
    write_json(folder / "config.json", {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]})
    write_json(folder / "training_metadata.json", {
        "model_info": {"model_name": name, "base_model": base, "fine_tuning_date": MODEL_DATE,
                       "model_type": "full" if peft == "NoPeft" else "merged", "quantization_tag": "NoQuant",
                       "total_params": params},
        "training_parameters": {"preset": {"data": {"dataset": dataset}, "peft": {"method": peft, "r": r}}},
        "training_stats": {"total_steps": 100, "final_loss": 0.25},
        "hardware_info": {"vram_peaks": {"overall": {"peak_allocated_gb": train_peak_gb,
                                                     "peak_reserved_gb": train_peak_gb + 0.5}}},
    })
    return folder


async def wait_for(pilot, condition: Callable[[], object], *, timeout: float = 10.0, what: str = "") -> None:
    """Let the app run until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        await pilot.pause(0.05)


async def open_compare(app, pilot, *, timeout: float = 20.0):
    """From anywhere: Results (4), mark the first two models, ``c``; the comparison screen once computed."""
    from tui.screens.compare import CompareScreen

    await pilot.press("4")
    results = app.screen
    await wait_for(pilot, lambda: results.table_data is not None, what="the results")
    await pilot.press("space", "down", "space", "c")
    await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison is not None,
                   timeout=timeout, what="the comparison")
    return app.screen
