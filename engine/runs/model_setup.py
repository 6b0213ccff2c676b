"""Model set-up for training (job process): the base model (full precision or QLoRA's 4-bit NF4), its
tokenizer, the PEFT wrapping with resolved target modules, parameter counts, and bitsandbytes failures
said clearly (:mod:`engine.runs.bnb`)."""

from __future__ import annotations

import os
from typing import Any

from engine.presets.config import ExperimentConfig
from engine.runs.bnb import bitsandbytes_failure, bnb_message, nf4_config
from engine.runs.device import DeviceChoice, torch_dtype
from engine.runs.loading import ModelLoadError, load_converting_read, load_tokenizer
from engine.runs.train_errors import TrainError


def load_training_tokenizer(source: str, config: ExperimentConfig):
    try:
        return load_tokenizer(source, trust_remote_code=config.model.trust_remote_code, padding_side=None)
    except ModelLoadError as exc:
        raise TrainError(f"model.base = {config.model.base!r}: {exc}") from None


def device_map_for(choice: DeviceChoice) -> dict[str, Any]:
    return {"": "cpu"} if choice.use_cpu else {"": int(os.environ.get("LOCAL_RANK", "0"))}


def load_base_model(source: str, config: ExperimentConfig, choice: DeviceChoice, *, qlora: bool, dtype: Any = None):
    """The base model: in ``choice``'s weights dtype, or 4-bit NF4 (double quant) for QLoRA."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": config.model.trust_remote_code,
                              "dtype": dtype if dtype is not None else torch_dtype(choice.weights_dtype)}
    if qlora:
        kwargs.update(quantization_config=nf4_config(torch_dtype(choice.compute_dtype)),
                      device_map=device_map_for(choice))
    try:
        if not qlora or choice.use_cpu:
            # read tensor by tensor: no stored-dtype copy beside the converted (or quantized) one — 1B QLoRA's
            # base load on the CPU 5.20 → 3.46 GB, the same logits
            model = load_converting_read(source, device="cpu", dtype=kwargs["dtype"],
                                         trust_remote_code=config.model.trust_remote_code,
                                         quantization_config=kwargs.get("quantization_config"))
            if model is not None:
                return model
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (ImportError, RuntimeError) as exc:
        cause = bitsandbytes_failure(exc) if qlora else None
        if cause is not None:
            raise TrainError(bnb_message(cause, qlora=True)) from None
        raise
    except (OSError, ValueError) as exc:
        raise TrainError(f"model.base = {config.model.base!r}: cannot load the model ({exc})") from None


def _linear_modules(model) -> dict[str, list[str]]:
    """Full names of the model's linear layers (torch Linear and bitsandbytes' 4-bit Linear, a subclass;
    transformers' Conv1D), by leaf name."""
    import torch

    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        linear_types += (Conv1D,)
    except ImportError:  # an older transformers without Conv1D there: torch Linear still covers most models
        pass
    found: dict[str, list[str]] = {}
    for full_name, module in model.named_modules():
        if isinstance(module, linear_types) and "." in full_name:
            found.setdefault(full_name.rsplit(".", 1)[1], []).append(full_name)
    return found


def resolve_target_modules(model, config: ExperimentConfig) -> list[str] | str:
    """``peft.target_modules`` for this model: ``"attention"`` becomes the attention projections it has,
    ``"all-linear"`` stays PEFT's keyword, and a listed module that is not in the model is a TrainError
    naming the linear modules that are."""
    from engine.presets.targets import ALL_LINEAR, ATTENTION, expand

    linear = _linear_modules(model)
    head = getattr(model.get_output_embeddings(), "weight", None) if hasattr(model, "get_output_embeddings") else None
    head_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                  if head is not None and getattr(module, "weight", None) is head}
    attention = [leaf for leaf, names in linear.items()
                 if any(any(part in ("self_attn", "attention", "attn", "self_attention") for part in n.split(".")[:-1])
                        for n in names)]
    requested = list(config.peft.target_modules)
    where = f"peft.target_modules = {requested}"
    if ATTENTION in requested and not attention:
        raise TrainError(f"{where}: found no attention projections in {config.model.base!r} to resolve "
                         f"{ATTENTION!r} to; list the modules (its linear layers: {', '.join(sorted(linear))})")
    resolved = expand(requested, attention)
    if resolved == ALL_LINEAR:
        return resolved
    known = {name for names in linear.values() for name in names}
    missing = [m for m in resolved if m not in linear and not any(n.endswith("." + m) or n == m for n in known)]
    if missing:
        model_type = getattr(getattr(model, "config", None), "model_type", "?")
        available = sorted(set(linear) - head_names)
        raise TrainError(f"{where}: {', '.join(missing)} not in {config.model.base!r} ({model_type}); its linear "
                         f"modules are {', '.join(available)} (or use \"{ATTENTION}\" / \"{ALL_LINEAR}\")")
    return resolved


def peft_config_for(config: ExperimentConfig, target_modules: list[str] | str | None = None):
    """The PEFT config of ``config.peft`` (None for full fine-tuning) on ``target_modules`` (as resolved by
    :func:`resolve_target_modules`; the preset's list when not given)."""
    peft = config.peft
    targets = list(peft.target_modules) if target_modules is None else target_modules
    if peft.method == "NoPeft":
        return None
    if peft.method in ("LoRa", "DoRa"):
        from peft import LoraConfig

        return LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout,
                          target_modules=targets, bias="none", task_type="CAUSAL_LM",
                          use_dora=peft.method == "DoRa")
    if peft.method == "VeRa":
        from peft import VeraConfig

        return VeraConfig(r=peft.r, target_modules=targets, vera_dropout=peft.dropout,
                          d_initial=peft.vera_d_initial, task_type="CAUSAL_LM", save_projection=True)
    raise TrainError(f"peft.method = {peft.method!r} is not supported (NoPeft, LoRa, DoRa, VeRa)")


def wrap_peft(model, config: ExperimentConfig, *, qlora: bool):
    from peft import get_peft_model, prepare_model_for_kbit_training

    if config.peft.method == "NoPeft":
        return model, None
    peft_config = peft_config_for(config, resolve_target_modules(model, config))
    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.train.gradient_checkpointing)
    try:
        model = get_peft_model(model, peft_config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        combo = f"peft.method = {config.peft.method!r}" + (" with quant.method = 'QLORA'" if qlora else "")
        raise TrainError(f"{combo} cannot be applied to {config.model.base!r} with peft.target_modules = "
                         f"{peft_config.target_modules}: {exc}") from None
    return model, peft_config


def parameter_counts(model) -> tuple[int, int]:
    """(total, trainable) parameters; 4-bit packed weights count as their unpacked size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(total), int(trainable)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(total), int(trainable)
