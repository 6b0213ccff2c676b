"""Training data (job process): the training items, prompt/completion pairs from the one prompt builder,
tokenised with the loss mask on the completion, and a check of what the trainer will feed."""

from __future__ import annotations

from engine.data.prompts import prompt_format, render_example, tokenize_prompts
from engine.data.tasks import DatasetError, get_task, load_items
from engine.presets.config import ExperimentConfig
from engine.runs.train_errors import TrainError
from engine.workspace import Workspace


def load_training_items(ws: Workspace, config: ExperimentConfig, limit: int = 0):
    try:
        task = get_task(config.data.dataset, ws.datasets_dir)
        items = load_items(ws.datasets_dir, task, "train", limit or config.data.trunc_train)
    except DatasetError as exc:
        raise TrainError(f"data.dataset = {config.data.dataset!r}: {exc}") from None
    if not items:
        raise TrainError(f"data.dataset = {config.data.dataset!r}: {ws.datasets_dir / task.train_file} has no rows")
    return task, items


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
        task, items = load_training_items(ws, config)
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
