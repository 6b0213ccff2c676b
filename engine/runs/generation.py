"""Greedy generation for evaluation with continuous batching over one KV cache (job process).

Prompts are token ids, admitted longest first. A row leaves the batch as soon as it reaches EOS,
closes its first ``\\boxed{…}`` (the scorer reads only the first box, so this changes no prediction)
or hits the ceiling, and waiting prompts take the freed places: the newcomers are prefilled and
joined to the others' KV cache, which is kept. Each row keeps its tokens contiguous (left padding)
or, when every prompt shares a leading prefix (system prompt, template) and the model is all
full-attention, is laid out as prefix, padding, own tokens, with the prefix computed once. Position
ids follow the attention mask, so padding changes no output: predictions equal one-at-a-time greedy
decoding (``generate_single``). Out of memory puts the batch's rows back in the queue (greedy
decoding recomputes them identically), halves the batch and goes on; no item is lost.

Models whose cache is not plain attention (linear attention, state-space layers) are generated one
at a time with ``generate_single``.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from engine.data.prompts import stop_token_ids
from engine.models.estimate import ModelShape, generation_rows, prefill_group
from engine.results.scoring import first_box_closed

#: A prompt set whose prompts share at least this many leading tokens computes them once (prefix KV cache).
MIN_SHARED_PREFIX = 8
#: Waiting prompts join a running batch once this fraction of its places is free (each join is a prefill
#: pass and a copy of the cache, so joining one row at a time would cost more than it saves).
REFILL_FRACTION = 0.25
#: Attention layer kinds whose cache rows can be dropped, padded on the left and concatenated.
BATCHABLE_LAYERS = {"full_attention", "sliding_attention"}


@dataclass
class Generation:
    """One item's generated text, its generated-token count, and its share of the generation wall time."""

    text: str
    tokens: int
    latency_s: float


#: Called with the number of rows a batch will hold before each prefill. A test seam: a test passes a hook
#: that raises ``torch.OutOfMemoryError`` above some size to exercise the halving path without a GPU.
BeforeGenerate = Callable[[int], None]
#: Called with ``(item index, Generation)`` for the rows that finished in one step, as soon as they finish.
RowsDone = Callable[[list[tuple[int, Generation]]], None]
#: Whether a row's generated token ids end it by their text; asked only after a token ``brace_mask`` marks.
#: The default is the built-in tasks' rule (the first ``\boxed{…}`` closed); lm-eval passes its ``until`` strings.
TextStop = Callable[[list[int]], bool]


def box_stop(tokenizer: Any) -> TextStop:
    """The built-in tasks' text stop: the generated text has closed its first box."""
    return lambda tokens: first_box_closed(tokenizer.decode(tokens, skip_special_tokens=True))


class OutOfMemory(RuntimeError):
    """Even one prompt does not fit in memory."""


