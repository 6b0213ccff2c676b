"""SFT training runs: full fine-tuning, LoRA/DoRA/VeRA, QLoRA; base snapshots; checkpoints and resume;
data-parallel relaunch (job process).

:func:`train` runs one experiment in this process and writes ``Models/{name}/`` (weights or adapter,
tokenizer, ``training_metadata.json``, ``preset.toml``). It trains in the run's staging folder
(:mod:`engine.staging`: checkpoints every ``train.save_steps``, TensorBoard logs) and renames it to the
model folder at the end, so a failed or killed run never leaves a folder that looks finished, and the
next attempt of the same run continues from its newest complete checkpoint (``train.resume = "auto"``).
The training data are prompt/completion pairs from :func:`engine.data.prompts.render_example`, tokenized
here so the model is trained on exactly the evaluation prompt followed by the answer (no extra EOS
appended). :func:`launch_data_parallel` re-runs a command under ``accelerate launch`` with N processes
(``train.gpus > 1``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.files import promote_dir, staged_dir, write_json, write_text
from engine.presets.config import ExperimentConfig, cross_check
from engine.data.prompts import prompt_format, render_example, tokenize_prompts
from engine.data.tasks import DatasetError, get_task, load_items, task_registry
from engine.events import EventKind, EventWriter
from engine.runs.device import DeviceChoice, HardwareError, choose_device, hardware_info, torch_dtype
from engine.runs.trackers import continue_runs, identity_callback, missing_packages
from engine.runs.train_progress import ProgressEvents, Reporter, progress_callback, stop_callback
from engine.models.folder import PRESET_COPY, TRAINING_METADATA
from engine.models.resolve import ModelNotFoundError, resolve_model_ref
from engine.staging import (CHECKPOINT_PREFIX, TENSORBOARD_DIR, checkpoints, latest_checkpoint,
                            mark_complete, other_runs, remove_checkpoints, run_key, staging_dir)
from engine.workspace import Workspace

#: Held (flock) by the process training in a staging folder: a second process training the same run is refused.
RUN_LOCK = ".llmtui-lock"
#: The tracker runs the first attempt opened, so a resumed attempt continues them.
TRACKERS_FILE = ".llmtui-trackers.json"
log = logging.getLogger("llmtui.train")


class TrainError(RuntimeError):
    """A training run cannot start or failed in a known way; the message says what, where and what to do."""


class TrainStopped(TrainError):
    """Training stopped early on the stop signal (a Slurm time limit or preemption is near): the job should
    exit with :data:`engine.jobs.requeue.REQUEUE_EXIT_CODE` and run again."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    model_name: str
    output_dir: Path | None  # None on data-parallel ranks other than 0 (they save nothing)
    model_type: str  # full | adapter | merged
    metadata: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ checks


def rank() -> int:
    """This process's data-parallel rank (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def in_data_parallel_child() -> bool:
    """True inside a process started by ``accelerate launch``/``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_base(ws: Workspace, config: ExperimentConfig) -> str:
    """The base model as an absolute folder or a hub id; a local-looking path that is missing fails."""
    try:
        return resolve_model_ref(ws, config.model.base)
    except ModelNotFoundError as exc:
        raise TrainError(f"model.base = {exc}; fix the path or use a Hugging Face hub id") from None


def output_dir_for(ws: Workspace, config: ExperimentConfig) -> Path:
    """The final ``Models/{name}`` folder of ``config``."""
    return ws.model_dir(config.output_name())


def preflight(ws: Workspace, config: ExperimentConfig, *, overwrite: bool = False) -> Path:
    """Cheap checks before anything heavy: base model, dataset files, output folder. Returns the output folder."""
    problems = cross_check(config, tuple(task_registry(ws.datasets_dir)))
    if problems:  # a config built in code skips load_preset's validation; the same rules apply here
        raise TrainError("; ".join(str(p) for p in problems))
    resolve_base(ws, config)
    final = output_dir_for(ws, config)
    if final.exists() and not overwrite:
        raise TrainError(f"{final} already exists; pass --overwrite to replace it")
    if config.data.dataset != "none":
        _load_training_items(ws, config, limit=1)
        missing = missing_packages(config.train.report_to)
        if missing:
            raise TrainError(missing)
    return final


