"""SFT training runs: full fine-tuning, LoRA/DoRA/VeRA, QLoRA; base snapshots; checkpoints and resume (job process).

:func:`train` runs one experiment in this process and writes ``Models/{name}/`` (weights or adapter,
tokenizer, ``training_metadata.json``, ``preset.toml``). It trains in the run's staging folder
(:mod:`engine.runs.train_staging`: checkpoints every ``train.save_steps``, TensorBoard logs) and renames it to
the model folder at the end, so a failed or killed run never leaves a folder that looks finished, and the
next attempt of the same run continues from its newest complete checkpoint (``train.resume = "auto"``).
The steps live beside it, one idea each: model set-up (:mod:`engine.runs.model_setup`), data and tokenising
(:mod:`engine.runs.train_data`), trainer settings (:mod:`engine.runs.train_args`), saving and metadata
(:mod:`engine.runs.train_save`), data-parallel relaunch (:mod:`engine.runs.data_parallel`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data.prompts import prompt_format
from engine.data.tasks import task_registry
from engine.events import EventKind, EventWriter
from engine.files import staged_dir
from engine.fault_points import pause_point
from engine.models.resolve import ModelNotFoundError, resolve_model_ref
from engine.results.retire import retire_results
from engine.presets.config import ExperimentConfig, cross_check
from engine.runs.data_parallel import rank
from engine.runs.device import DeviceChoice, HardwareError, choose_device, hardware_info, torch_dtype
from engine.runs.bnb import bitsandbytes_failure, bnb_message, nf4_config
from engine.runs.model_setup import load_base_model, load_training_tokenizer, parameter_counts, wrap_peft
from engine.runs.trackers import continue_runs, identity_callback, missing_packages
from engine.runs.train_args import quiet_libraries, sft_args, trl_args_dict
from engine.runs.train_data import build_dataset, check_trainer_inputs, load_training_items
from engine.runs.train_errors import TrainError, TrainStopped
from engine.runs.train_progress import (AlreadyTrained, ProgressEvents, Reporter, max_steps_guard, progress_callback,
                                       stop_callback)
from engine.runs.train_save import build_metadata, plain, save_model, write_extras
from engine.runs.train_staging import (checkpoint_callback, clear_for_final_save, promote_run, read_trackers,
                                       record_trackers, run_staging)
from engine.workspace import Workspace


@dataclass
class TrainResult:
    """What a finished run produced."""

    model_name: str
    output_dir: Path | None  # None on data-parallel ranks other than 0 (they save nothing)
    model_type: str  # full | adapter | merged
    metadata: dict[str, Any] = field(default_factory=dict)


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
        load_training_items(ws, config, limit=1)
        missing = missing_packages(config.train.report_to)
        if missing:
            raise TrainError(missing)
    return final


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
    cause = bitsandbytes_failure(exc)
    if cause is not None:
        return bnb_message(cause, qlora=config.quant.method == "QLORA")
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
    quiet_libraries()
    started = time.time()
    tokenizer = load_training_tokenizer(base_path, config)
    model = load_base_model(base_path, config, choice, qlora=False,
                        dtype="auto" if config.model.dtype == "auto" else torch_dtype(choice.weights_dtype))
    counts = parameter_counts(model)
    if rank() != 0:
        return TrainResult(config.output_name(), None, "full")
    stats = {"total_steps": 0, "epochs_completed": 0.0, "final_loss": None, "train_runtime_s": 0.0,
             "tokens_per_s": None, "snapshot_runtime_s": None}
    replaced = final.exists()
    with staged_dir(final, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stats["snapshot_runtime_s"] = round(time.time() - started, 3)
        metadata = build_metadata(config, base_path=base_path, model_type="full", counts=(counts[0], 0),
                                  trl_args=None, peft_config=None, quantization_config=None, stats=stats,
                                  hardware=hardware_info(choice), data=None, prompt_format=prompt_format(tokenizer))
        write_extras(tmp, metadata, preset_text)
    if replaced:
        retire_results(ws, final.name)
    events.emit(EventKind.SAVED, path=str(final))
    events.emit(EventKind.DONE, model=config.output_name(), output=str(final), model_type="full", snapshot=True)
    return TrainResult(config.output_name(), final, "full", metadata)


def _train(ws: Workspace, config: ExperimentConfig, preset_text: str, overwrite: bool,
           events: ProgressEvents) -> TrainResult:
    from transformers import PrinterCallback, set_seed

    from engine.runs.device import reset_memory_peaks, return_freed_host_memory
    from engine.runs.efficiency import choose as choose_efficiency, make_trainer

    final = preflight(ws, config, overwrite=overwrite)
    base_path = resolve_base(ws, config)
    qlora = config.quant.method == "QLORA"
    choice = choose_device(config.model.dtype, full_finetuning=config.peft.method == "NoPeft")
    quiet_libraries()
    reset_memory_peaks()
    with run_staging(ws, config) as (staging, resume_from):
        tokenizer = load_training_tokenizer(base_path, config)
        train_set, data_stats = build_dataset(ws, config, tokenizer)
        eval_set = None
        if config.data.trunc_eval:
            eval_set, _ = build_dataset(ws, config, tokenizer, "test", config.data.trunc_eval)
        set_seed(config.train.seed)  # adapter weights are initialised before the trainer seeds: same seed, same run
        model = load_base_model(base_path, config, choice, qlora=qlora)
        model, peft_config = wrap_peft(model, config, qlora=qlora)
        counts = parameter_counts(model)
        resumed_step = resume_from.step if resume_from else None
        _start_event(events, config, base_path, final, choice, examples=data_stats["examples"],
                     total_params=counts[0], trainable_params=counts[1], resumed_from_step=resumed_step,
                     staging=str(staging))
        if resume_from is not None:
            continue_runs(read_trackers(staging))
        args = sft_args(config, choice, str(staging), has_eval=eval_set is not None)
        stopper = stop_callback()  # after checkpoint_callback: its save on the stop signal must stand
        callbacks = [progress_callback(events), checkpoint_callback(config.train.save_steps),
                     identity_callback(config.train.report_to, lambda found: record_trackers(staging, found)), stopper,
                     max_steps_guard()]
        efficiency = choose_efficiency(config, model)
        trainer = make_trainer(efficiency, model=model, tokenizer=tokenizer, args=args, train_dataset=train_set,
                               eval_dataset=eval_set, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)
        check_trainer_inputs(trainer, tokenizer)
        if choice.use_cpu:  # activations and loss chunks live in host memory: freed ones go back at once
            return_freed_host_memory()
        cpu_started = time.process_time()
        try:
            output = trainer.train(resume_from_checkpoint=str(resume_from.path) if resume_from else None)
        except AlreadyTrained:  # the checkpoint at max_steps holds the trained weights: save them
            trainer.callback_handler.on_train_end(args, trainer.state, trainer.control)  # trackers close their runs
            output = None
        train_cpu_s = time.process_time() - cpu_started
        if stopper.stopped:
            raise TrainStopped(f"stopped on request at step {trainer.state.global_step} of "
                               f"{trainer.state.max_steps} (a cancel, a time limit or a preemption); run it again to go on")
        state = trainer.state
        runtime = float(output.metrics.get("train_runtime", 0.0)) if output else 0.0
        steps_run = state.global_step - (resumed_step or 0)  # this attempt's steps (the runtime is this attempt's)
        total_tokens = int(getattr(trainer, "_total_train_tokens", 0) or 0)
        logged = [entry["loss"] for entry in state.log_history if "loss" in entry]  # the checkpoint's history
        mean_loss = float(output.training_loss) if output else (sum(logged) / len(logged) if logged else None)
        stats = {"total_steps": state.global_step, "epochs_completed": round(float(state.epoch or 0.0), 4),
                 "final_loss": events.last_loss if events.last_loss is not None else (logged[-1] if logged else
                                                                                      mean_loss),
                 "mean_train_loss": mean_loss, "train_runtime_s": round(runtime, 3),
                 "train_steps_per_s": round(steps_run / runtime, 4) if runtime else None,
                 "train_cpu_s": round(train_cpu_s, 3), "resumed_from_step": resumed_step,
                 "tokens_seen": total_tokens, "tokens_per_s": round(total_tokens / runtime, 1) if runtime else None}
        hardware = hardware_info(choice)
        if not trainer.is_world_process_zero():
            return TrainResult(config.output_name(), None, "")
        bnb = nf4_config(torch_dtype(choice.compute_dtype)) if qlora else None
        pause_point("train-before-final-save")
        clear_for_final_save(staging)
        model_type = save_model(trainer.model, tokenizer, config, base_path, choice, staging)
        metadata = build_metadata(config, base_path=base_path, model_type=model_type, counts=counts,
                                  trl_args=plain(trl_args_dict(args)), peft_config=peft_config,
                                  quantization_config=bnb, stats=stats, hardware=hardware,
                                  data={k: v for k, v in data_stats.items() if k != "prompt_format"},
                                  prompt_format=data_stats["prompt_format"])
        metadata["trackers"] = read_trackers(staging)
        metadata.update(efficiency.metadata())
        write_extras(staging, metadata, preset_text)
        replaced = final.exists()
        promote_run(staging, final, overwrite=overwrite, keep_checkpoints=config.train.keep_checkpoints)
    if replaced:
        retire_results(ws, final.name)
    events.emit(EventKind.SAVED, path=str(final))
    events.emit(EventKind.DONE, model=config.output_name(), output=str(final), model_type=model_type,
                steps=stats["total_steps"], final_loss=stats["final_loss"], runtime_s=stats["train_runtime_s"],
                tokens_per_s=stats["tokens_per_s"], resumed_from_step=resumed_step)
    return TrainResult(config.output_name(), final, model_type, metadata)