# ------------------------------------------------------------------------------------------ helpers


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def brace_token_mask(tokenizer: Any, vocab_size: int):
    """A bool tensor over token ids: True where the token's text contains ``}`` (only those can close a box)."""
    import torch

    size = max(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    mask = torch.zeros(size, dtype=torch.bool)
    mask[[i for i, text in enumerate(texts) if "}" in text]] = True
    return mask


def shared_prefix_length(token_ids: list[list[int]]) -> int:
    """Tokens every prompt starts with (system prompt, template), leaving each at least one of its own."""
    shortest = min(len(ids) for ids in token_ids)
    first = token_ids[0]
    length = 0
    while length < shortest - 1 and all(ids[length] == first[length] for ids in token_ids):
        length += 1
    return length


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_layout(model: Any) -> str:
    """``full`` (every layer attends to everything), ``sliding`` (some layers see a window) or ``other``.

    Holes in a row (the shared-prefix layout) are right only for ``full``; ``sliding`` rows stay
    contiguous, so a window counted in cache columns is a window of tokens; ``other`` (linear
    attention, state-space layers) cannot drop or join rows.
    """
    config = _text_config(model)
    kinds = set(getattr(config, "layer_types", None) or ())
    if not kinds:
        sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
        return "sliding" if sliding else "full"
    if not kinds <= BATCHABLE_LAYERS:
        return "other"
    return "full" if kinds == {"full_attention"} else "sliding"


def ready_decode_mask(model: Any) -> bool:
    """Whether a decoding step may hand the model its attention mask ready-made, as transformers' SDPA path
    makes it for one new token ([rows, 1, 1, columns], True where a column holds one of the row's tokens):
    every layer full attention, SDPA, and transformers' own model code (its mask builder passes a 4D mask
    through). Building the mask anew took a sixth of a small model's decoding step."""
    config = _text_config(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper's model
    return attention_layout(model) == "full" and getattr(config, "_attn_implementation", None) == "sdpa" \
        and type(base).__module__.startswith("transformers.")


def host_memory_batch_cap(model: Any, prompt_tokens: int, new_tokens: int) -> int:
    """The most rows of ``prompt_tokens`` prompt positions and up to ``new_tokens`` generated ones whose KV cache and
    prefill transient (the estimator's) fit in half the free host memory.

    On the CPU running out of memory is not an exception but the OOM killer, so ``auto`` must not
    find the limit by trying.
    """
    import psutil
    import torch

    dtype = getattr(model, "dtype", torch.float32)
    element = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 4
    return generation_rows(ModelShape.from_attributes(_text_config(model)), psutil.virtual_memory().available * 0.5,
                           prompt_tokens, new_tokens, element)


def cut_at_stop(tokenizer: Any, tokens: list[int], eos_ids: list[int], brace_mask: Any,
                text_stop: TextStop | None = None) -> int:
    """How many of ``tokens`` the stop rule keeps: through the first EOS or the first token (of those
    ``brace_mask`` marks) that makes ``text_stop`` (default: :func:`box_stop`) true."""
    text_stop = text_stop or box_stop(tokenizer)
    eos = set(eos_ids)
    for length, token in enumerate(tokens, start=1):
        if token in eos or (token < len(brace_mask) and bool(brace_mask[token]) and text_stop(tokens[:length])):
            return length
    return len(tokens)


# ------------------------------------------------------------------------------------------ threads


def choose_threads(requested: int = 0, *, sample_s: float = 0.5) -> dict[str, Any]:
    """torch's intra-op threads for CPU generation: ``requested`` when above 0, else the cores free now.

    The free cores are the idle share of the usable cores over ``sample_s`` (rounded down, at least
    one): on a shared machine torch's default of one thread per core made generation about 4x slower
    than one thread, its threads waiting on one another while other processes hold the cores. Sets
    the choice and returns it with its reason, for the metrics file.
    """
    import psutil
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested > 0:
        threads, reason = requested, "requested"
    else:
        idle = psutil.cpu_times_percent(interval=sample_s).idle / 100 * (psutil.cpu_count() or usable)
        threads = max(1, min(usable, int(idle)))
        reason = f"{idle:.1f} of {usable} cores idle"
    torch.set_num_threads(threads)
    return {"threads": threads, "reason": reason, "cores": usable}


# ------------------------------------------------------------------------------------ reference path


def _stop_criterion(tokenizer: Any, prompt_length: int, batch: int, eos_ids: list[int], brace_mask, device,
                    text_stop: TextStop):
    """A StoppingCriteria that finishes each row at EOS or by ``text_stop``, recording its length."""
    import torch
    from transformers import StoppingCriteria

    class FirstBoxOrEos(StoppingCriteria):
        def __init__(self) -> None:
            self.done = torch.zeros(batch, dtype=torch.bool, device=device)
            self.lengths = [0] * batch
            self.eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
            self.brace = brace_mask.to(device)

        def __call__(self, input_ids, scores, **kwargs):
            generated = input_ids.shape[1] - prompt_length
            last = input_ids[:, -1]
            newly = ~self.done & torch.isin(last, self.eos)
            closers = (~self.done & ~newly & self.brace[last]).nonzero().flatten().tolist()
            for row in closers:
                if text_stop(input_ids[row, prompt_length:].tolist()):
                    newly[row] = True
            for row in newly.nonzero().flatten().tolist():
                self.lengths[row] = generated
            self.done |= newly
            return self.done.clone()

    return FirstBoxOrEos()


def input_device(model: Any):
    """The device a model's inputs go to (its first parameter's when it does not say)."""
    import torch

    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return torch.device(device)


def greedy_generation_config(model: Any, tokenizer: Any, max_new_tokens: int, eos_ids: list[int] | None = None):
    """The model's own generation config made greedy, stopping at every end-of-turn token (``stop_token_ids``)."""
    import copy

    from transformers import GenerationConfig

    eos_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None)) if eos_ids is None else eos_ids
    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if isinstance(base, GenerationConfig) else GenerationConfig()
    config.update(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, min_p=None,
                  max_new_tokens=max_new_tokens, max_length=None, eos_token_id=eos_ids,
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0])
    return config


