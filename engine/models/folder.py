"""The model-folder format — metadata file names, "what kind of folder is this"; any process.

One reading of a folder's small JSON files serves both callers: the model scan's tolerant
:func:`inspect_folder` (problems come back as text, the folder is listed as broken) and the loaders'
strict :func:`detect_kind` (the first problem is raised). Never imports torch: the kind is read from
``quantization_metadata.json``, ``adapter_config.json``, ``training_metadata.json`` and
``config.json``'s ``quantization_config``, never from the folder's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.files import read_json_file
from engine.models.safetensors_header import SafetensorsError, parameter_count, read_header

TRAINING_METADATA = "training_metadata.json"
QUANTIZATION_METADATA = "quantization_metadata.json"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
#: Files a tokenizer is loaded from (any one is enough); without them transformers builds an empty tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
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
    #: The user's choice for this load (``detect_kind``'s argument); never read from the folder.
    trust_remote_code: bool = False
    #: Why loading would run the folder's own Python code ("" when it would not): see :func:`refuse_remote_code`.
    remote_code: str = ""
    #: Parameters counted from the ``.safetensors`` headers (None when there are none).
    params: int | None = None
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


def remote_code_reason(model_dir: Path, docs: dict[str, dict[str, Any] | None]) -> str:
    """Why loading the folder would run Python shipped inside it ("" when it would not).

    Read from the folder's own files only to *refuse*: whether such code runs is the user's call (a preset's
    ``model.trust_remote_code`` or ``--trust-remote-code``), never metadata that came with the folder.
    """
    for name in (MODEL_CONFIG, TOKENIZER_CONFIG):
        auto_map = dig(docs.get(name), "auto_map")
        if auto_map:
            return f"{name} has an auto_map ({_auto_map_text(auto_map)}): loading it runs the folder's own Python code"
    return ""


def _auto_map_text(auto_map: Any) -> str:
    values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    return ", ".join(sorted({str(v[0] if isinstance(v, list) and v else v) for v in values}))[:120]


def refuse_remote_code(model_dir: Path | str, found: ModelKind, trust_remote_code: bool) -> None:
    """THE trust rule: raise ModelLoadError when the folder needs its own code and the user did not ask for it."""
    if found.remote_code and not trust_remote_code:
        raise ModelLoadError(f"{model_dir}: {found.remote_code}; llmtui runs a model folder's code only when you "
                             f"ask: pass --trust-remote-code (or set model.trust_remote_code = true in the preset) "
                             f"if you trust it")


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
    for name in (QUANTIZATION_METADATA, TRAINING_METADATA, ADAPTER_CONFIG, MODEL_CONFIG, TOKENIZER_CONFIG):
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
    found = ModelKind("full", remote_code=remote_code_reason(model_dir, docs),
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
    try:
        listed = names if names is not None else set(os.listdir(model_dir))
    except OSError:
        listed = set()
    has_weights = any(n.endswith((".safetensors", ".bin")) for n in listed)
    if found.kind != "adapter" and has_weights and not listed & set(TOKENIZER_FILES):
        problems.append(f"{model_dir}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); copy the "
                        f"tokenizer of the model it was made from into the folder")
    for weight in sorted(n for n in listed if n.endswith(".safetensors")):
        try:
            found.params = (found.params or 0) + parameter_count(read_header(model_dir / weight))
        except SafetensorsError as exc:
            problems.append(f"{model_dir / weight}: {str(exc).removeprefix(weight + ': ')}")
    return found, problems


def detect_kind(model_dir: Path | str, *, trust_remote_code: bool = False) -> ModelKind:
    """The strict entry point: how to load a model folder (raises ModelLoadError naming the first problem).

    ``trust_remote_code`` is the user's choice for this load (a preset key or a command's flag); a folder
    that needs its own code is refused without it (:func:`refuse_remote_code`).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model folder not found")
    found, problems = inspect_folder(model_dir)
    if problems:
        raise ModelLoadError(problems[0])
    refuse_remote_code(model_dir, found, trust_remote_code)
    found.trust_remote_code = trust_remote_code
    return found
