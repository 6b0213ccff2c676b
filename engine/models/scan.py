"""Scan ``Models/`` and ``Testing/metrics/``: one record per model folder, fast and tolerant (any process).

Reads only small files (config, metadata JSON, safetensors headers); a 5,000-model workspace
scans in well under 1.5 s (``bench/model_scan.py``). Broken folders become ``broken`` records
with the reason; nothing here raises on bad content.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.files import read_json_file
from engine.models.resolve import model_name_from
from engine.data.kinds import headline_metric
from engine.models.folder import TRAINING_METADATA, inspect_folder
from engine.workspace import Workspace

NAME_PATTERN = re.compile(r"^(?P<base>.+?)-(?P<dataset>[A-Za-z0-9]+)_(?P<finetuning>[A-Za-z]+)_"
                          r"(?P<peft>NoPeft|LoRa\d+|DoRa\d+|VeRa\d+)_(?P<quant>.+)$")


@dataclass
class ModelRecord:
    """What the Models list shows for one folder."""

    name: str
    path: str
    status: str  # tested | untested | broken
    kind: str = "full"  # full | adapter | bnb | gptq | awq | hqq | unknown
    reason: str = ""
    base_model: str = ""
    #: The model this one was made from: a PTQ variant's source, else a fine-tune's base (a name).
    parent: str = ""
    dataset: str = ""
    peft: str = ""
    quant_tag: str = ""
    params: int | None = None
    size_bytes: int = 0
    date: str = ""
    headline: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safetensors_params(path: Path) -> int:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    total = 0
    for key, info in header.items():
        if key != "__metadata__" and isinstance(info, dict):
            count = 1
            for dim in info.get("shape", []):
                count *= dim
            total += count
    return total


def _folder_files(path: Path) -> tuple[dict[str, os.DirEntry], int]:
    entries: dict[str, os.DirEntry] = {}
    size = 0
    with os.scandir(path) as it:
        for entry in it:
            entries[entry.name] = entry
            try:
                if entry.is_file(follow_symlinks=False):
                    size += entry.stat(follow_symlinks=False).st_size
                elif entry.is_dir(follow_symlinks=False):
                    size += sum(f.stat().st_size for f in Path(entry.path).rglob("*") if f.is_file())
            except OSError:
                continue
    return entries, size


def headline_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per test file: the main metric's name and value from a metrics JSON (tolerant of any shape)."""
    out: dict[str, dict[str, Any]] = {}
    datasets = metrics.get("datasets") if isinstance(metrics, dict) else None
    if not isinstance(datasets, dict):
        return out
    for test_file, block in datasets.items():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        values = block.get("metrics") if isinstance(block.get("metrics"), dict) else {}
        key = headline_metric(kind, [name for name, v in values.items() if isinstance(v, (int, float))])
        value = values.get(key, block.get("accuracy")) if key else None
        out[str(test_file)] = {"metric": key, "value": value if isinstance(value, (int, float)) else None}
    return out