def generate_single(model: Any, tokenizer: Any, token_ids: list[int], max_new_tokens: int,
                    brace_mask: Any, eos_ids: list[int] | None = None,
                    text_stop: TextStop | None = None) -> tuple[str, int]:
    """One prompt through transformers' ``generate`` (greedy, same stop rule): the reference the batched
    engine must equal, and the path for models whose cache cannot be batched row by row."""
    import torch
    from transformers import StoppingCriteriaList

    eos_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None)) if eos_ids is None else eos_ids
    config = greedy_generation_config(model, tokenizer, max_new_tokens, eos_ids)
    device = input_device(model)
    criterion = _stop_criterion(tokenizer, len(token_ids), 1, eos_ids, brace_mask, device,
                                text_stop or box_stop(tokenizer))
    with torch.inference_mode():
        output = model.generate(input_ids=torch.tensor([token_ids], device=device),
                                attention_mask=torch.ones(1, len(token_ids), dtype=torch.long, device=device),
                                generation_config=config, stopping_criteria=StoppingCriteriaList([criterion]))
    generated = output[0, len(token_ids):]
    length = criterion.lengths[0] if criterion.done[0] else generated.shape[0]
    return tokenizer.decode(generated[:length], skip_special_tokens=True), int(length)


# ------------------------------------------------------------------------------------ batched engine


