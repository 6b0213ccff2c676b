"""Saving a trained model (job process): weights, adapter or merged model, tokenizer, and the
``training_metadata.json`` and ``preset.toml`` beside them."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.files import write_json, write_text
from engine.models.folder import PRESET_COPY, TRAINING_METADATA
from engine.presets.config import ExperimentConfig
from engine.runs.device import DeviceChoice, torch_dtype
from engine.runs.model_setup import load_base_model


def _save_merged_qlora(model, config: ExperimentConfig, base_path: str, choice: DeviceChoice, out: Path) -> None:
    """QLoRA merge: the adapter is applied to a full-precision reload of the base, then merged and saved."""
    from peft import PeftModel

    adapter_tmp = out / ".adapter-for-merge"
    model.save_pretrained(adapter_tmp)
    base = load_base_model(base_path, config, choice, qlora=False, dtype=torch_dtype(
        choice.compute_dtype if not choice.use_cpu else "float32"))
    merged = PeftModel.from_pretrained(base, str(adapter_tmp)).merge_and_unload()
    shutil.rmtree(adapter_tmp)
    merged.config.use_cache = True
    merged.save_pretrained(out)


def save_model(model, tokenizer, config: ExperimentConfig, base_path: str, choice: DeviceChoice, out: Path) -> str:
    """Write weights (or the adapter) and tokenizer into ``out``; returns the model type."""
    qlora = config.quant.method == "QLORA"
    if config.peft.method == "NoPeft":
        model.config.use_cache = True
        model.save_pretrained(out)
        kind = "full"
    elif config.quant.merge_after_train:
        if qlora:
            _save_merged_qlora(model, config, base_path, choice, out)
        else:
            merged = model.merge_and_unload()
            merged.config.use_cache = True
            merged.save_pretrained(out)
        kind = "merged"
    else:
        for adapter_config in model.peft_config.values():
            adapter_config.base_model_name_or_path = base_path
        model.save_pretrained(out)
        kind = "adapter"
    tokenizer.save_pretrained(out)
    return kind


def build_metadata(config: ExperimentConfig, *, base_path: str, model_type: str, counts: tuple[int, int],
                   trl_args: dict[str, Any] | None, peft_config: Any, quantization_config: Any,
                   stats: dict[str, Any], hardware: dict[str, Any], data: dict[str, Any] | None,
                   prompt_format: dict[str, Any] | None = None) -> dict[str, Any]:
    """``training_metadata.json``: the legacy scripts' sections (see the model folder contract), the prompt format the
    model was trained with, and ``target_modules`` (as the preset asked, and as resolved for this model)."""
    spec = config.quant_spec()
    total, trainable = counts
    resolved = None if peft_config is None else plain(peft_config.target_modules)
    return {
        "prompt_format": prompt_format,
        "target_modules": None if peft_config is None else {
            "requested": list(config.peft.target_modules),
            "resolved": sorted(resolved) if isinstance(resolved, list) else resolved},
        "model_info": {
            "model_name": config.output_name(), "base_model": config.model.base, "base_model_path": base_path,
            "fine_tuning_date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_type": model_type, "quantization_tag": spec.tag, "has_quantization": spec.is_quantized,
            "total_params": total, "trainable_params": trainable,
            "percentage_trainable": round(100.0 * trainable / total, 4) if total else 0.0,
        },
        "training_parameters": {"preset": config.to_dict(), "trl_args": trl_args},
        "peft_config": plain(peft_config.to_dict()) if peft_config is not None else None,
        "quantization_config": plain(quantization_config.to_dict()) if quantization_config is not None else None,
        "quantization": spec.metadata(),
        "training_stats": stats,
        "data": data,
        "hardware_info": hardware,
    }


def plain(value: Any) -> Any:
    """JSON-ready copy (sets → sorted lists, enums and dtypes → strings)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_extras(out: Path, metadata: dict[str, Any], preset_text: str) -> None:
    write_json(out / TRAINING_METADATA, metadata)
    write_text(out / PRESET_COPY, preset_text)
