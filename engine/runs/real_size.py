"""Real-size models built from a published ``config.json``: Qwen3-0.6B and Llama-3.2-1B shaped, random
weights in bf16 as published, with the family's chat template and tokenizer (bench and tests; job process side).

The network, its memory and its compute are the real model's; only the numbers in the weights differ. The
weights are created straight in bfloat16 (``from_config(dtype=bfloat16)``: no float32 copy is ever made)
and saved as safetensors. Tokenizers: the real Llama 3 vocabulary (from the ``llama-models`` wheel, see
:mod:`engine.runs.tiny`); for Qwen3 a byte-level BPE trained locally on the caller's texts, its vocabulary
filled to Qwen's 151,643 regular entries with entries no merge can produce, and Qwen's special tokens at
their real ids (151,643…151,668), so every id the template writes is the real one and the tokenizer has
Qwen's 151,669 entries for the embedding's 151,936 rows (texts tokenize into somewhat more tokens than with
the real merges).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from engine.runs.tiny import FAMILIES, family_tokenizer, save_random_model

#: size name → (config file in the real-configs folder, family in :data:`engine.runs.tiny.FAMILIES`)
REAL_SIZES = {"0.6b": ("Qwen3-0.6B.json", "qwen3"), "1b": ("Llama-3.2-1B.json", "llama3")}
#: Qwen2/3's special tokens in id order from 151,643 (as its tokenizer_config.json's added_tokens_decoder).
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                 "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
                 "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN_REGULAR = 151_643
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen_tokenizer(chat_template: str, texts: Iterable[str], trained_vocab: int = 32_000):
    """A Qwen3-shaped tokenizer: local BPE merges, Qwen's vocabulary size and special-token ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = split
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=trained_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(list(texts) + [chat_template], trainer=trainer)
    model = json.loads(core.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    # Fill to the real regular size with strings no merge builds (never produced by encoding).
    for i in range(len(vocab), QWEN_REGULAR):
        vocab[f"<|unused_{i}|>"] = i
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    full = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    full.pre_tokenizer = split
    full.decoder = decoders.ByteLevel()
    full.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=full, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = chat_template
    return tokenizer


def build_real_size_model(out_dir: Path | str, size: str, configs_dir: Path | str, templates_dir: Path | str,
                          texts: Iterable[str] = (), *, num_layers: int | None = None, seed: int = 0) -> Path:
    """Build ``size`` (``0.6b`` or ``1b``) into ``out_dir``: bf16 random weights, template, tokenizer.

    ``num_layers`` keeps the real hidden size and vocabulary with fewer layers (the CI-sized model).
    """
    import torch
    from transformers import AutoConfig

    if size not in REAL_SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(REAL_SIZES)}")
    config_file, family_name = REAL_SIZES[size]
    family = FAMILIES[family_name]
    fields = json.loads((Path(configs_dir) / config_file).read_text(encoding="utf-8"))
    if num_layers is not None:
        fields["num_hidden_layers"] = num_layers
    template = (Path(templates_dir) / family.template_file).read_text(encoding="utf-8")
    if family_name == "qwen3":
        tokenizer = qwen_tokenizer(template, texts)
    else:
        tokenizer = family_tokenizer(family, template)
    token_id = tokenizer.convert_tokens_to_ids
    if len(tokenizer) > fields["vocab_size"]:
        raise ValueError(f"{config_file}: the tokenizer has {len(tokenizer)} entries, more than vocab_size")
    fields.update(eos_token_id=token_id(family.eos), pad_token_id=token_id(family.pad) if family.pad else None,
                  bos_token_id=token_id(family.bos) if family.bos else None)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    return save_random_model(out_dir, config, family, tokenizer, dtype=torch.bfloat16, seed=seed)  # bf16 as published