def _load_training_items(ws: Workspace, config: ExperimentConfig, limit: int = 0):
    try:
        task = get_task(config.data.dataset, ws.datasets_dir)
        items = load_items(ws.datasets_dir, task, "train", limit or config.data.trunc_train)
    except DatasetError as exc:
        raise TrainError(f"data.dataset = {config.data.dataset!r}: {exc}") from None
    if not items:
        raise TrainError(f"data.dataset = {config.data.dataset!r}: {ws.datasets_dir / task.train_file} has no rows")
    return task, items


# ------------------------------------------------------------------------------------------ model


def _load_tokenizer(source: str, config: ExperimentConfig):
    from engine.runs.loading import ModelLoadError, load_tokenizer

    try:
        return load_tokenizer(source, trust_remote_code=config.model.trust_remote_code, padding_side=None)
    except ModelLoadError as exc:
        raise TrainError(f"model.base = {config.model.base!r}: {exc}") from None


def _bnb_config(choice: DeviceChoice):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch_dtype(choice.compute_dtype))


def _device_map(choice: DeviceChoice) -> dict[str, Any]:
    return {"": "cpu"} if choice.use_cpu else {"": int(os.environ.get("LOCAL_RANK", "0"))}


def _load_model(source: str, config: ExperimentConfig, choice: DeviceChoice, *, qlora: bool, dtype: Any = None):
    """The base model: in ``choice``'s weights dtype, or 4-bit NF4 (double quant) for QLoRA."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": config.model.trust_remote_code,
                              "dtype": dtype if dtype is not None else torch_dtype(choice.weights_dtype)}
    if qlora:
        kwargs.update(quantization_config=_bnb_config(choice), device_map=_device_map(choice))
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (ImportError, RuntimeError) as exc:
        cause = _bitsandbytes_failure(exc) if qlora else None
        if cause is not None:
            raise TrainError(_bnb_message(cause, qlora=True)) from None
        raise
    except (OSError, ValueError) as exc:
        raise TrainError(f"model.base = {config.model.base!r}: cannot load the model ({exc})") from None


def _bitsandbytes_failure(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (causes and contexts) raised by or about bitsandbytes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = f"{type(current).__module__} {current}".lower()
        if "bitsandbytes" in text or "libbitsandbytes" in text:
            found = current
        current = current.__cause__ or current.__context__
    return found


def _bnb_message(exc: BaseException, *, qlora: bool) -> str:
    what = "quant.method = 'QLORA': bitsandbytes cannot load the 4-bit NF4 base" if qlora else \
        "bitsandbytes is installed but cannot be loaded (transformers/peft import it)"
    fix = " or set quant.method = 'NoQuant'" if qlora else " or uninstall it"
    return (f"{what} ({type(exc).__name__}: {exc}). Install a bitsandbytes build that matches this machine's "
            f"CUDA (pip install -U bitsandbytes){fix}")


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


def _wrap_peft(model, config: ExperimentConfig, *, qlora: bool):
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


# ------------------------------------------------------------------------------------------ data


def tokenize_examples(tokenizer, examples: list[dict[str, str]]) -> tuple[dict[str, list], dict[str, int]]:
    """``input_ids`` and ``completion_mask`` columns for prompt/completion pairs, and token statistics.

    The prompt is tokenized alone and with its completion; the loss mask starts where the two token
    sequences diverge (normally right after the prompt). ``prefix_mismatches`` counts examples whose
    tokenized prompt is not a prefix of prompt+completion.
    """
    prompt_ids = tokenize_prompts(tokenizer, [e["prompt"] for e in examples])
    full_ids = tokenize_prompts(tokenizer, [e["prompt"] + e["completion"] for e in examples])
    input_ids, masks, mismatches = [], [], 0
    for alone, full in zip(prompt_ids, full_ids):
        shared = 0
        for a, b in zip(alone, full):
            if a != b:
                break
            shared += 1
        mismatches += shared < len(alone)
        input_ids.append(full)
        masks.append([0] * shared + [1] * (len(full) - shared))
    stats = {"examples": len(examples), "tokens": sum(map(len, input_ids)),
             "completion_tokens": sum(map(sum, masks)), "prefix_mismatches": mismatches,
             "max_tokens": max(map(len, input_ids), default=0)}
    return {"input_ids": input_ids, "completion_mask": masks}, stats


def build_dataset(ws: Workspace, config: ExperimentConfig, tokenizer, split: str = "train", limit: int = 0):
    """The tokenized ``datasets.Dataset`` of a split, built with the shared prompt builder; the statistics
    carry the ``prompt_format`` (the first item's prompt as its example)."""
    from datasets import Dataset

    if split == "train":
        task, items = _load_training_items(ws, config)
    else:
        try:
            task = get_task(config.data.dataset, ws.datasets_dir)
            items = load_items(ws.datasets_dir, task, split, limit)
        except DatasetError as exc:
            raise TrainError(f"data.trunc_eval: {exc}") from None
    try:
        examples = [render_example(tokenizer, task, item) for item in items]
    except Exception as exc:  # a template or a row that cannot be rendered
        raise TrainError(f"data.dataset = {config.data.dataset!r}: cannot build prompts ({type(exc).__name__}: "
                         f"{exc})") from None
    columns, stats = tokenize_examples(tokenizer, examples)
    stats["prompt_format"] = prompt_format(tokenizer, task, items[0]) if items else None
    return Dataset.from_dict(columns), stats


def check_trainer_inputs(trainer, tokenizer) -> None:
    """The sequences the trainer will feed start with at most one BOS (TRL must not have added another; it
    takes our ``input_ids`` as they are in TRL 1.16, and this keeps it so across versions)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return
    dataset = trainer.train_dataset
    sample = dataset.select(range(min(len(dataset), 256)))["input_ids"]  # every row is prepared the same way
    doubled = sum(1 for row in sample if len(row) > 1 and row[0] == row[1] == bos)
    if doubled:
        raise TrainError(f"{doubled} training sequence(s) start with two BOS tokens after the trainer's preparation; "
                         "the prompt builder and the trainer disagree on special tokens")


# ------------------------------------------------------------------------------------------ trainer


def sft_args(config: ExperimentConfig, choice: DeviceChoice, output_dir: str, *, has_eval: bool):
    """The TRL ``SFTConfig`` of a preset (``warmup_ratio`` goes to ``warmup_steps`` as a float); checkpoints
    and TensorBoard logs go to ``output_dir`` (the run's staging folder)."""
    from trl import SFTConfig

    t = config.train
    eval_kwargs: dict[str, Any] = {}
    if has_eval:
        eval_kwargs = {"eval_strategy": "steps", "eval_steps": t.logging_steps * 10,
                       "per_device_eval_batch_size": t.per_device_train_batch_size}
    return SFTConfig(
        output_dir=output_dir, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=float(t.warmup_ratio), weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps, activation_checkpointing=t.gradient_checkpointing, packing=t.packing,
        completion_only_loss=True, max_length=t.max_length,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random", seed=t.seed,
        use_cpu=choice.use_cpu, bf16=choice.mixed == "bf16", fp16=choice.mixed == "fp16",
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit, report_to=[r for r in t.report_to if r != "none"] or "none",
        run_name=config.output_name(), disable_tqdm=True, dataloader_pin_memory=not choice.use_cpu,
        ddp_find_unused_parameters=False, **eval_kwargs)


def _trl_args_dict(args) -> dict[str, Any]:
    """The SFTConfig as plain data (``to_dict`` already masks hub tokens)."""
    return {k: v for k, v in args.to_dict().items() if not k.startswith("_")}


def _quiet_libraries() -> None:
    """No tqdm bars from datasets/transformers: llmtui shows its own progress."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


# ------------------------------------------------------------------------------------------ saving


def _save_merged_qlora(model, config: ExperimentConfig, base_path: str, choice: DeviceChoice, out: Path) -> None:
    """QLoRA merge: the adapter is applied to a full-precision reload of the base, then merged and saved."""
    from peft import PeftModel

    adapter_tmp = out / ".adapter-for-merge"
    model.save_pretrained(adapter_tmp)
    base = _load_model(base_path, config, choice, qlora=False, dtype=torch_dtype(
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
    resolved = None if peft_config is None else _plain(peft_config.target_modules)
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
        "peft_config": _plain(peft_config.to_dict()) if peft_config is not None else None,
        "quantization_config": _plain(quantization_config.to_dict()) if quantization_config is not None else None,
        "quantization": spec.metadata(),
        "training_stats": stats,
        "data": data,
        "hardware_info": hardware,
    }


def _plain(value: Any) -> Any:
    """JSON-ready copy (sets → sorted lists, enums and dtypes → strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _write_extras(out: Path, metadata: dict[str, Any], preset_text: str) -> None:
    write_json(out / TRAINING_METADATA, metadata)
    write_text(out / PRESET_COPY, preset_text)


# ------------------------------------------------------------------------------------------ runs


def train(ws: Workspace, config: ExperimentConfig, *, preset_text: str | None = None, overwrite: bool = False,
          events_path: Path | str | None = None, reporter: Reporter | None = None) -> TrainResult:
    """Run one experiment (or a base snapshot for ``dataset = "none"``) and write its model folder.

    Emits ``start``/``train_step``/``eval``/``saved``/``done`` events (``error`` on failure) to
    ``events_path`` and ``reporter``. Raises :class:`TrainError` with one clear message on known
    failures; nothing is left at the output folder unless the run succeeded.
    """
    main_rank = rank() == 0
    with EventWriter(events_path if main_rank else None) as writer:
        events = ProgressEvents(writer, reporter, enabled=main_rank)
        try:
            if config.data.dataset == "none":
                return _snapshot(ws, config, preset_text or config.to_toml(), overwrite, events)
            return _train(ws, config, preset_text or config.to_toml(), overwrite, events)
        except TrainStopped as exc:
            events.emit(EventKind.STOPPED, message=str(exc))
            raise
        except TrainError as exc:
            events.emit(EventKind.ERROR, message=str(exc))
            raise
        except HardwareError as exc:
            events.emit(EventKind.ERROR, message=str(exc))
            raise TrainError(str(exc)) from None
        except KeyboardInterrupt:
            events.emit(EventKind.ERROR, message="training interrupted; no model was saved")
            raise
        except Exception as exc:
            message = _known_failure(exc, config)
            events.emit(EventKind.ERROR, message=message or f"training failed: {type(exc).__name__}: {exc}")
            if message:
                raise TrainError(message) from None
            raise


def _known_failure(exc: BaseException, config: ExperimentConfig) -> str | None:
    """A clear message for failures with a known remedy (CUDA out of memory, a bitsandbytes build that cannot
    load, e.g. for another CUDA version: it can fail inside ``import transformers``'s trainer machinery)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        t = config.train
        return (f"CUDA out of memory while training (per_device_train_batch_size = {t.per_device_train_batch_size}, "
                f"max_length = {t.max_length}, gradient_checkpointing = {str(t.gradient_checkpointing).lower()}). "
                "Lower train.per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective "
                "batch), lower train.max_length, turn on train.gradient_checkpointing, or use quant.method = 'QLORA'")
    cause = _bitsandbytes_failure(exc)
    if cause is not None:
        return _bnb_message(cause, qlora=config.quant.method == "QLORA")
    return None


def _start_event(events: ProgressEvents, config: ExperimentConfig, base_path: str, final: Path,
                 choice: DeviceChoice | None, **extra: Any) -> None:
    events.emit(EventKind.START, model=config.output_name(), output=str(final), base_model=config.model.base,
                base_model_path=base_path, dataset=config.data.dataset, peft=config.peft.method,
                quant=config.quant.method, device=choice.description if choice else None,
                world_size=int(os.environ.get("WORLD_SIZE", "1")), **extra)


def _snapshot(ws: Workspace, config: ExperimentConfig, preset_text: str, overwrite: bool,
              events: ProgressEvents) -> TrainResult:
    """``dataset = "none"``: save the base model as ``{base}-base`` with metadata, no training."""
    final = preflight(ws, config, overwrite=overwrite)
    base_path = resolve_base(ws, config)
    choice = choose_device(config.model.dtype, full_finetuning=False)
    _start_event(events, config, base_path, final, choice, snapshot=True)
    _quiet_libraries()
    started = time.time()
    tokenizer = _load_tokenizer(base_path, config)
    model = _load_model(base_path, config, choice, qlora=False,
                        dtype="auto" if config.model.dtype == "auto" else torch_dtype(choice.weights_dtype))
    counts = parameter_counts(model)
    if rank() != 0:
        return TrainResult(config.output_name(), None, "full")
    stats = {"total_steps": 0, "epochs_completed": 0.0, "final_loss": None, "train_runtime_s": 0.0,
             "tokens_per_s": None, "snapshot_runtime_s": None}
    with staged_dir(final, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stats["snapshot_runtime_s"] = round(time.time() - started, 3)
        metadata = build_metadata(config, base_path=base_path, model_type="full", counts=(counts[0], 0),
                                  trl_args=None, peft_config=None, quantization_config=None, stats=stats,
                                  hardware=hardware_info(choice), data=None, prompt_format=prompt_format(tokenizer))
        _write_extras(tmp, metadata, preset_text)
    events.emit(EventKind.SAVED, path=str(final))
    events.emit(EventKind.DONE, model=config.output_name(), output=str(final), model_type="full", snapshot=True)
    return TrainResult(config.output_name(), final, "full", metadata)


def _train(ws: Workspace, config: ExperimentConfig, preset_text: str, overwrite: bool,
           events: ProgressEvents) -> TrainResult:
    from transformers import PrinterCallback, set_seed
    from trl import SFTTrainer

    from engine.runs.device import reset_memory_peaks

    final = preflight(ws, config, overwrite=overwrite)
    base_path = resolve_base(ws, config)
    qlora = config.quant.method == "QLORA"
    choice = choose_device(config.model.dtype, full_finetuning=config.peft.method == "NoPeft")
    _quiet_libraries()
    reset_memory_peaks()
    with run_staging(ws, config) as (staging, resume_from):
        tokenizer = _load_tokenizer(base_path, config)
        train_set, data_stats = build_dataset(ws, config, tokenizer)
        eval_set = None
        if config.data.trunc_eval:
            eval_set, _ = build_dataset(ws, config, tokenizer, "test", config.data.trunc_eval)
        set_seed(config.train.seed)  # adapter weights are initialised before the trainer seeds: same seed, same run
        model = _load_model(base_path, config, choice, qlora=qlora)
        model, peft_config = _wrap_peft(model, config, qlora=qlora)
        counts = parameter_counts(model)
        resumed_step = resume_from.step if resume_from else None
        _start_event(events, config, base_path, final, choice, examples=data_stats["examples"],
                     total_params=counts[0], trainable_params=counts[1], resumed_from_step=resumed_step,
                     staging=str(staging))
        if resume_from is not None:
            continue_runs(_read_trackers(staging))
        args = sft_args(config, choice, str(staging), has_eval=eval_set is not None)
        stopper = stop_callback()  # after checkpoint_callback: its save on the stop signal must stand
        callbacks = [progress_callback(events), checkpoint_callback(config.train.save_steps),
                     identity_callback(config.train.report_to, lambda found: _record_trackers(staging, found)), stopper]
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                             processing_class=tokenizer, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)
        check_trainer_inputs(trainer, tokenizer)
        cpu_started = time.process_time()
        output = trainer.train(resume_from_checkpoint=str(resume_from.path) if resume_from else None)
        train_cpu_s = time.process_time() - cpu_started
        if stopper.stopped:
            raise TrainStopped(f"stopped on request at step {trainer.state.global_step} of "
                               f"{trainer.state.max_steps} (time limit or preemption near); run it again to go on")
        state = trainer.state
        runtime = float(output.metrics.get("train_runtime", 0.0))
        steps_run = state.global_step - (resumed_step or 0)  # this attempt's steps (the runtime is this attempt's)
        total_tokens = int(getattr(trainer, "_total_train_tokens", 0) or 0)
        stats = {"total_steps": state.global_step, "epochs_completed": round(float(state.epoch or 0.0), 4),
                 "final_loss": events.last_loss if events.last_loss is not None else float(output.training_loss),
                 "mean_train_loss": float(output.training_loss), "train_runtime_s": round(runtime, 3),
                 "train_steps_per_s": round(steps_run / runtime, 4) if runtime else None,
                 "train_cpu_s": round(train_cpu_s, 3), "resumed_from_step": resumed_step,
                 "tokens_seen": total_tokens, "tokens_per_s": round(total_tokens / runtime, 1) if runtime else None}
        hardware = hardware_info(choice)
        if not trainer.is_world_process_zero():
            return TrainResult(config.output_name(), None, "")
        bnb = _bnb_config(choice) if qlora else None
        _clear_for_final_save(staging)
        model_type = save_model(trainer.model, tokenizer, config, base_path, choice, staging)
        metadata = build_metadata(config, base_path=base_path, model_type=model_type, counts=counts,
                                  trl_args=_plain(_trl_args_dict(args)), peft_config=peft_config,
                                  quantization_config=bnb, stats=stats, hardware=hardware,
                                  data={k: v for k, v in data_stats.items() if k != "prompt_format"},
                                  prompt_format=data_stats["prompt_format"])
        metadata["trackers"] = _read_trackers(staging)
        _write_extras(staging, metadata, preset_text)
        _promote_run(staging, final, overwrite=overwrite, keep_checkpoints=config.train.keep_checkpoints)
    events.emit(EventKind.SAVED, path=str(final))
    events.emit(EventKind.DONE, model=config.output_name(), output=str(final), model_type=model_type,
                steps=stats["total_steps"], final_loss=stats["final_loss"], runtime_s=stats["train_runtime_s"],
                tokens_per_s=stats["tokens_per_s"], resumed_from_step=resumed_step)
    return TrainResult(config.output_name(), final, model_type, metadata)


# ------------------------------------------------------------------------------------------ checkpoints


@contextlib.contextmanager
def run_staging(ws: Workspace, config: ExperimentConfig):
    """Yield ``(staging folder, checkpoint to resume from or None)`` for this run, holding its lock (rank 0).

    Rank 0 first removes the staging folders of earlier runs of the same model name with other settings
    (unless a live process holds them), checkpoints half-written by a process that died mid-save, and
    with ``train.resume = "never"`` this run's checkpoints. On failure the folder is kept when it holds
    a complete checkpoint (the next attempt resumes from it) and removed otherwise.
    """
    name = config.output_name()
    key = run_key(config.to_dict())
    folder = staging_dir(ws.models_dir, name, key)
    if rank() != 0:  # rank 0 prepares the folder; the other ranks only read it
        latest = latest_checkpoint(folder) if config.train.resume == "auto" else None
        yield folder, latest
        return
    for old in other_runs(ws.models_dir, name, key):
        with _lock(old, wait=False) as held:
            if held:
                shutil.rmtree(old, ignore_errors=True)
                log.warning("removed %s: an unfinished run of %s with other settings (its checkpoints cannot be "
                            "resumed by this one)", old.name, name)
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder, wait=False) as held:
        if not held:
            raise TrainError(f"another process is training this run in {folder}; wait for it to end or cancel it")
        found = checkpoints(folder)
        half = [c for c in found if not c.complete]
        if half:
            log.warning("ignored checkpoint(s) at step %s in %s: half-written (the process died while saving)",
                        ", ".join(map(str, remove_checkpoints(half))), folder)
        latest = latest_checkpoint(folder)
        if latest is not None and config.train.resume == "never":
            steps = remove_checkpoints(c for c in found if c.complete)
            log.warning("train.resume = 'never': removed this run's checkpoint(s) at step %s and started over",
                        ", ".join(map(str, steps)))
            latest = None
        if latest is not None:
            log.warning("resuming %s from its checkpoint at step %d (%s)", name, latest.step, latest.path)
        try:
            yield folder, latest
        except BaseException:
            kept = latest_checkpoint(folder)
            if kept is None:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                log.warning("kept the checkpoint at step %d in %s: the next attempt of this run resumes from it",
                            kept.step, folder)
            raise


@contextlib.contextmanager
def _lock(folder: Path, *, wait: bool):
    """Hold ``folder``'s run lock; yields False when another process holds it and ``wait`` is False."""
    try:
        fd = os.open(folder / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # removed meanwhile
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def checkpoint_callback(save_steps: int) -> Any:
    """A ``TrainerCallback`` that marks each checkpoint complete once the trainer's save returned, and skips
    the trainer's extra save at the last step (the final model is written right after it, and that save's
    optimizer state, its largest part, would only be deleted again)."""
    from transformers import TrainerCallback

    class Checkpoints(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save and state.global_step >= state.max_steps and save_steps and \
                    state.global_step % save_steps:
                control.should_save = False

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                mark_complete(Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}")

    return Checkpoints()


def _read_trackers(staging: Path) -> dict[str, Any]:
    try:
        data = json.loads((staging / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_trackers(staging: Path, found: dict[str, Any]) -> None:
    write_json(staging / TRACKERS_FILE, {**_read_trackers(staging), **found})


def _clear_for_final_save(staging: Path) -> None:
    """Remove whatever an attempt that died while saving the final model left (checkpoints, TensorBoard logs
    and llmtui's own files stay)."""
    keep = {TENSORBOARD_DIR, RUN_LOCK, TRACKERS_FILE}
    for entry in staging.iterdir():
        if entry.name in keep or entry.name.startswith(CHECKPOINT_PREFIX):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _promote_run(staging: Path, final: Path, *, overwrite: bool, keep_checkpoints: bool) -> None:
    """Rename the finished staging folder to the model folder, then delete its checkpoints (unless kept)."""
    if final.exists() and not overwrite:
        raise TrainError(f"{final} appeared while this run trained; the trained model stays in {staging} "
                         "(rename it, or train again with --overwrite)")
    (staging / TRACKERS_FILE).unlink(missing_ok=True)
    (staging / RUN_LOCK).unlink(missing_ok=True)
    promote_dir(staging, final)
    if not keep_checkpoints:
        remove_checkpoints(checkpoints(final))


# ------------------------------------------------------------------------------------------ data parallel


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_parallel_command(module_args: list[str], num_processes: int) -> list[str]:
    """``accelerate launch --multi_gpu`` running ``python -m MODULE ARGS`` in ``num_processes`` ranks."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", *module_args]


def launch_data_parallel(module_args: list[str], num_processes: int) -> int:
    """Re-run ``python -m MODULE ARGS`` as ``num_processes`` data-parallel ranks; returns the exit code.

    One rank per CUDA device; without CUDA the ranks run on the CPU (gloo), which
    ``accelerate launch --multi_gpu`` does with ``ACCELERATE_USE_CPU=1`` (``--cpu --num_processes N``
    silently starts one process).
    """
    from engine.jobs.gpu import visible_gpu_count

    gpus = visible_gpu_count()
    env = dict(os.environ)
    if gpus == 0:
        env["ACCELERATE_USE_CPU"] = "1"
    elif gpus < num_processes:
        raise TrainError(f"train.gpus = {num_processes} but only {gpus} CUDA device(s) are visible; lower "
                         "train.gpus or set CUDA_VISIBLE_DEVICES")
    from engine.jobs.requeue import STOP_SIGNAL

    # The launcher would die of the stop signal; it ignores it, and each rank installs its own handler.
    return subprocess.call(data_parallel_command(module_args, num_processes), env=env,
                           preexec_fn=lambda: signal.signal(STOP_SIGNAL, signal.SIG_IGN))
