"""The model-folder format — metadata file names, "what kind of folder is this"; any process.

One reading of a folder's small JSON files serves both callers: the model scan's tolerant
:func:`inspect_folder` (problems come back as text, the folder is listed as broken) and the loaders'
strict :func:`detect_kind` (the first problem is raised). Never imports torch: the kind is read from
``quantization_metadata.json``, ``adapter_config.json``, ``training_metadata.json`` and
``config.json``'s ``quantization_config``, never from the folder's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.files import read_json_file

TRAINING_METADATA = "training_metadata.json"
QUANTIZATION_METADATA = "quantization_metadata.json"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
#: The preset a training run used, copied beside its weights (and carried into PTQ outputs).
PRESET_COPY = "preset.toml"
#: Kinds whose checkpoints the PTQ backends load (``engine.runs.ptq_backends.load_quantized``).
BACKEND_KINDS = ("gptq", "awq", "hqq")
#: PTQ methods that bitsandbytes implements (stored as a ``quantization_config`` transformers reads).
BNB_METHODS = ("INT8", "NF4")


class ModelLoadError(ValueError):
    """A model folder cannot be loaded; the message names the folder and the file or field at fault."""


@dataclass
class ModelKind:
    """What a folder holds, as read from its files (``info`` keeps the metadata that was read)."""

    kind: str  # full | adapter | bnb | gptq | awq | hqq
    trust_remote_code: bool = False
    qlora: bool = False
    ptq_output: bool = False  # has quantization_metadata.json: loaded by engine.runs.ptq_backends.load_quantized
    base_model_path: str | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: The parsed metadata files (file name → JSON object, None when absent or unreadable).
    documents: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)


def dig(data: Any, *keys: str) -> Any:
    """``data[k1][k2]…`` or None as soon as a level is missing or not a dict."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def trust_remote_code_of(training: dict[str, Any] | None) -> bool:
    """True only when the preset recorded in ``training_metadata.json`` asked for the model's own code."""
    return dig(training, "training_parameters", "preset", "model", "trust_remote_code") is True


def read_trust_remote_code(model_dir: Path | str) -> bool:
    """:func:`trust_remote_code_of` the folder's ``training_metadata.json`` (False when absent or unreadable)."""
    training, _ = read_json_file(Path(model_dir) / TRAINING_METADATA)
    return trust_remote_code_of(training if isinstance(training, dict) else None)


def _read_object(path: Path) -> tuple[dict[str, Any] | None, str]:
    data, error = read_json_file(path)
    if error:
        return None, f"{path}: cannot be read as JSON ({error.split(': ', 1)[-1]})"
    if data is not None and not isinstance(data, dict):
        return None, f"{path}: expected a JSON object, found {type(data).__name__}"
    return data, ""


def inspect_folder(model_dir: Path | str, present: Iterable[str] | None = None) -> tuple[ModelKind, list[str]]:
    """The tolerant entry point: the folder's kind and every problem found (empty when loadable).

    ``present`` (the folder's file names, when the caller listed it already) saves a stat per file.
    """
    model_dir = Path(model_dir)
    names = set(present) if present is not None else None
    docs: dict[str, dict[str, Any] | None] = {}
    problems: list[str] = []
    for name in (QUANTIZATION_METADATA, TRAINING_METADATA, ADAPTER_CONFIG, MODEL_CONFIG):
        if names is not None and name not in names:
            docs[name] = None
            continue
        docs[name], problem = _read_object(model_dir / name)
        if problem:
            problems.append(problem)
    quant_meta, training = docs[QUANTIZATION_METADATA], docs[TRAINING_METADATA]
    adapter, config = docs[ADAPTER_CONFIG], docs[MODEL_CONFIG]
    unread = any(p.startswith((str(model_dir / ADAPTER_CONFIG), str(model_dir / MODEL_CONFIG))) for p in problems)
    if adapter is None and config is None and not unread:
        problems.append(f"{model_dir}: neither config.json nor adapter_config.json; not a model folder")
    found = ModelKind("full", trust_remote_code=trust_remote_code_of(training),
                      info={"training_metadata": training is not None, "quantization_metadata": quant_meta,
                            "training_quantization": dig(training, "quantization")},
                      documents=docs)
    config_quant = config.get("quantization_config") if isinstance(config, dict) else None
    if quant_meta is not None:
        method = str(quant_meta.get("method", "")).upper()
        if method in BNB_METHODS:
            found.kind = "bnb"
        elif method.lower() in BACKEND_KINDS:
            found.kind = method.lower()
        else:
            problems.append(f"{model_dir / QUANTIZATION_METADATA}: method = {method or None!r} is not one of "
                            f"GPTQ, AWQ, HQQ, INT8, NF4")
        found.quantization = quant_meta
        found.ptq_output = True
    elif adapter is not None:
        found.kind = "adapter"
        found.base_model_path = adapter.get("base_model_name_or_path") or dig(training, "model_info",
                                                                              "base_model_path")
        if not found.base_model_path:
            problems.append(f"{model_dir / ADAPTER_CONFIG}: no base_model_name_or_path, and "
                            f"{TRAINING_METADATA} has no model_info.base_model_path")
        methods = (dig(training, "quantization", "method"), dig(training, "model_info", "quantization_tag"),
                   dig(training, "training_parameters", "preset", "quant", "method"))
        found.qlora = any(isinstance(m, str) and m.upper().startswith("QLORA") for m in methods)
        found.quantization = dig(training, "quantization") or {}
    elif isinstance(config_quant, dict):
        method = str(config_quant.get("quant_method", "")).lower()
        if method.startswith("bitsandbytes"):
            found.kind = "bnb"
        elif method in BACKEND_KINDS:
            found.kind = method
        else:
            problems.append(f"{model_dir / MODEL_CONFIG}: quantization_config.quant_method = {method!r} "
                            f"is not supported (bitsandbytes, gptq, awq, hqq)")
        found.quantization = {"method": method.upper(), **config_quant}
    return found, problems


def detect_kind(model_dir: Path | str) -> ModelKind:
    """The strict entry point: how to load a model folder (raises ModelLoadError naming the first problem)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model folder not found")
    found, problems = inspect_folder(model_dir)
    if problems:
        raise ModelLoadError(problems[0])
    return found