@functools.cache
def buffer_layer_class():
    """A transformers cache layer whose keys and values live in buffers with room to grow (doubling).

    transformers' ``DynamicLayer`` concatenates the whole cache with each new token, which made copying
    the largest cost of a long generation here; writing one column into a buffer does not.
    """
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        def __init__(self, keys: Any = None, values: Any = None, *, most: int | None = None) -> None:
            super().__init__()
            self.length, self.buffers, self.most = 0, None, most
            if keys is not None:  # the tensors given are never written to: the first update grows a buffer
                self.device, self.is_initialized = keys.device, True
                self.keys, self.values, self.length = keys, values, keys.shape[-2]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if self.buffers is None or end > self.buffers[0].shape[-2]:
                # Where the engine knows the most columns the batch will reach (its width + the ceiling on new
                # tokens) the buffer takes them at once; doubling would hold twice a long prompt's cache for a
                # 16-token answer (1B, 32 rows of ~780 tokens: 3.3 GB instead of 1.7)
                capacity = self.most if self.most is not None and end <= self.most else max(end, 2 * self.length)
                grown = []
                for old, new in ((self.keys, key_states), (self.values, value_states)):
                    buffer = new.new_empty((*new.shape[:2], capacity, new.shape[-1]))
                    if self.length:
                        buffer[:, :, :self.length] = old
                    grown.append(buffer)
                self.buffers = tuple(grown)
            keys, values = self.buffers
            keys[:, :, self.length:end] = key_states
            values[:, :, self.length:end] = value_states
            self.length = end
            self.keys, self.values = keys[:, :, :end], values[:, :, :end]
            return self.keys, self.values

        @classmethod
        def stacked(cls, parts: list[Any], width: int, most: int) -> "BufferLayer":
            """The rows of ``parts`` one after another, each left-padded with zeros to ``width`` columns, written
            straight into buffers of ``most`` columns (the most the joined batch will reach)."""
            buffers = []
            for name in ("keys", "values"):
                tensors = [getattr(part, name) for part in parts]
                first = tensors[0]
                buffer = first.new_empty((sum(t.shape[0] for t in tensors), first.shape[1], most, first.shape[-1]))
                row = 0
                for tensor in tensors:
                    rows, pad = tensor.shape[0], width - tensor.shape[-2]
                    buffer[row:row + rows, :, :pad] = 0  # masked, but must be finite: 0 x NaN is NaN
                    buffer[row:row + rows, :, pad:width] = tensor
                    row += rows
                buffers.append(buffer)
            return cls.over(buffers[0], buffers[1], width, most)

        @classmethod
        def over(cls, keys: Any, values: Any, length: int, most: int) -> "BufferLayer":
            """A layer holding the first ``length`` columns of ``keys`` and ``values``, buffers its updates write
            into (its own, or rows of a larger batch's)."""
            layer = cls(keys[:, :, :length], values[:, :, :length], most=most)
            layer.buffers = (keys, values)
            return layer

        def keep(self, rows: list[int], start: int) -> None:
            """Keep ``rows`` (ascending) and the columns from ``start``, moved to the front of this layer's own
            buffers: no new buffer (the next update would grow it, copying again), and the rows before the
            first one dropped stay where they are."""
            if self.buffers is None:  # made from tensors it may not write to
                self.keys, self.values = self.keys[rows, :, start:], self.values[rows, :, start:]
                self.length = self.keys.shape[-2]
                return
            end = self.length - start
            for buffer in self.buffers:
                for row, source in enumerate(rows):
                    if source != row or start:
                        moved = buffer[source, :, start:self.length]
                        buffer[row, :, :end] = moved.clone() if source == row else moved  # a row onto itself overlaps
            self.buffers = tuple(buffer[:len(rows)] for buffer in self.buffers)
            self.length = end
            self.keys, self.values = self.buffers[0][:, :, :end], self.buffers[1][:, :, :end]

    return BufferLayer


class _Batch:
    """The running rows: their KV cache layers, attention mask, tokens so far."""

    def __init__(self, items: list[int], layers: list[Any], mask: Any, last: Any) -> None:
        self.items = items  # item index per row
        self.layers = layers  # BufferLayer per model layer; keys and values are [rows, heads, columns, head_dim]
        self.mask = mask  # [rows, columns], 1 where a column holds one of the row's tokens
        self.last = last  # [rows] the token each row feeds next
        self.generated: list[list[int]] = [[] for _ in items]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in order), then drop leading columns no remaining row uses."""
        import torch

        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.items = [self.items[r] for r in rows]
        self.generated = [self.generated[r] for r in rows]
        self.mask, self.last = self.mask[index], self.last[index]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.mask.shape[1]
        self.mask = self.mask[:, start:]
        for layer in self.layers:
            layer.keep(rows, start)

    def join(self, other: "_Batch", room: int) -> None:
        """Append ``other``'s rows, padding the shorter cache on the left (its rows stay contiguous), in buffers
        with ``room`` columns to grow."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])

        def left_pad(tensor, dim: int):
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        layer = buffer_layer_class()
        self.layers = [layer.stacked([mine, theirs], width, width + room)
                       for mine, theirs in zip(self.layers, other.layers)]
        self.mask = torch.cat([left_pad(self.mask, 1), left_pad(other.mask, 1)])
        self.last = torch.cat([self.last, other.last])
        self.items += other.items
        self.generated += other.generated


