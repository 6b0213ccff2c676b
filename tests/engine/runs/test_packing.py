"""Padding-free batches keep examples apart and train the same model: per-example logits of a packed row equal
each example run alone (Qwen3, Llama 3, Gemma 2 tiny models; sdpa and eager), the completion-only labels equal
the padded batch's token for token, and 20 optimizer steps packed with the chunked loss end where 20 padded
steps with TRL's own loss end (per-step losses and final weights)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine.runs.packing import padding_free_collator

#: float32 on the CPU: a packed row and a lone example differ only in how sdpa/eager tile the masked
#: attention sums, measured at ~1e-6 of logits of order 1; a leak of one token into another example moves
#: them by ~1e-2 (see the negative control below).
LOGITS_ATOL, LOGITS_RTOL = 2e-5, 1e-4
#: Per-step losses (~5-7 here) of the two runs measured 5e-7 apart (float32 round-off); a normalisation that
#: differed (mean per micro-batch instead of per optimizer step) is off by ~1e-1.
LOSS_ATOL = 1e-5
#: 20 AdamW steps at lr 1e-3 move a weight by up to 2e-2; the two runs' final weights measured 5e-6 apart
#: (round-off through Adam's normalisation); 5e-5 is 0.25 % of the largest possible move.
WEIGHTS_ATOL = 5e-5

ARCHS = ("qwen3", "llama3", "gemma2")


pytestmark = pytest.mark.usefixtures("one_thread")


def _examples(ws, tokenizer, task_name: str, count: int) -> list[dict]:
    """Real prompt/completion pairs tokenized as training tokenizes them, with TRL's completion-only labels."""
    from engine.data.prompts import render_example
    from engine.data.tasks import get_task, load_items
    from engine.runs.train_data import tokenize_examples

    task = get_task(task_name, ws.datasets_dir)
    items = load_items(ws.datasets_dir, task, "train", count)
    columns, _ = tokenize_examples(tokenizer, [render_example(tokenizer, task, item) for item in items])
    return [{"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]}
            for ids, mask in zip(columns["input_ids"], columns["completion_mask"])]


def _load(ws, base: str, attention: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ws.models_dir / base
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


# Gemma 2 has no sdpa in transformers 5.24 (its attention soft-caps the scores): eager only
@pytest.mark.parametrize("arch,attention", [(arch, attention) for arch in ARCHS for attention in ("sdpa", "eager")
                                            if (arch, attention) != ("gemma2", "sdpa")])
def test_packed_logits_equal_each_example_run_alone(family_ws, arch, attention):
    from engine.runs.packing import padding_free_support

    ws, base = family_ws
    model, tokenizer = _load(ws, base(arch), attention)
    assert padding_free_support(model)[0]
    examples = _examples(ws, tokenizer, "varied", 5)
    lengths = [len(e["input_ids"]) for e in examples]
    assert len(set(lengths)) > 2, lengths
    if arch == "gemma2":  # the tiny Gemma 2 has a 64-token sliding window: longer examples exercise it too
        assert max(lengths) > model.config.sliding_window
    packed = padding_free_collator(tokenizer.pad_token_id or 0)(examples)
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    with torch.no_grad():
        # use_cache=False as in training (TRL sets it): transformers looks for packed examples only without a cache
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}, use_cache=False).logits[0]
        offset = 0
        for example, length in zip(examples, lengths):
            alone = model(input_ids=torch.tensor([example["input_ids"]])).logits[0]
            torch.testing.assert_close(logits[offset:offset + length], alone, atol=LOGITS_ATOL, rtol=LOGITS_RTOL)
            offset += length
        # negative control: the same row with one running position (a plain causal mask) leaks across examples
        leaky = model(input_ids=packed["input_ids"], use_cache=False).logits[0]
        second = slice(lengths[0], lengths[0] + lengths[1])
        assert (leaky[second] - logits[second]).abs().max() > 100 * LOGITS_ATOL


