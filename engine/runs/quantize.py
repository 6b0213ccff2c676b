"""Post-training quantization: GPTQ and AWQ (GPTQModel), HQQ (hqq), INT8 and NF4 (bitsandbytes) (job process).

:func:`quantize_model` turns a full-precision model folder — a training output, a merged adapter, a base
snapshot, or an adapter folder (merged into its base first) — into ``Models/{source}_{tag}/``: the
backend's weights, the tokenizer and chat template, the source's ``training_metadata.json``,
``preset.toml`` and ``generation_config.json``, and ``quantization_metadata.json``. The folder is
written through :func:`engine.files.staged_dir`, so a failed run leaves nothing behind.
Non-quantized weights (embeddings, norms, the lm head) are stored in float16, as the ``headfp16`` tag says.
Loading the outputs is :mod:`engine.runs.ptq_backends`'s. Each backend is imported inside the function that uses it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.data.prompts import tokenize_prompts
from engine.files import staged_dir, write_json
from engine.results.retire import retire_results
from engine.runs.calibration import Calibration, CalibrationError, load_calibration
from engine.runs.ptq_backends import QuantizeError, backend_version, import_backend
from engine.presets.requests import GROUPED_PTQ_METHODS, PTQ_GROUP_SIZES, QuantizeRequest, default_bits, ptq_problems
from engine.events import EventKind, EventWriter
from engine.presets.naming import PTQ_METHODS, QuantizationSpec, ptq_output_name, ptq_spec
from engine.models.folder import PRESET_COPY, QUANTIZATION_METADATA, TRAINING_METADATA, ModelLoadError, detect_kind
from engine.models.resolve import ModelNotFoundError, resolve_model_folder
from engine.workspace import UnsafeNameError, Workspace, safe_name

METHODS = tuple(m.lower() for m in PTQ_METHODS)
#: Methods that need calibration text.
CALIBRATED = ("GPTQ", "AWQ")
DEFAULT_GROUP_SIZE = QuantizeRequest().group_size
DEFAULT_SAMPLES = QuantizeRequest().samples
STAGES = ("prepare", "calibration", "quantize", "save")
#: Files copied from the source folder into the output when present.
CARRIED_FILES = (TRAINING_METADATA, PRESET_COPY)


# ----------------------------------------------------------------------------------------- checks


def quantization_spec(method: str, bits: int | None = None, group_size: int | None = None) -> QuantizationSpec:
    """The validated spec of a PTQ run; ``None`` (or 0) bits and a ``None`` group size take the method's defaults.

    Raises :class:`QuantizeError` for an unknown method or bits/group size the backend does not support.
    INT8 and NF4 have no group size (any given one is ignored).
    """
    name = str(method).upper()
    if name not in PTQ_METHODS:
        raise QuantizeError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    bits = bits or default_bits(name)
    if name in GROUPED_PTQ_METHODS:
        group_size = DEFAULT_GROUP_SIZE if group_size is None else group_size
    problems = ptq_problems(name, bits, group_size)
    if problems:
        raise QuantizeError(next(iter(problems.values())))
    return ptq_spec(name, bits, (group_size or None) if name in GROUPED_PTQ_METHODS else None)


def resolve_source(ws: Workspace, ref: str | Path) -> Path:
    """The source model folder: a path, or a model name in ``Models/``."""
    try:
        return resolve_model_folder(ws, ref)
    except ModelNotFoundError as exc:
        raise QuantizeError(f"source model {exc}") from None


def check_source(source: Path, trust_remote_code: bool = False):
    """How to read ``source`` (an ``engine.runs.loading.ModelKind``); refuses folders that are already quantized."""
    try:
        found = detect_kind(source, trust_remote_code=trust_remote_code)
    except ModelLoadError as exc:
        raise QuantizeError(str(exc)) from None
    if found.kind not in ("full", "adapter"):
        how = (QUANTIZATION_METADATA if (source / QUANTIZATION_METADATA).is_file()
               else "config.json's quantization_config")
        raise QuantizeError(f"{source} is already quantized ({found.kind}, per its {how}); "
                            "quantize its full-precision source instead")
    return found


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else config


def check_group_size(model_dir: Path, spec: QuantizationSpec) -> None:
    """The group size must divide every linear layer's input width (read from ``config.json``)."""
    if not spec.group_size:
        return
    try:
        config = _text_config(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return  # the backend reports an unreadable config with its own message
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    widths = {"hidden_size": hidden, "intermediate_size": config.get("intermediate_size")}
    if isinstance(hidden, int) and isinstance(heads, int) and heads:
        widths["num_attention_heads × head_dim"] = heads * (config.get("head_dim") or hidden // heads)
    for field, width in widths.items():
        if isinstance(width, int) and width % spec.group_size:
            fits = [g for g in PTQ_GROUP_SIZES[1:] if all(not isinstance(w, int) or w % g == 0 for w in widths.values())]
            raise QuantizeError(f"{spec.method} group size {spec.group_size} does not divide the model's {field} = "
                                f"{width} ({model_dir / 'config.json'}); use {', '.join(map(str, fits)) or '0'}")


def folder_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------- backends


def _quantize_gptqmodel(fp_dir: Path, out: Path, spec: QuantizationSpec, calibration: Calibration, device: str,
                        trust_remote_code: bool, tokenizer: Any) -> dict[str, Any]:
    """GPTQ or AWQ with GPTQModel (AWQ in the GEMM format, which transformers and GPTQModel both load).

    The calibration texts go in as token ids from the one prompt tokenizer: GPTQModel would tokenize raw text
    with the tokenizer's special tokens, a second BOS after the one a chat template writes."""
    import_backend("gptqmodel", spec.method)
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD

    group_size = spec.group_size or -1
    options: dict[str, Any] = {"bits": spec.weights_bits, "group_size": group_size, "sym": spec.symmetric}
    if spec.method == "AWQ":
        options.update(quant_method=METHOD.AWQ, format=FORMAT.GEMM)
        extras = {"format": "gemm", "zero_point": not spec.symmetric}
    else:
        # GPTQModel's act-group-aware ordering needs groups; per-channel quantization turns it off.
        options["act_group_aware"] = group_size > 0
        extras = {"format": "gptq", "desc_act": False, "act_group_aware": group_size > 0}
    if not device.startswith("cuda"):
        # The pure-torch packer: GPTQModel's default CPU packer first compiles a C++ extension (minutes, and a
        # compiler must be present); packing is a small part of the run.
        options["pack_impl"] = "original"
        if spec.method == "GPTQ":
            # GPTQ's disk offload on the CPU added its lazy copy of the model and the offloaded modules read
            # back (0.6B: 5.12 -> 4.15 GB without; 2 layers: 2.55 -> 2.16 GB). AWQ measured 1.04x its floor
            # with the offload (0.6B, 2.95 GB) and keeps it.
            options["offload_to_disk"] = False
    model = GPTQModel.load(str(fp_dir), QuantizeConfig(**options), device=device, dtype=torch.float16,
                           trust_remote_code=trust_remote_code)
    model.quantize(tokenize_prompts(tokenizer, list(calibration.texts)))
    model.save(str(out))
    return extras


def _quantize_hqq(fp_dir: Path, out: Path, spec: QuantizationSpec, device: str,
                  trust_remote_code: bool) -> dict[str, Any]:
    """HQQ with the hqq library (data-free, zero point and scale per group)."""
    import_backend("hqq", spec.method)
    import torch
    from hqq.core.quantize import BaseQuantizeConfig
    from hqq.models.hf.base import AutoHQQHFModel
    from transformers import AutoModelForCausalLM

    from engine.runs.loading import load_converting_read

    # read tensor by tensor: the bf16 file's mapped pages would otherwise stay resident beside the float16 copy
    model = load_converting_read(fp_dir, device="cpu", dtype=torch.float16, trust_remote_code=trust_remote_code)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(str(fp_dir), dtype=torch.float16,
                                                     trust_remote_code=trust_remote_code)
    config = BaseQuantizeConfig(nbits=spec.weights_bits, group_size=spec.group_size)
    AutoHQQHFModel.quantize_model(model, quant_config=config, compute_dtype=torch.float16, device=device)
    AutoHQQHFModel.save_quantized(model, str(out))
    return {"axis": 1, "compute_dtype": "float16", "format": "hqq qmodel.pt"}


def _quantize_bnb(fp_dir: Path, out: Path, spec: QuantizationSpec, device: str,
                  trust_remote_code: bool) -> dict[str, Any]:
    """INT8 (LLM.int8) or NF4 with bitsandbytes, saved with a ``quantization_config`` transformers reloads."""
    import_backend("bitsandbytes", spec.method)
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from engine.runs.bnb import nf4_config

    if spec.method == "INT8":
        config = BitsAndBytesConfig(load_in_8bit=True)
        extras = {"llm_int8_threshold": config.llm_int8_threshold}
    else:
        config = nf4_config(torch.float16, double_quant=False)
        extras = {"quant_type": "nf4", "double_quant": False, "compute_dtype": "float16", "blocksize": 64}
    model = AutoModelForCausalLM.from_pretrained(str(fp_dir), quantization_config=config, dtype=torch.float16,
                                                 device_map={"": device}, trust_remote_code=trust_remote_code)
    model.save_pretrained(str(out))
    return extras


def _run_backend(fp_dir: Path, out: Path, spec: QuantizationSpec, calibration: Calibration | None, device: str,
                 trust_remote_code: bool, tokenizer: Any) -> dict[str, Any]:
    if spec.method in CALIBRATED:
        assert calibration is not None
        return _quantize_gptqmodel(fp_dir, out, spec, calibration, device, trust_remote_code, tokenizer)
    if spec.method == "HQQ":
        return _quantize_hqq(fp_dir, out, spec, device, trust_remote_code)
    return _quantize_bnb(fp_dir, out, spec, device, trust_remote_code)


def _backend_failure(exc: BaseException, spec: QuantizationSpec, source: Path, fp_dir: Path) -> str:
    from engine.presets.targets import model_type_of

    text = str(exc)
    if "out of memory" in text.lower():
        return (f"out of memory while quantizing {source.name} with {spec.method}"
                + (": lower --samples" if spec.method in CALIBRATED else ""))
    architecture = model_type_of(fp_dir) or "unknown"
    return (f"{spec.method} quantization of {source.name} (architecture {architecture!r}, backend {spec.backend}) "
            f"failed: {type(exc).__name__}: {text}")


# ------------------------------------------------------------------------------------------ the run


def _training_dataset(training: dict[str, Any]) -> str | None:
    preset = (training.get("training_parameters") or {}).get("preset") or {}
    dataset = (preset.get("data") or {}).get("dataset") if isinstance(preset, dict) else None
    return dataset if isinstance(dataset, str) else None


def _source_tokenizer(source: Path, found: Any):
    """The source's tokenizer (an adapter folder's own, else its base's), saved unchanged into the output."""
    from engine.runs.loading import ModelLoadError, load_tokenizer

    try:
        return load_tokenizer(source, trust_remote_code=found.trust_remote_code, fallback=found.base_model_path,
                              padding_side=None, pad_with_eos=False)
    except ModelLoadError as exc:
        raise QuantizeError(str(exc)) from None


@contextlib.contextmanager
def _full_precision_folder(ws: Workspace, source: Path, found: Any):
    """``source`` itself, or for an adapter a temporary folder with the adapter merged into its base."""
    if found.kind != "adapter":
        yield source
        return
    from engine.runs.loading import ModelLoadError, load_full_precision

    scratch = ws.state_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="merge-", dir=scratch))
    try:
        try:
            model, _ = load_full_precision(source, device="cpu", trust_remote_code=found.trust_remote_code)
        except ModelLoadError as exc:
            raise QuantizeError(f"cannot merge the adapter {source} into its base: {exc}") from None
        model.save_pretrained(str(folder))
        del model
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _resolve_device(device: str | None) -> str:
    from engine.runs.loading import resolve_device

    return resolve_device(device)