class _Engine:
    """Continuous batching for one prompt set (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, token_ids: list[list[int]], max_new_tokens: int,
                 brace_mask: Any, eos_ids: list[int], text_stop: TextStop) -> None:
        import torch

        self.model, self.tokenizer, self.token_ids, self.text_stop = model, tokenizer, token_ids, text_stop
        self.max_new_tokens = max_new_tokens
        self.device = input_device(model)
        self.eos = torch.tensor(eos_ids, dtype=torch.long, device=self.device)
        self.brace = brace_mask.to(self.device)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(self.eos[0])
        self.ready_mask = ready_decode_mask(model) and self._ready_mask_agrees(token_ids[0][-1] if token_ids else 0)
        self.prefix_length = 0
        self.prefix: list[Any] = []  # the shared prefix's cache layers (one row)
        if len(token_ids) > 1 and attention_layout(model) == "full":
            shared = shared_prefix_length(token_ids)
            if shared >= MIN_SHARED_PREFIX:
                self.prefix_length = shared
                self.prefix = self._forward_layers(torch.tensor([token_ids[0][:shared]], device=self.device))

    def _forward(self, input_ids, mask, positions, layers, most: int | None = None):
        """Logits of the last position and the cache; layers it creates hold up to ``most`` columns (None: grow by
        doubling)."""
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        cache.layers, cache.layer_class_to_replicate = list(layers), functools.partial(buffer_layer_class(), most=most)
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                            use_cache=True, logits_to_keep=1)
        return output.logits[:, -1, :], output.cache.layers

    def _ready_mask_agrees(self, token: int) -> bool:
        """Whether a decoding step with the ready-made mask gives exactly the logits transformers' own mask gives,
        on two rows, one left-padded (not so for a model that reads the 2D mask for more than attention, as
        ALiBi models build their biases from it)."""
        import torch

        mask = torch.tensor([[1, 1], [0, 1]], device=self.device)
        step = torch.cat([mask, mask.new_ones(2, 1)], dim=1)
        logits = []
        try:
            with torch.inference_mode():
                for ready in (False, True):
                    _, layers = self._forward(torch.tensor([[token, token], [self.pad, token]], device=self.device),
                                              mask, (mask.cumsum(1) - 1).clamp(min=0), [])
                    out, _ = self._forward(torch.tensor([[token], [token]], device=self.device),
                                           step.bool()[:, None, None, :] if ready else step,
                                           step.sum(1, keepdim=True) - 1, layers)
                    logits.append(out)
        except (RuntimeError, ValueError, TypeError):
            return False
        return torch.equal(*logits)

    def _forward_layers(self, input_ids):
        import torch

        ones = torch.ones_like(input_ids)
        _, layers = self._forward(input_ids, ones, (ones.cumsum(1) - 1), [])
        return layers

    def prefill(self, items: list[int]) -> _Batch:
        """The newcomers' cache and first generated token: [prefix, padding, own tokens] or left-padded.

        The rows go through the model in groups of :func:`prefill_group` (one layer's activations over a whole
        batch of long prompts outweighed its KV cache: 3.3 GB against 1.7 at 1B, 32 rows of ~780 tokens), each
        group writing its keys and values straight into its rows of the batch's cache."""
        import torch

        shared = self.prefix_length
        rows = [self.token_ids[i] for i in items]
        width = max(len(ids) for ids in rows) - shared
        input_ids = torch.tensor([[self.pad] * (width - len(ids) + shared) + ids[shared:] for ids in rows],
                                 device=self.device)
        own = torch.tensor([[0] * (width - len(ids) + shared) + [1] * (len(ids) - shared) for ids in rows],
                           device=self.device)
        mask = torch.cat([torch.ones(len(rows), shared, dtype=own.dtype, device=self.device), own], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)[:, shared:]
        most = mask.shape[1] + self.max_new_tokens  # the widest these rows get before they leave or are re-stacked
        layer = buffer_layer_class()
        group = prefill_group(len(rows), width)
        whole: list[tuple[Any, Any]] = []  # each layer's keys and values buffers for all the rows
        firsts = []
        for start in range(0, len(rows), group):
            part = slice(start, start + group)
            count = len(rows[part])
            if not whole:
                layers = [layer(p.keys.expand(count, -1, -1, -1), p.values.expand(count, -1, -1, -1), most=most)
                          for p in self.prefix]
            else:  # the group's rows of the whole buffers, the shared prefix first
                layers = []
                for index, (keys, values) in enumerate(whole):
                    if self.prefix:
                        prefix = self.prefix[index]
                        keys[part, :, :shared], values[part, :, :shared] = prefix.keys, prefix.values
                    layers.append(layer.over(keys[part], values[part], shared, most))
            logits, layers = self._forward(input_ids[part], mask[part], positions[part], layers, most)
            firsts.append(logits.argmax(-1))
            if count < len(rows) and not whole:  # the first group's buffers move into the whole batch's, layer by layer
                for index, done in enumerate(layers):
                    keys, values = done.buffers
                    whole.append((keys.new_empty((len(rows), *keys.shape[1:])),
                                  values.new_empty((len(rows), *values.shape[1:]))))
                    whole[-1][0][part], whole[-1][1][part] = keys, values
                    layers[index] = None  # its buffers go with it, before the next layer's whole ones are made
        if whole:
            layers = [layer.over(keys, values, mask.shape[1], most) for keys, values in whole]
        return _Batch(list(items), layers, mask, torch.cat(firsts))

    def step(self, batch: _Batch) -> None:
        """One decoding step for every row: feed its last token, take the argmax as the next."""
        import torch

        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.items), 1)], dim=1)
        positions = (batch.mask.sum(1, keepdim=True) - 1)
        mask = batch.mask.bool()[:, None, None, :] if self.ready_mask else batch.mask
        logits, batch.layers = self._forward(batch.last[:, None], mask, positions, batch.layers)
        batch.last = logits.argmax(-1)

    def finished_rows(self, batch: _Batch) -> list[int]:
        """Record each row's newest token (``batch.last``) and say which rows are done with it."""
        import torch

        last = batch.last
        eos = torch.isin(last, self.eos).tolist()
        brace = self.brace[last].tolist()
        done = []
        for row, token in enumerate(last.tolist()):
            generated = batch.generated[row]
            generated.append(token)
            if eos[row] or len(generated) >= self.max_new_tokens or (brace[row] and self.text_stop(generated)):
                done.append(row)
        return done


