"""Trainer settings (job process): a preset's TRL ``SFTConfig``, as plain data for the metadata, and quiet libraries."""

from __future__ import annotations

from typing import Any

from engine.presets.config import ExperimentConfig
from engine.runs.device import DeviceChoice


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


def trl_args_dict(args) -> dict[str, Any]:
    """The SFTConfig as plain data (``to_dict`` already masks hub tokens)."""
    return {k: v for k, v in args.to_dict().items() if not k.startswith("_")}


def quiet_libraries() -> None:
    """No tqdm bars from datasets/transformers: llmtui shows its own progress."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
