"""Memory (and, where earlier runs recorded a speed, time) that each step of a preset needs, from the base
model's ``config.json`` alone — no torch (any process: ``llmtui plan``, the scheduler, the bench's floors).

Every figure is a sum of named parts, each a formula over the config's fields (``B`` bytes a weight, ``N``
parameters, ``T`` tokens of a sequence, ``b`` the batch, ``L`` layers, ``h`` hidden, ``i`` intermediate,
``kv`` key/value width = KV heads × head dim, ``V`` vocabulary):

- weights: ``N × B`` (bf16 2, fp32 4; 4-bit: the decoder's linear weights × (0.5 + 4/group) bytes, the
  embeddings and norms in 16 bit; 8-bit: 1 byte + a 4-byte scale per row);
- training: gradients and AdamW's two moments of the trainable parameters (``n_t × (B_grad + 8)``; full
  fine-tuning also keeps fp32 master weights where the weights are 16-bit), LoRA's ``r × (in + out)`` per
  targeted module;
- activations kept for the backward pass, per token and layer: ``(6h + 2kv + 4i) × B`` without gradient
  checkpointing (norm outputs, q/k/v, attention output, gate, up, activation, down input), ``h × B`` with
  it plus one layer's full set being recomputed; the logits ``C × V × (B + 12)`` (the model's logits, their
  float32 copy for the loss, the log-softmax and its gradient) over ``C`` = ``train.loss_chunk_tokens``
  positions at a time (llmtui's chunked loss; all ``T`` with 0, TRL's own head);
- training a quantized base on the CPU: its stored file is read tensor by tensor (``engine.runs.loading``), so
  no mapped copy of it stays beside the 4-bit model being built (1B QLoRA's peak was that load: 5.98 → 3.51 GB);
- inference: the KV cache ``2 × L × kv × T × b × B``, one step's logits, and the prefill's transient: one
  layer's MLP (gate, up, activation, product) and two hidden-size tensors over the prompt positions of one
  forward pass, ``g × P × (4i + 2h) × B`` (``P`` prompt positions, ``g`` the rows the engine prefills at once,
  :func:`prefill_group`; SDPA computes attention in blocks, so no ``P²`` term — measured: 131 KB a prompt token
  at Llama-3.2-1B's shape, 55 KB at Qwen3-0.6B's); a quantized model's 16-bit
  parts (embeddings, norms) in 16 bit where its backend keeps them so (bitsandbytes), in the compute dtype
  otherwise (HQQ, and GPTQ/AWQ's fused CPU kernels: float32); 4-bit reloads hold one more 16-bit embedding-sized matrix while loading
  (measured: NF4 at 1B, HQQ at 2 layers), 8-bit ones do not;
- the runtime: the CUDA context (GPU) or the Python process with torch and transformers imported (CPU);
- vLLM on the CPU (:func:`vllm_estimate`): its own process beside llmtui's, the weights in float32, the KV
  cache it reserves for the largest request in whole 128-position blocks (at most 2 GiB), and the stored file
  its loader keeps mapped while converting (``mapped_file``).

On the CPU llmtui trains and evaluates in float32 (bf16 matmuls are slow there), so the CPU figures use
``B = 4`` for a 16-bit model. The floor is the sum of the parts. The estimate adds slack measured against
``bench/real_size.py``'s peaks on a CPU: tensors of a known size (weights, adapter, gradients, optimizer
state, the quantized copy, the file being converted, the KV cache the built-in engine allocates whole and vLLM
reserves) × :data:`WEIGHT_SLACK`; shape-dependent transients (activations, prefill, logits, calibration,
Hessians, working copies) × :data:`SLACK`; the runtime ×
:data:`RUNTIME_SLACK` (it differs between machines with their library builds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GB = 1e9
#: Resident memory of a job process before it loads a model (Python, torch, transformers, peft, trl imported),
#: measured by bench/real_size.py on the 2-core CPU machine; on a GPU, the CUDA context and kernels.
CPU_RUNTIME_BYTES = 1.05e9
GPU_RUNTIME_BYTES = 0.9e9
#: A fast tokenizer in memory, per vocabulary entry (81 MB measured for Qwen3's 151,669 entries; CPU only).
TOKENIZER_BYTES_PER_ENTRY = 550
#: What the estimate adds to the floor (the allocator, transient buffers while loading and saving), measured
#: against bench/real_size.py's peaks: parts of a known size (:data:`EXACT_PARTS`) × WEIGHT_SLACK, the other
#: parts but the runtime × SLACK, the runtime × RUNTIME_SLACK (0.98-0.99 GB measured on the bench machine).
WEIGHT_SLACK = 1.05
RUNTIME_SLACK = 1.1
EXACT_PARTS = frozenset({"weights", "adapter", "gradients", "optimizer", "quantized", "loading", "kv_cache",
                         "kv_reserved", "mapped_file"})
#: Parts in the estimate but not the floor: copies a library's loader makes that the stage does not need.
OVERHEAD_PARTS = frozenset({"mapped_file"})
#: PTQ methods that replace each linear module by its quantized form in place, layer by layer (on the CPU).
IN_PLACE_METHODS = ("hqq", "gptq", "awq")
#: Float32 copies of one weight that HQQ's proximal optimiser holds at once (hqq.core.optimize: W_f, W_q, W_r, W_e, beta-scaled error).
HQQ_WORKING_COPIES = 5
SLACK = 1.3
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


class EstimateError(ValueError):
    """The config cannot be read or lacks a field the estimate needs (the message names it)."""


@dataclass(frozen=True)
class ModelShape:
    """The fields of a decoder-only transformer's ``config.json`` that decide its memory."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    stored_bytes: int = 2  # bytes a weight as published (torch_dtype)
    qk_norm: bool = False  # Qwen3 normalises queries and keys per head (two head_dim vectors a layer)

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json") -> "ModelShape":
        config = config.get("text_config", config)
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return cls(layers=int(config["num_hidden_layers"]), hidden=hidden,
                       intermediate=int(config["intermediate_size"]), heads=heads,
                       kv_heads=int(config.get("num_key_value_heads") or heads),
                       head_dim=int(config.get("head_dim") or hidden // heads), vocab=int(config["vocab_size"]),
                       tied=bool(config.get("tie_word_embeddings", False)),
                       stored_bytes=4 if str(config.get("torch_dtype", config.get("dtype", "bfloat16"))) == "float32"
                       else 2, qk_norm=config.get("model_type") == "qwen3")
        except KeyError as exc:
            raise EstimateError(f"{source}: no {exc.args[0]} field") from None
        except (TypeError, ValueError) as exc:
            raise EstimateError(f"{source}: {exc}") from None

    @classmethod
    def from_attributes(cls, config: Any) -> "ModelShape":
        """From a loaded model's config object (its attribute aliases resolve GPT-2-style names; the MLP width of
        architectures that leave it implicit is their 4 × hidden)."""
        names = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                 "vocab_size", "tie_word_embeddings", "intermediate_size", "model_type")
        fields = {name: getattr(config, name, None) for name in names}
        fields["intermediate_size"] = fields["intermediate_size"] or 4 * int(fields["hidden_size"] or 0)
        return cls.from_config(fields, type(config).__name__)

    @classmethod
    def from_file(cls, path: Path | str) -> "ModelShape":
        path = Path(path)
        try:
            return cls.from_config(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError) as exc:
            if isinstance(exc, EstimateError):
                raise
            raise EstimateError(f"{path}: cannot be read as JSON: {exc}") from None

    # ---------------------------------------------------------------- parameter counts
    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear module of one decoder layer."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_width), "k_proj": (h, self.kv_width), "v_proj": (h, self.kv_width),
                "o_proj": (self.q_width, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """The decoder layers' linear weights (what 4- and 8-bit quantization shrinks)."""
        return self.layers * sum(a * b for a, b in self.module_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def norm_params(self) -> int:
        per_layer = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return self.layers * per_layer + self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params

    def lora_params(self, r: int, targets: tuple[str, ...] | list[str] | str) -> int:
        """LoRA's A and B matrices, ``r × (in + out)`` for each targeted module of every layer."""
        return self.layers * sum(r * (a + b) for name, (a, b) in self.module_shapes().items()
                                 if name in resolve_targets(targets))


def resolve_targets(targets: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """``attention`` / ``all-linear`` / module names → the module names of a Llama-style layer."""
    names = [targets] if isinstance(targets, str) else list(targets)
    out: list[str] = []
    for name in names:
        out += list(ATTENTION) if name == "attention" else (list(ATTENTION + MLP) if name == "all-linear" else [name])
    return tuple(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------ the parts


def weight_bytes(shape: ModelShape, bits: int, group_size: int = 64, bytes_16: int = 2) -> float:
    """Bytes of the weights: ``bits`` 16/32 for all of them, 4 or 8 for the decoder's linear weights."""
    if bits >= 16:
        return shape.params * bits / 8
    rest = (shape.embedding_params + shape.norm_params) * bytes_16
    if bits == 8:
        rows = shape.layers * sum(out for _, out in shape.module_shapes().values())
        return shape.linear_params + rows * 4 + rest
    per_weight = bits / 8 + (4 / group_size if group_size else 0)  # scale + zero (fp16 each) per group
    return shape.linear_params * per_weight + rest


def activation_bytes(shape: ModelShape, tokens: int, dtype_bytes: int, checkpointing: bool,
                     loss_chunk: int = 0) -> float:
    """Activations kept for backward over ``tokens`` (batch × sequence), and the loss's logits over
    ``loss_chunk`` positions at a time (all ``tokens`` with 0)."""
    per_layer = (6 * shape.hidden + 2 * shape.kv_width + 4 * shape.intermediate) * dtype_bytes
    if checkpointing:
        kept = tokens * (shape.layers * shape.hidden * dtype_bytes + per_layer)
    else:
        kept = tokens * shape.layers * per_layer
    return kept + logits_bytes(shape, min(tokens, loss_chunk) if loss_chunk else tokens, dtype_bytes, training=True)


def logits_bytes(shape: ModelShape, tokens: int, dtype_bytes: int, *, training: bool) -> float:
    """The logits (and for training their float32 copy, log-softmax and gradient) over ``tokens`` positions."""
    return tokens * shape.vocab * (dtype_bytes + (12 if training else 0))


def kv_cache_bytes(shape: ModelShape, tokens: int, dtype_bytes: int) -> float:
    """Keys and values of every layer for ``tokens`` (batch × positions) positions."""
    return 2 * shape.layers * shape.kv_width * tokens * dtype_bytes


#: Prompt positions the built-in engine prefills in one forward pass: a batch's rows go through in groups of at
#: most this many positions (one row at least), so the prefill's transient is bounded by it, not by the batch.
PREFILL_POSITIONS = 4096


def prefill_group(rows: int, width: int) -> int:
    """Rows of ``width`` prompt positions the built-in engine prefills in one forward pass."""
    return max(1, min(rows, PREFILL_POSITIONS // max(1, width)))


def prefill_bytes(shape: ModelShape, tokens: int, dtype_bytes: int) -> float:
    """The transient of one layer while ``tokens`` prompt positions go through it in one forward pass."""
    return tokens * (4 * shape.intermediate + 2 * shape.hidden) * dtype_bytes


def generation_rows(shape: ModelShape, budget: float, prompt: int, new_tokens: int, dtype_bytes: int) -> int:
    """The most rows of ``prompt`` positions and up to ``new_tokens`` generated ones whose KV cache and prefill
    transient fit in ``budget`` bytes (at least 1; the built-in engine sizes its CPU batch by it)."""
    prefill = prefill_bytes(shape, prefill_group(2**31, prompt) * prompt, dtype_bytes)
    return max(1, int((budget - prefill) // kv_cache_bytes(shape, prompt + new_tokens, dtype_bytes)))


@dataclass
class Estimate:
    """One step's memory on one device kind: its parts in bytes, the floor (their sum) and the bound."""

    step: str
    device: str  # "gpu" | "cpu"
    parts: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def floor_bytes(self) -> float:
        return sum(v for k, v in self.parts.items() if k not in OVERHEAD_PARTS)

    @property
    def bytes(self) -> float:
        """The estimate: the runtime × :data:`RUNTIME_SLACK`, :data:`EXACT_PARTS` × :data:`WEIGHT_SLACK`, the
        other parts × :data:`SLACK`."""
        return sum(value * (RUNTIME_SLACK if name.endswith("runtime") else WEIGHT_SLACK if name in EXACT_PARTS
                            else SLACK) for name, value in self.parts.items())

    @property
    def gb(self) -> float:
        return round(self.bytes / GB, 2)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "device": self.device, "memory_gb": self.gb,
                "floor_gb": round(self.floor_bytes / GB, 2),
                "parts_gb": {k: round(v / GB, 3) for k, v in self.parts.items()}, "note": self.note}


def _runtime(device: str, shape: ModelShape) -> float:
    """The process before the model: the CUDA context, or on the CPU Python with the libraries and the tokenizer."""
    return GPU_RUNTIME_BYTES if device == "gpu" else CPU_RUNTIME_BYTES + shape.vocab * TOKENIZER_BYTES_PER_ENTRY


def _compute_bytes(device: str, dtype: str = "auto") -> int:
    """Bytes of a weight as llmtui loads it: 16-bit on a GPU (unless float32 asked), float32 on the CPU."""
    if dtype == "float32" or device == "cpu":
        return 4
    return 2


def train_estimate(shape: ModelShape, *, device: str, method: str = "lora", quant: str = "none", r: int = 256,
                   targets: tuple[str, ...] | list[str] | str = "attention", batch: int = 1, seq: int = 1024,
                   checkpointing: bool = True, optimizer: str = "adamw", dtype: str = "auto",
                   loss_chunk: int = 128, accumulation: int = 8) -> Estimate:
    """A training step: ``method`` full | lora; ``quant`` none | 4bit (QLoRA) | 8bit; ``loss_chunk`` the
    preset's ``train.loss_chunk_tokens`` (its default 128); ``accumulation`` its micro-batches a step
    (``train.gradient_accumulation_steps``, default 8)."""
    b = _compute_bytes(device, dtype)
    if quant == "4bit":
        weights = weight_bytes(shape, 4, group_size=64, bytes_16=b)  # NF4, blocks of 64 with double quant
    elif quant == "8bit":
        weights = weight_bytes(shape, 8, bytes_16=b)
    else:
        weights = shape.params * b
    optimizer_bytes_per = {"adamw": 8, "adamw_8bit": 2, "sgd": 0}.get(optimizer, 8)
    parts = {"runtime": _runtime(device, shape), "weights": weights}
    if method == "full":
        trainable = shape.params
        parts["gradients"] = trainable * b
        parts["optimizer"] = trainable * optimizer_bytes_per + (trainable * 4 if b == 2 else 0)  # fp32 masters
    else:
        trainable = shape.lora_params(r, targets)
        parts["adapter"] = trainable * 4
        parts["gradients"] = trainable * 4
        parts["optimizer"] = trainable * optimizer_bytes_per
    activations = activation_bytes(shape, batch * seq, b, checkpointing, loss_chunk)
    # With one micro-batch a step the gradients appear as the backward pass frees the activations (the trainer
    # drops them after each step): only what the activations exceed them by adds up. Accumulating, the gradients
    # of the first micro-batches stay beside the next one's activations. (QLoRA with accumulation 1 measured
    # below the sum: 2.77 GB against 3.36 at 0.6B, 3.50 against 3.76 at 1B.)
    parts["activations"] = activations if accumulation > 1 else max(0.0, activations - parts["gradients"])
    name = {"full": "full fine-tuning", "lora": "QLoRA" if quant == "4bit" else "LoRA"}.get(method, method)
    return Estimate("train", device, parts, note=f"{name}, batch {batch} × {seq} tokens"
                    + (", gradient checkpointing" if checkpointing else ""))


#: Quantization methods whose loaded model keeps the unquantized parts in 16 bit on the CPU too (bitsandbytes).
KEEPS_16_BIT = ("int8", "nf4")


def inference_estimate(shape: ModelShape, *, device: str, bits: int = 16, batch: int = 1, context: int = 2048,
                       prompt: int | None = None, group_size: int = 64, step: str = "eval",
                       method: str = "hqq") -> Estimate:
    """Generation at ``batch`` sequences of up to ``context`` positions, ``prompt`` of them (all when None) the
    prompt prefilled at once; ``method`` the quantization of a ``bits`` < 16 model (it decides the dtype of its
    unquantized parts)."""
    b = _compute_bytes(device)
    width = context if prompt is None else prompt
    rest = 2 if method.lower() in KEEPS_16_BIT else b
    weights = weight_bytes(shape, bits if bits < 16 else b * 8, group_size, bytes_16=rest)
    parts = {"runtime": _runtime(device, shape), "weights": weights,
             "kv_cache": kv_cache_bytes(shape, batch * context, b),
             "logits": logits_bytes(shape, batch, 4, training=False),
             "prefill": prefill_bytes(shape, prefill_group(batch, width) * width, b)}
    if bits == 4 and device == "cpu":  # measured: one more 16-bit embedding-sized matrix while a 4-bit model loads;
        # GPTQModel's loader (accelerate) builds the float32 embedding beside its skeleton's float32 one
        parts["loading"] = shape.vocab * shape.hidden * (4 if method.lower() in ("gptq", "awq") else 2)
    return Estimate(step, device, parts, note=f"{bits if bits < 16 else b * 8}-bit weights, batch {batch} × "
                                             f"{context} positions")


#: The most KV cache llmtui has vLLM reserve on the CPU (``VLLM_CPU_KVCACHE_SPACE``, in GiB, overrides it).
VLLM_CPU_KV_CACHE_BYTES = 2 * 2**30
#: Positions of one KV cache block of vLLM's CPU attention: a sequence takes whole blocks.
VLLM_BLOCK_TOKENS = 128
#: vLLM's own process on the CPU before the model: Python with its torch and vLLM imported (0.64 GB) and the
#: buffers its engine allocates for a batch at start-up, measured on the bench machine.
VLLM_CPU_RUNTIME_BYTES = 1.0e9


def vllm_kv_cache_bytes(shape: ModelShape, sequences: list[int] | tuple[int, ...], dtype_bytes: int) -> int:
    """The KV cache llmtui asks vLLM to reserve on the CPU: room for ``sequences`` (each a prompt's positions
    plus the ceiling on new tokens) all at once in whole blocks, at most :data:`VLLM_CPU_KV_CACHE_BYTES` (vLLM
    then runs fewer at a time), never less than the longest one needs."""
    def blocks(positions: int) -> int:
        return -(-positions // VLLM_BLOCK_TOKENS) * VLLM_BLOCK_TOKENS

    per_token = kv_cache_bytes(shape, 1, dtype_bytes)
    everything = sum(blocks(n) for n in sequences) * per_token
    longest = blocks(max(sequences, default=1) + VLLM_BLOCK_TOKENS) * per_token
    return int(max(min(everything, VLLM_CPU_KV_CACHE_BYTES), longest))


def vllm_estimate(shape: ModelShape, *, device: str, sequences: list[int] | tuple[int, ...]) -> Estimate:
    """An evaluation through vLLM on the CPU: llmtui's process (the runtime and the tokenizer, no model) beside
    vLLM's, which holds the weights in float32 and the KV cache it reserved (:func:`vllm_kv_cache_bytes`); its
    loader keeps the stored file mapped while it converts it (in the estimate, not the floor). On a GPU vLLM
    reserves 90 % of the card (its ``gpu_memory_utilization``), which no config sizes: the figure there is what
    the evaluation itself needs, the built-in engine's for the same sequences."""
    if device != "cpu":
        return inference_estimate(shape, device=device, batch=len(sequences) or 1,
                                  context=max(sequences, default=1), step="eval vllm")
    parts = {"runtime": _runtime(device, shape), "vllm_runtime": VLLM_CPU_RUNTIME_BYTES,
             "weights": shape.params * 4, "kv_reserved": vllm_kv_cache_bytes(shape, sequences, 4),
             "mapped_file": shape.params * shape.stored_bytes}
    return Estimate("eval vllm", device, parts, note=f"vLLM, float32 weights, {len(sequences)} sequences of up to "
                                                   f"{max(sequences, default=0)} positions")


def snapshot_estimate(shape: ModelShape, *, device: str) -> Estimate:
    """Load the base in its stored dtype and save it: the weights once."""
    return Estimate("snapshot", device, {"runtime": _runtime(device, shape), "weights": shape.params * shape.stored_bytes})


def merge_estimate(shape: ModelShape, *, device: str, r: int, targets: tuple[str, ...] | list[str] | str) -> Estimate:
    """Base in its stored dtype + the float32 adapter, merged in place and saved. The adapter counts once: the
    file's tensors are read lazily into the modules (counted twice until the bench measured 0.6B's r 256 merge
    at 2.57 GB, below that floor's 2.81). Saving adds no copy (safetensors writes from the tensors' memory)."""
    weights = shape.params * shape.stored_bytes
    return Estimate("merge", device, {"runtime": _runtime(device, shape), "weights": weights,
                                      "adapter": shape.lora_params(r, targets) * 4})


def quantize_estimate(shape: ModelShape, *, device: str, method: str, bits: int = 4, group_size: int = 64,
                      samples: int = 128, seq: int = 512) -> Estimate:
    """PTQ of a 16-bit model, layer by layer: the source weights once in 16 bit (on the CPU; a GPU holds one
    layer at a time), the quantized copy growing beside them (on the CPU HQQ, GPTQ and AWQ replace modules in
    place, so only one layer's quantized modules are new, :data:`IN_PLACE_METHODS`), and for GPTQ/AWQ one layer's calibration
    inputs and outputs (``samples × seq × h``, 16 bit each) and GPTQ's Hessians of one layer (``in²`` float32
    for each module), on the CPU also the stored file GPTQModel's loader keeps mapped beside its float16 copy
    (0.6B: 4.15 GB measured, one copy of the weights over the rest); HQQ's float32 working copies of the
    largest module."""
    method = method.lower()
    one_layer = shape.linear_params / shape.layers * 2
    quantized = weight_bytes(shape, bits, group_size)
    if method in IN_PLACE_METHODS and device == "cpu":
        # each linear module is replaced by its quantized form as it is made, and the embeddings stay the
        # source's: beside the whole source only one layer's quantized modules are new (counting the whole
        # quantized model over-counted 1B HQQ by 1.25× and 1B GPTQ by 1.30×)
        quantized = (quantized - (shape.embedding_params + shape.norm_params) * 2) / shape.layers
        if method in ("gptq", "awq"):  # GPTQModel makes the output head a float16 copy of its own ("headfp16")
            quantized += shape.vocab * shape.hidden * 2
    parts = {"runtime": _runtime(device, shape), "weights": shape.params * 2 if device == "cpu" else one_layer,
             "quantized": quantized}
    if method == "hqq":
        # HQQ optimises each weight's zero and scale in float32: the weight, its quantized and dequantized
        # forms, the error and the shrinkage term of the largest module exist at once.
        parts["working"] = max(a * b for a, b in shape.module_shapes().values()) * 4 * HQQ_WORKING_COPIES
    if method in ("gptq", "awq"):
        parts["calibration"] = samples * seq * shape.hidden * 2 * 2 + seq * shape.intermediate * 4 * 4
        if method == "gptq":
            parts["hessian"] = sum(a * a * 4 for a, _ in shape.module_shapes().values())
            if device == "cpu":  # GPTQModel's loader keeps the stored file mapped beside its float16 copy
                parts["mapped_file"] = shape.params * shape.stored_bytes
    if method == "nf4" and device == "cpu":
        # NF4 through transformers' on-the-fly quantization holds more than the float16 source and the 4-bit
        # copy: 1.16 GB more at 0.6B, 0.57 GB at 1B (8-bit: 0.55 / 0.46), not traced; counted as a quarter of
        # the stored file, a transient
        parts["conversion"] = shape.params * shape.stored_bytes / 4
    return Estimate("quantize", device, parts, note=f"{method.upper()} {bits}-bit")


# ------------------------------------------------------------------------------------------ a preset's steps

#: Prompt positions assumed for evaluation's KV cache (the longest built-in prompts, SQuAD contexts).
EVAL_PROMPT_TOKENS = 1024
#: Prompts per generate call assumed when the preset leaves ``eval.batch_size`` on auto.
EVAL_AUTO_BATCH = 16


def find_config(ws: Any, base: str) -> Path | None:
    """The ``config.json`` of ``base``: a model folder's, else a hub id's in the Hugging Face cache, else None."""
    import os

    from engine.models.resolve import ModelNotFoundError, resolve_model_ref

    try:
        resolved = Path(resolve_model_ref(ws, base))
    except ModelNotFoundError:
        return None
    if (resolved / "config.json").is_file():
        return resolved / "config.json"
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
               / "hub")
    found = sorted((hub / f"models--{base.replace('/', '--')}" / "snapshots").glob("*/config.json"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def folder_config(folder: Path) -> Path | None:
    """A model folder's config.json, or for an adapter its base's (a local folder)."""
    if (folder / "config.json").is_file():
        return folder / "config.json"
    try:
        base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(base) / "config.json" if (Path(base) / "config.json").is_file() else None


def recorded_speed(ws: Any, base: str, method: str, device_kind: str) -> float | None:
    """Training tokens/s recorded by earlier runs on this base with this PEFT method on this device kind."""
    speeds = []
    for meta in Path(ws.models_dir).glob("*/training_metadata.json"):
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            info, preset = data["model_info"], data["training_parameters"]["preset"]
            device = str(data.get("hardware_info", {}).get("device", ""))
            speed = data["training_stats"].get("tokens_per_s")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if (info.get("base_model") == base and preset.get("peft", {}).get("method") == method and speed
                and ("cuda" in device) == (device_kind == "gpu")):
            speeds.append(float(speed))
    return max(speeds) if speeds else None


def _peft_kind(config: Any) -> str:
    return "full" if config.peft.method == "NoPeft" else "lora"


def step_estimate(config: Any, shape: ModelShape, step: Any, device: str, *, vllm: bool = False) -> Estimate:
    """The estimate of one :class:`engine.presets.plan.Step` of ``config`` on ``device`` (gpu | cpu); ``vllm``:
    vLLM is configured, so an evaluation of full weights on ``auto`` may run there (the larger figure counts)."""
    if step.kind == "snapshot":
        return snapshot_estimate(shape, device=device)
    if step.kind == "train":
        return train_estimate(shape, device=device, method=_peft_kind(config),
                              quant="4bit" if config.quant.method == "QLORA" else "none", r=config.peft.r,
                              targets=list(config.peft.target_modules),
                              batch=config.train.per_device_train_batch_size, seq=config.train.max_length,
                              checkpointing=config.train.gradient_checkpointing, dtype=config.model.dtype,
                              loss_chunk=config.train.loss_chunk_tokens,
                              accumulation=config.train.gradient_accumulation_steps)
    if step.kind == "quantize":
        o = step.options
        bits = o.get("bits") or (8 if str(o["method"]).lower() == "int8" else 4)
        estimate = quantize_estimate(shape, device=device, method=o["method"], bits=bits,
                                     group_size=o.get("group_size") or 64, samples=o.get("samples") or 128)
        if _peft_kind(config) == "lora" and not config.quant.merge_after_train:  # the adapter is merged first
            merged = merge_estimate(shape, device=device, r=config.peft.r, targets=list(config.peft.target_modules))
            if merged.bytes > estimate.bytes:
                return Estimate("quantize", device, merged.parts, note=estimate.note + ", after merging the adapter")
        return estimate
    # evaluation of the training output or of a PTQ output
    quantized = next((s for s in config.ptq if step.target.endswith(f"_{s.method.lower()}") or
                      f"_{s.method}" in step.target), None)
    batch = config.eval.batch_size if isinstance(config.eval.batch_size, int) and config.eval.batch_size > 0 \
        else EVAL_AUTO_BATCH  # 0 or "auto": the engine picks
    return eval_estimate(shape, device=device, bits=quantized.bits if quantized else 16, batch=batch,
                         method=quantized.method if quantized else "none", backend=config.eval.backend, vllm=vllm)


def eval_estimate(shape: ModelShape, *, device: str, bits: int = 16, batch: int = EVAL_AUTO_BATCH,
                  method: str = "none", backend: str = "auto", vllm: bool = False) -> Estimate:
    """An evaluation (prompts of up to :data:`EVAL_PROMPT_TOKENS` and the largest built-in ceiling): the built-in
    engine's figure, or vLLM's where it will run — ``backend`` vllm, or ``auto`` with vLLM configured (``vllm``),
    where either may run and the larger counts. vLLM loads full weights only."""
    from engine.data.tasks import MAX_NEW_TOKENS

    context = EVAL_PROMPT_TOKENS + max(MAX_NEW_TOKENS.values())
    builtin = inference_estimate(shape, device=device, bits=bits, batch=batch, context=context,
                                 prompt=EVAL_PROMPT_TOKENS, method=method)
    if bits < 16 or backend == "hf" or (backend != "vllm" and not vllm):
        return builtin
    through_vllm = vllm_estimate(shape, device=device, sequences=[context] * batch)
    return through_vllm if backend == "vllm" or through_vllm.bytes > builtin.bytes else builtin


def plan_estimates(config: Any, ws: Any, steps: list[Any], *, vllm: bool = False) -> dict[str, Any]:
    """Per step of ``steps``: ``memory_gb`` on a GPU and on the CPU, their parts, and a time where a speed was
    recorded (``vllm``: as :func:`step_estimate`). ``{"available": False, "reason"}`` when the base model's
    config.json cannot be found."""
    path = find_config(ws, config.model.base)
    if path is None:
        return {"available": False, "reason": f"no config.json for {config.model.base} (not a model folder, "
                                              "not in the Hugging Face cache)"}
    shape = ModelShape.from_file(path)
    rows = []
    for index, step in enumerate(steps):
        by_device = {device: step_estimate(config, shape, step, device, vllm=vllm) for device in ("gpu", "cpu")}
        row: dict[str, Any] = {"index": index, "kind": step.kind, "target": step.target,
                               "memory_gb": {d: e.gb for d, e in by_device.items()},
                               "floor_gb": {d: round(e.floor_bytes / GB, 2) for d, e in by_device.items()},
                               "parts_gb": {d: e.to_dict()["parts_gb"] for d, e in by_device.items()},
                               "note": by_device["gpu"].note, "time_s": {}}
        if step.kind == "train" and config.train.max_steps > 0:
            tokens = (config.train.max_steps * config.train.per_device_train_batch_size
                      * config.train.gradient_accumulation_steps * config.train.max_length)
            for device in ("gpu", "cpu"):
                speed = recorded_speed(ws, config.model.base, config.peft.method, device)
                if speed:
                    row["time_s"][device] = round(tokens / speed, 1)
        rows.append(row)
    return {"available": True, "config": str(path), "parameters": shape.params, "steps": rows}