def generate_all(model: Any, tokenizer: Any, token_ids: list[list[int]], *, max_new_tokens: int, batch_size: int,
                 brace_mask: Any, host_memory_cap: bool = False,
                 on_progress: Callable[[int, int], None] | None = None,
                 before_generate: BeforeGenerate | None = None, on_rows_done: RowsDone | None = None,
                 eos_ids: list[int] | None = None, text_stop: TextStop | None = None) -> tuple[list[Generation], int]:
    """Generate for every prompt (token ids) with continuous batching of at most ``batch_size`` rows.

    A row ends at one of ``eos_ids``, at ``max_new_tokens``, or when a token ``brace_mask`` marks makes
    ``text_stop`` (default: :func:`box_stop`) true.

    ``host_memory_cap`` first lowers the batch to what host memory holds (``auto`` on the CPU). Each
    finished row is reported to ``on_rows_done`` (and counted in ``on_progress``) as soon as it ends.
    Returns the generations in the prompts' order and the batch size in use at the end.
    """
    import torch

    text_stop = text_stop or box_stop(tokenizer)
    total = len(token_ids)
    lengths = [len(ids) for ids in token_ids]
    waiting = sorted(range(total), key=lambda i: -lengths[i])
    results: dict[int, Generation] = {}
    size = max(1, batch_size)
    if host_memory_cap and lengths:
        size = min(size, host_memory_batch_cap(model, max(lengths), max_new_tokens))

    def finish(done: list[tuple[int, Generation]]) -> None:
        for index, generation in done:
            results[index] = generation
        if on_rows_done is not None and done:
            on_rows_done(done)
        if on_progress is not None and done:
            on_progress(len(results), total)

    if total and attention_layout(model) == "other":
        for index in waiting:
            if before_generate is not None:
                before_generate(1)
            started = time.perf_counter()
            text, tokens = generate_single(model, tokenizer, token_ids[index], max_new_tokens, brace_mask, eos_ids,
                                           text_stop)
            finish([(index, Generation(text, tokens, time.perf_counter() - started))])
        return [results[index] for index in range(total)], 1

    eos_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None)) if eos_ids is None else eos_ids
    engine = _Engine(model, tokenizer, token_ids, max_new_tokens, brace_mask, eos_ids, text_stop) if total else None
    batch: _Batch | None = None
    shares: dict[int, float] = {}  # each item's share of the wall time of the passes it took part in

    def harvest(rows: _Batch) -> _Batch | None:
        """Report the rows whose newest token ended them; the rest of ``rows`` (None when none are left)."""
        ended = set(engine.finished_rows(rows))
        if not ended:
            return rows
        finish([(rows.items[r], Generation(tokenizer.decode(rows.generated[r], skip_special_tokens=True),
                                           len(rows.generated[r]), shares.pop(rows.items[r])))
                for r in sorted(ended)])
        left = [r for r in range(len(rows.items)) if r not in ended]
        if not left:
            return None
        rows.keep(left)
        return rows

    with torch.inference_mode():
        while waiting or batch is not None:
            active = len(batch.items) if batch is not None else 0
            free = size - active
            admit = waiting and free > 0 and (batch is None or free >= max(1, int(size * REFILL_FRACTION)))
            attempted = active + min(free, len(waiting)) if admit else active
            try:
                started = time.perf_counter()
                if admit:
                    if before_generate is not None:
                        before_generate(attempted)
                    stepped = engine.prefill(waiting[:free])
                else:
                    engine.step(batch)
                    stepped = batch
                elapsed = time.perf_counter() - started
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                free_memory()
                if attempted <= 1:
                    item = batch.items[0] if batch is not None else waiting[0]
                    raise OutOfMemory(f"out of memory even with one prompt of {lengths[item]} tokens") from None
                # The batch's rows go back in the queue: greedy decoding recomputes them identically.
                waiting = sorted((batch.items if batch is not None else []) + waiting, key=lambda i: -lengths[i])
                batch = None
                size = (attempted + 1) // 2
                continue
            for item in stepped.items:
                shares[item] = shares.get(item, 0.0) + elapsed / len(stepped.items)
            if admit:
                del waiting[:len(stepped.items)]
                joined = harvest(stepped)
                if joined is not None and batch is not None:
                    batch.join(joined, room=max_new_tokens)
                elif joined is not None:
                    batch = joined
            else:
                batch = harvest(batch)
    return [results[index] for index in range(total)], size


