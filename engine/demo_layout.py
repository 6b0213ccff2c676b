"""What a demo workspace holds, by name: shared by ``engine.runs.demo`` (which builds it, in the CLI) and
the TUI (which offers to queue its example pipeline). Any process; imports nothing heavy."""

from __future__ import annotations

from engine.workspace import Workspace

#: The tiny base model's folder in ``Models/``.
DEMO_BASE = "tiny-qwen3"
#: The preset the TUI offers to queue on a demo's first open: LoRA on synthetic BoolQ, then evaluation.
DEMO_PIPELINE = "boolq-lora"


def is_demo_workspace(ws: Workspace) -> bool:
    """True for a workspace ``llmtui demo`` built (its base model and example preset are there)."""
    return ws.model_dir(DEMO_BASE).is_dir() and ws.experiment_file(DEMO_PIPELINE).is_file()