@pytest.mark.parametrize("arch", ARCHS)
def test_completion_only_labels_equal_the_padded_batch_token_for_token(family_ws, arch, tmp_path):
    from engine.runs.device import choose_device
    from engine.runs.efficiency import choose, make_trainer
    from engine.runs.train_args import sft_args
    from engine.runs.train_data import build_dataset

    ws, base = family_ws
    config = _config(base(arch), "varied", ["train.per_device_train_batch_size=6"])  # questions of varied length
    model, tokenizer = _load(ws, base(arch), "eager" if arch == "gemma2" else "sdpa")
    train_set, _ = build_dataset(ws, config, tokenizer)
    args = sft_args(config, choose_device("float32", full_finetuning=True), str(tmp_path), has_eval=False)
    batches = {}
    for padding_free in (True, False):
        config.train.padding_free = padding_free
        efficiency = choose(config, model)
        assert efficiency.padding_free is padding_free
        trainer = make_trainer(efficiency, model=model, tokenizer=tokenizer, args=args, train_dataset=train_set)
        prepared = [trainer.train_dataset[i] for i in range(6)]
        batches[padding_free] = trainer.data_collator(prepared)
    packed, padded = batches[True], batches[False]
    rows = [padded["labels"][i][padded["attention_mask"][i].bool()] for i in range(6)]
    assert torch.equal(packed["labels"][0], torch.cat(rows))
    assert torch.equal(packed["input_ids"][0], torch.cat([padded["input_ids"][i][padded["attention_mask"][i].bool()]
                                                          for i in range(6)]))
    assert (padded["attention_mask"] == 0).any(), "the padded batch should need padding for this to mean anything"
    assert all((r != -100).any() and r[0] == -100 for r in rows), "every example trains its completion only"


def _config(base: str, dataset: str, extra: list[str]):
    from engine.presets.config import load_preset_text

    return load_preset_text(f'[model]\nbase = "Models/{base}"\n', overrides=[
        f'data.dataset="{dataset}"', "data.trunc_train=160", "peft.method=\"NoPeft\"", "model.dtype=\"float32\"",
        "train.max_steps=20", "train.per_device_train_batch_size=4", "train.gradient_accumulation_steps=2",
        "train.gradient_checkpointing=false", "train.max_length=192", "train.logging_steps=1",
        "train.learning_rate=1e-3", "train.warmup_ratio=0", "train.save_steps=0", *extra], custom_datasets=("varied",))


@pytest.mark.slow
def test_twenty_steps_packed_with_chunked_loss_match_padded_with_trl_loss(family_ws, shared_datasets, tmp_path):
    """Real OpenMath rows (answers from a line to a page, truncated at 192 tokens), full fine-tuning so the
    LM head's gradient through the chunked loss counts too, accumulation 2 so the per-step normalisation does."""
    from safetensors.torch import load_file

    from engine.runs.train import train
    from engine.workspace import Workspace

    family, base = family_ws
    name = base("qwen3")
    ws = Workspace(tmp_path / "ws").init()
    for split in ("train", "test"):
        (ws.datasets_dir / f"{split}-OpenMathInstruct-2.parquet").symlink_to(
            shared_datasets / f"{split}-OpenMathInstruct-2.parquet")
    shutil.copytree(family.models_dir / name, ws.models_dir / name)
    runs = {}
    for label, extra in (("packed", ["train.padding_free=true", "train.loss_chunk_tokens=64"]),
                         ("padded", ["train.padding_free=false", "train.loss_chunk_tokens=0"])):
        events: list[dict] = []
        config = _config(name, "openmath", extra)
        result = train(ws, config, overwrite=True, reporter=events.append)
        losses = [e["loss"] for e in events if e.get("kind") == "train_step" and e.get("loss") is not None]
        weights = load_file(result.output_dir / "model.safetensors")
        meta = json.loads((result.output_dir / "training_metadata.json").read_text())
        runs[label] = (losses, weights, meta)
        shutil.rmtree(result.output_dir)
    (packed_losses, packed_weights, packed_meta), (padded_losses, padded_weights, padded_meta) = runs.values()
    assert packed_meta["padding_free"] == {"requested": True, "used": True, "why": packed_meta["padding_free"]["why"]}
    assert packed_meta["loss_chunk_tokens"]["value"] == 64 and packed_meta["loss_chunk_tokens"]["loss"] == "chunked"
    assert padded_meta["padding_free"]["used"] is False and padded_meta["loss_chunk_tokens"]["loss"] == "trl"
    assert len(packed_losses) == len(padded_losses) == 20
    for step, (a, b) in enumerate(zip(packed_losses, padded_losses), 1):
        assert abs(a - b) <= LOSS_ATOL, f"step {step}: packed loss {a} vs padded {b}"
    assert packed_losses[-1] < packed_losses[0] - 0.5, "the run must really train for the comparison to mean much"
    assert packed_weights.keys() == padded_weights.keys()
    for key in packed_weights:
        torch.testing.assert_close(packed_weights[key], padded_weights[key], atol=WEIGHTS_ATOL, rtol=0)