def inspect_model(ws: Workspace, path: Path, metrics_names: set[str] | None = None) -> ModelRecord:
    """Build the record of one model folder (never raises on bad content)."""
    name = path.name
    record = ModelRecord(name=name, path=str(path), status="untested")
    try:
        entries, record.size_bytes = _folder_files(path)
    except OSError as exc:
        record.status, record.reason = "broken", f"cannot list folder: {exc}"
        return record
    record.date = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    found, problems = inspect_folder(path, entries)
    training = found.documents[TRAINING_METADATA]
    if found.ptq_output:  # the Models list names the PTQ method (int8, nf4, gptq…), not only the loader
        record.kind = str(found.quantization.get("method", "unknown")).lower()
        record.quant_tag = str(found.quantization.get("quant_tag", ""))
    else:
        record.kind = found.kind
    if isinstance(training, dict):
        info = training.get("model_info") or {}
        params = training.get("training_parameters") or {}
        preset = params.get("preset") if isinstance(params.get("preset"), dict) else {}
        record.base_model = str(info.get("base_model") or "")
        record.quant_tag = record.quant_tag or str(info.get("quantization_tag") or "")
        record.params = info.get("total_params") if isinstance(info.get("total_params"), int) else None
        record.date = str(info.get("fine_tuning_date") or record.date)
        record.dataset = str((preset.get("data") or {}).get("dataset") or "")
        record.peft = str((preset.get("peft") or {}).get("method") or "")
        if record.peft and record.peft != "NoPeft":
            record.peft += str((preset.get("peft") or {}).get("r", ""))
    source = found.quantization.get("source_model") if found.ptq_output else None
    record.parent = model_name_from(source) or model_name_from(record.base_model) or ""
    match = NAME_PATTERN.match(name)
    if match:
        record.dataset = record.dataset or match["dataset"]
        record.peft = record.peft or match["peft"]
        record.quant_tag = record.quant_tag or match["quant"]
    elif name.endswith("-base"):
        record.dataset = record.dataset or "none"
    if record.params is None and "model.safetensors" in entries:
        try:
            record.params = _safetensors_params(path / "model.safetensors")
        except (OSError, ValueError, struct.error):
            problems.append("model.safetensors: unreadable header")
    if problems:  # the list already names the folder: say the files relative to it
        record.status = "broken"
        record.reason = "; ".join(p.replace(f"{path}{os.sep}", "").removeprefix(f"{path}: ") for p in problems)
    if metrics_names is None or name in metrics_names:
        headline, error = _cached_headline(ws.metrics_file(name))
        if headline is not None:
            record.headline = headline
            if record.status != "broken":
                record.status = "tested"
        elif error and record.status != "broken":
            record.reason = f"metrics file unreadable ({error}); evaluate again"
    return record


_HEADLINE_CACHE: dict[str, tuple[int, int, dict[str, dict[str, Any]]]] = {}


def _cached_headline(path: Path) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """Headline metrics of a metrics file, re-parsed only when its mtime or size changed."""
    try:
        info = path.stat()
    except OSError:
        return None, ""
    key = str(path)
    cached = _HEADLINE_CACHE.get(key)
    if cached and cached[:2] == (info.st_mtime_ns, info.st_size):
        return cached[2], ""
    metrics, error = read_json_file(path)
    if not isinstance(metrics, dict):
        return None, error or f"{path.name}: not a JSON object"
    headline = headline_metrics(metrics)
    _HEADLINE_CACHE[key] = (info.st_mtime_ns, info.st_size, headline)
    return headline, ""


def metrics_names(ws: Workspace) -> set[str]:
    """Stems of ``Testing/metrics/*.json``."""
    try:
        with os.scandir(ws.metrics_dir) as it:
            return {e.name[:-5] for e in it if e.name.endswith(".json") and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


def scan_models(ws: Workspace) -> list[ModelRecord]:
    """Every model folder in ``Models/`` (hidden and ``.tmp-`` folders skipped), sorted by name."""
    try:
        with os.scandir(ws.models_dir) as it:
            folders = [Path(e.path) for e in it if e.is_dir() and not e.name.startswith(".")]
    except FileNotFoundError:
        return []
    names = metrics_names(ws)
    return [inspect_model(ws, folder, names) for folder in sorted(folders, key=lambda p: p.name.lower())]


def untested_and_broken(ws: Workspace) -> tuple[list[ModelRecord], list[ModelRecord]]:
    """THE meaning of ``--untested``: (models to evaluate, broken folders that are listed but never evaluated).

    Untested = no readable metrics file and a loadable-looking folder; ``llmtui eval --untested``, ``llmtui
    queue add eval --untested`` and the Models screen's "evaluate all untested" all select these.
    """
    records = scan_models(ws)
    return [r for r in records if r.status == "untested"], [r for r in records if r.status == "broken"]


def untested_models(ws: Workspace) -> list[ModelRecord]:
    """The models ``--untested`` evaluates (see :func:`untested_and_broken`)."""
    return untested_and_broken(ws)[0]
