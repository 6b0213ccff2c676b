"""What a preset's ``peft.target_modules`` means for an architecture (any process; no torch).

``"attention"`` (the default) means the attention projections the architecture has — ``q_proj``,
``k_proj``, ``v_proj``, ``o_proj`` for Llama, Qwen, Mistral and Gemma, the fused ``qkv_proj`` and ``o_proj``
for Phi-3 — and ``"all-linear"`` every linear layer but the output head (PEFT's own keyword). Other entries
are module names that must exist in the model. Training resolves the list against the loaded model
(:func:`expand`); ``llmtui plan`` resolves it from a local base folder's ``config.json``
(:func:`preview`), or says it is resolved at training time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ATTENTION = "attention"
ALL_LINEAR = "all-linear"
KEYWORDS = (ATTENTION, ALL_LINEAR)
_QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
#: The attention projections of the architectures llmtui has been tried on (``config.json``'s ``model_type``).
ATTENTION_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "llama": _QKVO, "mistral": _QKVO, "qwen2": _QKVO, "qwen3": _QKVO, "gemma": _QKVO, "gemma2": _QKVO,
    "gemma3": _QKVO, "gemma3_text": _QKVO, "granite": _QKVO, "phi3": ("qkv_proj", "o_proj"),
}
AT_TRAINING_TIME = "resolved at training time"


def expand(requested: list[str], attention: list[str]) -> list[str] | str:
    """The modules to adapt: ``"all-linear"`` alone stays the keyword; ``"attention"`` becomes ``attention``."""
    if list(requested) == [ALL_LINEAR]:
        return ALL_LINEAR
    resolved: list[str] = []
    for name in requested:
        for module in (attention if name == ATTENTION else [name]):
            if module not in resolved:
                resolved.append(module)
    return resolved


def keyword_problem(requested: list[str]) -> str | None:
    """Why a list mixing ``"all-linear"`` with other entries is invalid (None when it is fine)."""
    if ALL_LINEAR in requested and len(requested) > 1:
        return f"{ALL_LINEAR!r} already covers every linear layer; list it alone"
    return None


def model_type_of(folder: Path | str) -> str | None:
    """``model_type`` from a model folder's ``config.json`` (the text config's for multimodal ones)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    text = config.get("text_config")
    kind = text.get("model_type") if isinstance(text, dict) and text.get("model_type") else config.get("model_type")
    return kind if isinstance(kind, str) else None


def preview(requested: list[str], base_folder: Path | str | None) -> dict[str, Any]:
    """What ``requested`` resolves to for a local base folder, without loading the model.

    ``{"requested", "model_type", "resolved"}``; ``resolved`` is the text :data:`AT_TRAINING_TIME` for a hub
    id, or when the architecture is not in :data:`ATTENTION_PROJECTIONS` and ``"attention"`` is asked for.
    """
    model_type = model_type_of(base_folder) if base_folder else None
    resolved: Any = AT_TRAINING_TIME
    attention = ATTENTION_PROJECTIONS.get(model_type or "")
    if model_type and (attention is not None or ATTENTION not in requested):
        resolved = expand(list(requested), list(attention or ()))
    return {"requested": list(requested), "model_type": model_type, "resolved": resolved}
