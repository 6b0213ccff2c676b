"""How a training run spends less time and memory than TRL's defaults: padding-free batches
(:mod:`engine.runs.packing`) and the chunked loss (:mod:`engine.runs.chunked_loss`) — the choice for a
preset and a model, the trainer built with it, and the record of it in ``training_metadata.json`` (job process).

Neither changes what is trained: the same examples make each optimizer step (one packed row per
micro-batch of ``per_device_train_batch_size`` examples, the same gradient accumulation) and the loss is
normalised the same way (summed over the trained tokens, divided by the trained tokens of the whole
optimizer step, ``num_items_in_batch``), so a packed run's loss curve is the padded run's within numeric noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.presets.config import ExperimentConfig
from engine.runs import chunked_loss, packing


@dataclass(frozen=True)
class Efficiency:
    """What a run uses: padding-free batches or not, and the loss (TRL's head, chunked, or Liger), with why."""

    padding_free_requested: bool
    padding_free: bool
    padding_free_why: str
    loss_chunk_tokens: int
    loss: str  # "trl" | "chunked" | "liger"
    loss_why: str

    def metadata(self) -> dict[str, Any]:
        """The two ``training_metadata.json`` entries: ``padding_free`` and ``loss_chunk_tokens``."""
        return {"padding_free": {"requested": self.padding_free_requested, "used": self.padding_free,
                                 "why": self.padding_free_why},
                "loss_chunk_tokens": {"value": self.loss_chunk_tokens, "loss": self.loss, "why": self.loss_why}}


def choose(config: ExperimentConfig, model) -> Efficiency:
    """The efficiency settings of ``config`` for ``model`` (as loaded, PEFT-wrapped or not)."""
    packed = packing.decide(config.train.padding_free, model)
    loss = chunked_loss.describe(config.train.loss_chunk_tokens)
    return Efficiency(config.train.padding_free, packed["padding_free"], packed["why"],
                      config.train.loss_chunk_tokens, loss["loss"], loss["why"])


def make_trainer(efficiency: Efficiency, *, model, tokenizer, **kwargs: Any):
    """TRL's ``SFTTrainer`` for ``model`` (``kwargs`` as SFTTrainer takes them), with the padding-free collator
    and the chunked loss when ``efficiency`` says so."""
    from trl import SFTTrainer

    trainer_type = SFTTrainer if efficiency.loss == "trl" else chunked_loss.trainer_class(SFTTrainer)
    if efficiency.padding_free:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs["data_collator"] = packing.padding_free_collator(pad if pad is not None else 0)
    trainer = trainer_type(model=model, processing_class=tokenizer, **kwargs)
    if efficiency.loss != "trl":
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        chunked_loss.install_chunked_loss(lm, efficiency.loss_chunk_tokens, use_liger=efficiency.loss == "liger")
    return trainer
