"""Padding-free batches: whether a model can train on packed rows, and the collator that packs them (job process).

A padding-free batch is one row holding the batch's examples end to end, with ``position_ids`` restarting
at 0 for each example and no ``attention_mask``. Every piece is the libraries' own, checked by
``tests/engine/runs/test_packing.py``:

- TRL 1.16's ``DataCollatorForLanguageModeling(padding_free=True)`` concatenates the examples, writes the
  per-example ``position_ids``, sets the label of each example's first token to ``-100`` (so no example's
  last token is trained to predict the next example's first one) and adds the flash-attention varlen
  boundaries (``cu_seq_lens_q/k``, ``max_length_q/k``);
- transformers 5.24's mask builders (``masking_utils.create_causal_mask`` and its sliding-window twin), which
  every model built on them calls, find the packed examples from ``position_ids`` when there is no
  attention mask and make the sdpa/eager/flex mask block-diagonal causal; flash attention reads the
  varlen boundaries instead.

So no example attends to another, and the completion-only labels are the unpacked ones, token for token.
A model whose modeling code does not build its mask through ``masking_utils`` (remote code, old
architectures) or whose attention implementation is not one of :data:`PACKED_ATTENTION` trains padded.
"""

from __future__ import annotations

import sys
from typing import Any

#: Attention implementations that keep packed examples apart: sdpa/eager/flex through the block-diagonal
#: mask transformers derives from ``position_ids``, flash attention through the varlen boundaries.
PACKED_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")
#: The transformers mask builders that understand packed ``position_ids``.
_PACKED_MASK_BUILDERS = ("create_causal_mask", "create_sliding_window_causal_mask", "create_masks_for_generate")


def _causal_lm(model) -> Any:
    """The transformers model under PEFT's wrappers."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def padding_free_support(model) -> tuple[bool, str]:
    """(supported, why): whether ``model`` keeps packed examples apart with its attention implementation."""
    lm = _causal_lm(model)
    attention = getattr(lm.config, "_attn_implementation", None) or "eager"
    if attention not in PACKED_ATTENTION:
        return False, (f"attention implementation {attention!r} has no packed-sequence mask "
                       f"(padding-free needs one of {', '.join(PACKED_ATTENTION)})")
    module = sys.modules.get(type(lm).__module__)
    decoder = getattr(lm, "base_model", lm)
    decoder_module = sys.modules.get(type(decoder).__module__)
    names = set(vars(module)) | set(vars(decoder_module)) if module and decoder_module else set()
    if not names & set(_PACKED_MASK_BUILDERS):
        return False, (f"{type(lm).__name__} does not build its attention mask with transformers' masking_utils, "
                       "which is what keeps packed examples apart")
    return True, f"{attention} attention with a block-diagonal mask from per-example position_ids" \
        if not attention.startswith("flash") else f"{attention} with per-example sequence boundaries"


def padding_free_collator(pad_token_id: int):
    """TRL's collator in padding-free mode: one row per batch, per-example ``position_ids``, no padding."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)


def decide(requested: bool, model) -> dict[str, Any]:
    """Whether this run trains padding-free, and why: ``{"padding_free": bool, "why": str}``."""
    if not requested:
        return {"padding_free": False, "why": "train.padding_free = false: batches padded to their longest example"}
    supported, why = padding_free_support(model)
    return {"padding_free": supported, "why": why if supported else f"padded batches: {why}"}
