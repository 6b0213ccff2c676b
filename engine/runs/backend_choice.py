"""``auto``'s choice of evaluation backend, by measurement (job process).

Every evaluation of a full-weight folder on this machine records its speed — backend, device kind, model
parameters, items, seconds generating and seconds loading (vLLM's start-up included) — in
``~/.cache/llmtui/eval_speeds.json`` (``$LLMTUI_EVAL_SPEEDS`` elsewhere). For a new evaluation ``auto``
predicts each backend's time from the record nearest in model size on the same device kind (seconds an item
scale with the parameters; the load time is taken as measured) and picks the faster. Without a record of both
backends on this device kind it uses what the project measured: on a GPU vLLM, on the CPU the built-in engine
(the demo workload, 16 items × 4 test sets: built-in 2.2 s, vLLM 8.2 s plus 92 s of start-up). The reason is
returned, and the metrics file keeps it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from engine.files import write_text

#: Records kept (the newest), so the file stays small.
KEEP = 200


def speeds_path() -> Path:
    return Path(os.environ.get("LLMTUI_EVAL_SPEEDS") or Path.home() / ".cache" / "llmtui" / "eval_speeds.json")


def read_speeds(path: Path | None = None) -> list[dict[str, Any]]:
    """The recorded evaluations (an unreadable file counts as none)."""
    try:
        rows = json.loads((path or speeds_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def record_speed(*, backend: str, device: str, params: int, items: int, generation_s: float, load_s: float,
                 path: Path | None = None) -> None:
    """Append one evaluation's speed (device kind ``gpu`` or ``cpu``)."""
    if items <= 0 or generation_s <= 0 or params <= 0:
        return
    path = path or speeds_path()
    rows = read_speeds(path)[-(KEEP - 1):]
    rows.append({"backend": backend, "device": device, "params": params, "items": items,
                 "seconds_per_item": generation_s / items, "load_s": load_s, "at": time.time()})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(rows, indent=0))


def _nearest(rows: list[dict[str, Any]], backend: str, device: str, params: int) -> dict[str, Any] | None:
    mine = [r for r in rows if r.get("backend") == backend and r.get("device") == device and r.get("params")]
    if not mine:
        return None
    return min(mine, key=lambda r: (abs(math.log(r["params"] / params)), -r.get("at", 0)))


def predicted_seconds(row: dict[str, Any], params: int, items: int) -> float:
    return row["load_s"] + items * row["seconds_per_item"] * params / row["params"]


def auto_backend(*, device: str, params: int, items: int, path: Path | None = None) -> tuple[str, str]:
    """``("hf" | "vllm", why)`` for ``items`` items of a ``params``-parameter model on ``device`` (gpu | cpu)."""
    rows = read_speeds(path)
    hf, vllm = _nearest(rows, "hf", device, params), _nearest(rows, "vllm", device, params)
    if hf is None or vllm is None:
        if device == "gpu":
            return "vllm", "auto: vLLM (no measurement of both backends on a GPU here yet; vLLM is the faster there)"
        return "hf", ("auto: the built-in engine (no measurement of both backends on this CPU yet; on the CPU it "
                      "was faster in every run measured: demo 2.2 s vs vLLM 8.2 s + 92 s start-up)")
    t_hf, t_vllm = predicted_seconds(hf, params, items), predicted_seconds(vllm, params, items)
    choice = "hf" if t_hf <= t_vllm else "vllm"
    measured = (f"measured here on {device}: built-in {1 / hf['seconds_per_item']:.2f} items/s at "
                f"{hf['params'] / 1e9:.2f} B parameters + {hf['load_s']:.0f} s load, vLLM "
                f"{1 / vllm['seconds_per_item']:.2f} items/s at {vllm['params'] / 1e9:.2f} B + {vllm['load_s']:.0f} s start")
    name = "the built-in engine" if choice == "hf" else "vLLM"
    return choice, (f"auto: {name}, predicted {min(t_hf, t_vllm):.0f} s vs {max(t_hf, t_vllm):.0f} s for "
                    f"{items} items ({measured})")