class HFBackend:
    """The built-in engine for one loaded model: ``generate`` takes token ids like the vLLM backend."""

    name = "hf"

    def __init__(self, loaded: Any, *, batch_size: int, host_memory_cap: bool, threads: dict[str, Any] | None,
                 before_generate: BeforeGenerate | None = None) -> None:
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.batch_size, self.host_memory_cap, self.threads = batch_size, host_memory_cap, threads
        self.before_generate = before_generate
        self.batch_size_used = batch_size
        self.vocab_size = int(getattr(self.model.config, "vocab_size", 0) or 0)

    def describe(self) -> dict[str, Any]:
        import transformers

        return {"name": "hf", "version": transformers.__version__,
                "dtype": str(getattr(self.model, "dtype", "")).replace("torch.", ""),
                "threads": self.threads["threads"] if self.threads else None}

    def generate(self, token_ids: list[list[int]], max_new_tokens: int, *, eos_ids: list[int], brace_mask: Any,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_rows_done: RowsDone | None = None) -> list[Generation]:
        generations, self.batch_size_used = generate_all(
            self.model, self.tokenizer, token_ids, max_new_tokens=max_new_tokens, batch_size=self.batch_size,
            brace_mask=brace_mask, host_memory_cap=self.host_memory_cap, on_progress=on_progress,
            before_generate=self.before_generate, on_rows_done=on_rows_done, eos_ids=eos_ids)
        return generations

    def close(self) -> None:
        del self.model
        free_memory()