def quantize_model(ws: Workspace, source_dir: str | Path, method: str, bits: int | None = None,
                   group_size: int | None = None, calibration: str | None = None, samples: int = DEFAULT_SAMPLES,
                   out_name: str | None = None, events: EventWriter | None = None, *, overwrite: bool = False,
                   device: str | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """Quantize ``source_dir`` (a folder or a model name in ``Models/``) with ``method`` into ``Models/``.

    ``calibration`` (GPTQ/AWQ only): a text file, a dataset name, or empty for the source's training
    dataset; ``samples`` texts are used. Emits ``start``, ``quantize_progress``, ``saved``, ``done`` (or
    ``error``) events. Returns ``{model_name, output_dir, method, quant_tag, duration_s, size_before_bytes,
    size_after_bytes, metadata}``. Raises :class:`QuantizeError` with one clear message.
    """
    events = events or EventWriter(None)
    try:
        return _quantize(ws, source_dir, method, bits, group_size, calibration, samples, out_name, events,
                         overwrite=overwrite, device=device, trust_remote_code=trust_remote_code)
    except QuantizeError as exc:
        events.emit(EventKind.ERROR, message=str(exc))
        raise
    except KeyboardInterrupt:
        events.emit(EventKind.ERROR, message="quantization interrupted; no model was saved")
        raise
    except Exception as exc:
        events.emit(EventKind.ERROR, message=f"quantization failed: {type(exc).__name__}: {exc}")
        raise


def _quantize(ws: Workspace, source_dir: str | Path, method: str, bits: int | None, group_size: int | None,
              calibration_choice: str | None, samples: int, out_name: str | None, events: EventWriter, *,
              overwrite: bool, device: str | None, trust_remote_code: bool) -> dict[str, Any]:
    spec = quantization_spec(method, bits, group_size)
    if spec.method in CALIBRATED and samples < 1:
        raise QuantizeError(f"--samples must be at least 1, not {samples}")
    if spec.method not in CALIBRATED and (calibration_choice or "").strip():
        raise QuantizeError(f"{spec.method} is data-free and takes no calibration ({calibration_choice!r})")
    source = resolve_source(ws, source_dir)
    found = check_source(source, trust_remote_code)
    try:
        name = safe_name(out_name) if out_name else ptq_output_name(source.name, spec)
    except UnsafeNameError as exc:
        raise QuantizeError(f"--out: {exc}") from None
    final = ws.models_dir / name
    if final.resolve() == source:
        raise QuantizeError(f"the output {final} would replace its own source; choose another --out")
    if final.exists() and not overwrite:
        raise QuantizeError(f"{final} already exists (use --overwrite to replace it)")
    config_dir = source if found.kind == "full" else Path(found.base_model_path or "")
    if config_dir.is_dir():
        check_group_size(config_dir, spec)
    device = _resolve_device(device)
    training = found.documents.get(TRAINING_METADATA) or {}
    total = len(STAGES)

    def progress(stage: str) -> None:
        events.emit(EventKind.QUANTIZE_PROGRESS, stage=stage, done=STAGES.index(stage), total=total)

    events.emit(EventKind.START, model=name, output=str(final), source=str(source), source_kind=found.kind,
                method=spec.method, bits=spec.weights_bits, group_size=spec.group_size, device=device)
    started = time.perf_counter()
    progress("prepare")
    with _full_precision_folder(ws, source, found) as fp_dir:
        tokenizer = _source_tokenizer(source, found)
        progress("calibration")
        calibration = None
        if spec.method in CALIBRATED:
            try:
                calibration = load_calibration(ws, calibration_choice, tokenizer=tokenizer,
                                               default_dataset=_training_dataset(training), samples=samples)
            except CalibrationError as exc:
                raise QuantizeError(str(exc)) from None
            spec = replace(spec, calibration=calibration.source)
        size_before = folder_size(fp_dir)
        replaced = final.exists()
        with staged_dir(final, overwrite=overwrite) as tmp:
            progress("quantize")
            try:
                extras = _run_backend(fp_dir, tmp, spec, calibration, device, found.trust_remote_code, tokenizer)
            except QuantizeError:
                raise
            except Exception as exc:
                raise QuantizeError(_backend_failure(exc, spec, source, fp_dir)) from exc
            progress("save")
            tokenizer.save_pretrained(str(tmp))
            if (fp_dir / "generation_config.json").is_file():
                shutil.copy2(fp_dir / "generation_config.json", tmp / "generation_config.json")
            for carried in CARRIED_FILES:
                if (source / carried).is_file():
                    shutil.copy2(source / carried, tmp / carried)
            spec = replace(spec, extras={**extras, "storage_dtype": "float16"})
            metadata = {
                **spec.metadata(),
                "backend_version": backend_version(spec.backend or ""),
                "calibration": calibration.metadata() if calibration else None,
                "source_model": source.name,
                "source_model_path": str(source),
                "source_kind": found.kind,
                "device": device,
                "quantized_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "duration_s": round(time.perf_counter() - started, 3),
                "size_before_bytes": size_before,
                "size_after_bytes": folder_size(tmp),
            }
            write_json(tmp / QUANTIZATION_METADATA, metadata)
    if replaced:
        retire_results(ws, name)
    events.emit(EventKind.QUANTIZE_PROGRESS, stage="done", done=total, total=total)
    events.emit(EventKind.SAVED, path=str(final))
    result = {"model_name": name, "output_dir": str(final), "method": spec.method, "quant_tag": spec.tag,
              "duration_s": metadata["duration_s"], "size_before_bytes": size_before,
              "size_after_bytes": metadata["size_after_bytes"], "metadata": metadata}
    events.emit(EventKind.DONE, **{k: v for k, v in result.items() if k != "metadata"})
    return result
