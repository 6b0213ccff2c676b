"""The lm-evaluation-harness model ``llmtui`` (job process): any model folder llmtui lists, loaded by
``engine.runs.loading``, evaluated with lm-eval's own task code.

It is lm-eval's ``hf`` backend (``HFLM``) given an already-loaded model, so tokenization, chat templates,
few-shot contexts and the ``until`` post-processing are lm-eval's own; three answers differ:

- ``generate_until`` (greedy) runs on llmtui's continuous-batching engine (``engine.runs.generation``):
  a row leaves the batch as soon as its text contains one of the request's ``until`` strings or it
  emits an end-of-sequence token, so one long answer no longer holds a whole static batch.
- ``loglikelihood`` computes a context shared by several different continuations (multiple-choice
  answers longer than one token) once, then scores every continuation from its KV cache.
- the folder kind (full, adapter, QLoRA, GPTQ, AWQ, HQQ, INT8, NF4) never reaches lm-eval: it sees
  a ``PreTrainedModel``.

Importing this module registers the class with lm-eval (``--model llmtui``).
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from engine.runs.generation import TextStop, attention_layout, buffer_layer_class, generate_all
from engine.runs.loading import LoadedModel, load_for_inference

#: A shared context is worth its own prefill only when at least this many different continuations follow it.
MIN_SHARED_CONTINUATIONS = 2
#: The stop check decodes only a generated text's last tokens: up to this many per character of the longest
#: stop string (a character can take four byte-level tokens) plus a margin (tokens that decode to nothing,
#: a leading space SentencePiece drops at the window's start).
STOP_TAIL_TOKENS_PER_CHAR = 4
STOP_TAIL_MARGIN = 8


def token_texts(tokenizer: Any) -> list[str]:
    """Each token's text alone and as it reads after another token, joined: the characters it may add to a
    text (SentencePiece drops a leading space from a text's first token only; U+FFFD where the two disagree
    otherwise, so that the token is asked about)."""
    size = len(tokenizer)
    alone = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
    anchor_ids = tokenizer.encode("a", add_special_tokens=False)[-1:]
    anchor = tokenizer.decode(anchor_ids, skip_special_tokens=False)
    after = tokenizer.batch_decode([anchor_ids + [i] for i in range(size)], skip_special_tokens=False)
    return [a + (b[len(anchor):] if b.startswith(anchor) else "\ufffd") for a, b in zip(alone, after)]


def stop_token_mask(texts: list[str], until: list[str], size: int):
    """Tokens after which a row's text may newly contain one of ``until``: a token whose text (``token_texts``)
    holds a stop string's last character, or a partial UTF-8 byte (U+FFFD). A token missed here only lets
    its row run on: lm-eval cuts every answer at its first stop string, so the answer is the same."""
    stops = [s for s in until if s]
    import torch

    mask = torch.zeros(size, dtype=torch.bool)
    last = {s[-1] for s in stops} | {"\ufffd"}
    mask[[i for i, text in enumerate(texts) if any(c in text for c in last)]] = True
    return mask


@dataclass
class GreedyPlan:
    """One group of greedy generate_until requests (same generation kwargs) made ready for an engine."""

    until: list[str]  # lm-eval's stop strings, its EOS text included
    max_gen_toks: int
    token_ids: list[list[int]]  # each context, tokenized and truncated as HFLM does
    mask: Any  # the tokens after which ``text_stop`` is asked
    text_stop: TextStop
    eos_ids: list[int]
    think: str | None  # a think-end marker whose text is dropped with what precedes it

    def answer(self, text: str) -> str:
        """lm-eval's post-processing of a generated text: cut at the first stop string."""
        from lm_eval.models.utils import postprocess_generated_text

        return postprocess_generated_text(generation=text, stop=self.until, think_end_token=self.think)


@functools.cache
def llmtui_lm_class() -> type:
    """The ``llmtui`` lm-eval model class, made (and registered with lm-eval) on first use, so that importing
    this module imports neither lm-eval nor torch."""
    import torch
    import torch.nn.functional as F
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs

    @register_model("llmtui")
    class LlmtuiLM(HFLM):
        """lm-eval's ``hf`` backend on a model loaded by llmtui (see the module docstring).

        ``pretrained`` is a model folder; ``loaded`` (a :class:`LoadedModel`) skips loading it again.
        """

        def __init__(self, pretrained: str, batch_size: int | str = 8, device: str | None = None,
                     loaded: LoadedModel | None = None, **kwargs: Any) -> None:
            loaded = loaded or load_for_inference(pretrained, device=device)
            super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer, backend="causal",
                             batch_size=int(batch_size), **kwargs)
            self.loaded, self.pretrained = loaded, str(pretrained)
            self._token_texts: list[str] | None = None

        # ------------------------------------------------------------------------------------ metadata

        def get_model_info(self) -> dict:
            """What the results file records about the model (HFLM's asks the Hub for a SHA; a folder has none)."""
            return {"model_num_parameters": sum(p.numel() for p in self._model.parameters()),
                    "model_dtype": str(getattr(self._model, "dtype", "")), "llmtui_kind": self.loaded.kind,
                    "llmtui_quantization": json.dumps(self.loaded.info.get("quantization"), default=str)}

        # ------------------------------------------------------------------------------------ generate_until

        def context_tokens(self, context: str, max_ctx_len: int) -> list[int]:
            """``context``'s token ids exactly as HFLM's ``tok_batch_encode`` makes them (left-truncated)."""
            special: dict[str, bool] = {}
            if has_bos_prefix(context, getattr(self.tokenizer, "bos_token", None)):
                special = {"add_special_tokens": False}
            elif self.add_bos_token is not None:
                special = {"add_special_tokens": self.add_bos_token}
            ids = self.tokenizer(context, truncation=self.truncation, **special)["input_ids"]
            return ids[-max_ctx_len:]

        def eos_ids(self) -> list[int]:
            """The ids ``model.generate`` would stop at: the generation config's end-of-sequence tokens."""
            config = getattr(self.model, "generation_config", None)
            eos = getattr(config, "eos_token_id", None)
            return [] if eos is None else [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

        def greedy_plan(self, gen_kwargs: dict, contexts: list[str]) -> GreedyPlan | None:
            """How a greedy request group is generated (None for sampled ones, or with a token-id think marker)."""
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            if kwargs.get("do_sample") or isinstance(self.think_end_token, int):
                return None
            until = handle_stop_sequences(kwargs.pop("until", None), eos=self.tok_decode(self.eot_token_id,
                                                                                         skip_special_tokens=False))
            max_gen_toks = kwargs.pop("max_gen_toks")
            stops = [s for s in until if s]

            window = STOP_TAIL_TOKENS_PER_CHAR * max((len(s) for s in stops), default=0) + STOP_TAIL_MARGIN

            def text_stop(tokens: list[int]) -> bool:
                # Like HFLM's stopping criterion: special tokens' texts count (an EOS spelt out in ``until``).
                # Asked after (nearly) every token, so only the tail is decoded: a stop string that appears
                # now ends in the newest token. A hit is confirmed on the whole text; a miss (a stop spread
                # over more than the window) only lets the row run on, and lm-eval's cut gives the same answer.
                tail = self.tokenizer.decode(tokens[-window:], skip_special_tokens=False)
                if not any(s in tail for s in stops):
                    return False
                text = self.tokenizer.decode(tokens, skip_special_tokens=False)
                return any(s in text for s in stops)

            if self._token_texts is None:
                self._token_texts = token_texts(self.tokenizer)
            rows = max(len(self.tokenizer), int(getattr(self.config, "vocab_size", 0) or 0))
            return GreedyPlan(until=until, max_gen_toks=max_gen_toks,
                              token_ids=[self.context_tokens(c, self.max_length - max_gen_toks) for c in contexts],
                              mask=stop_token_mask(self._token_texts, until, rows), text_stop=text_stop,
                              eos_ids=self.eos_ids(),
                              think=self.think_end_token if isinstance(self.think_end_token, str) else None)

        def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
            """Greedy requests on the continuous-batching engine; sampled ones on HFLM's ``generate``."""
            results: list[str | None] = [None] * len(requests)
            by_kwargs: dict[str, list[int]] = defaultdict(list)
            for index, request in enumerate(requests):
                by_kwargs[json.dumps(request.args[1], sort_keys=True, default=str)].append(index)
            for indexes in by_kwargs.values():
                gen_kwargs = requests[indexes[0]].args[1]
                contexts = [requests[i].args[0] for i in indexes]
                plan = self.greedy_plan(gen_kwargs, contexts)
                if plan is None:
                    answers = super().generate_until([requests[i] for i in indexes], disable_tqdm=disable_tqdm)
                    for index, answer in zip(indexes, answers):
                        results[index] = answer
                    continue
                generations, _ = generate_all(
                    self.model, self.tokenizer, plan.token_ids, max_new_tokens=plan.max_gen_toks,
                    batch_size=self.batch_size, brace_mask=plan.mask, eos_ids=plan.eos_ids, text_stop=plan.text_stop)
                for index, context, generation in zip(indexes, contexts, generations):
                    answer = plan.answer(generation.text)
                    results[index] = answer
                    self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer)
            return results  # type: ignore[return-value]

        # ------------------------------------------------------------------------------------ loglikelihood

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
            """HFLM's batched, length-sorted forward passes, except for contexts shared by several different
            continuations: those are computed once and their continuations scored from the KV cache."""
            shared = self._shared_context_groups(requests)
            in_groups = {i for members in shared.values() for i in members}
            rest = [i for i in range(len(requests)) if i not in in_groups]
            results: list[Any] = [None] * len(requests)
            if rest:
                answers = super()._loglikelihood_tokens([requests[i] for i in rest], disable_tqdm=disable_tqdm,
                                                        override_bs=override_bs)
                for index, answer in zip(rest, answers):
                    results[index] = answer
            if shared:
                for index, answer in self._score_shared(requests, shared).items():
                    results[index] = answer
            return results

        def _shared_context_groups(self, requests) -> dict[tuple[int, ...], list[int]]:
            """Request indexes by context, for contexts followed by enough different (untruncated) continuations."""
            if attention_layout(self.model) != "full":
                return {}  # holes in a row (left-padded prefixes) are right only when every layer sees everything
            groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
            for index, (_, context, continuation) in enumerate(requests):
                if len(context) >= 2 and len(context) + len(continuation) <= self.max_length + 1:
                    groups[tuple(context)].append(index)
            return {context: members for context, members in groups.items()
                    if len({tuple(requests[i][2]) for i in members}) >= MIN_SHARED_CONTINUATIONS
                    and any(len(requests[i][2]) > 1 for i in members)}  # one-token ones: HFLM's logits cache

        def _score_shared(self, requests, groups: dict[tuple[int, ...], list[int]]) -> dict[int, tuple[float, bool]]:
            """Each group's context (less its last token) prefilled once, left-padded with up to ``batch_size``
            other groups; then every distinct continuation, right-padded, reads that cache."""
            answers: dict[int, tuple[float, bool]] = {}
            ordered = sorted(groups.items(), key=lambda item: -len(item[0]))
            size = max(1, int(self.batch_size) if str(self.batch_size).isdigit() else 1)
            for start in range(0, len(ordered), size):
                chunk = ordered[start:start + size]
                for (context, members), scored in zip(chunk, self._score_chunk(requests, chunk)):
                    for index in members:
                        answer = scored[tuple(requests[index][2])]
                        answers[index] = answer
                        if requests[index][0] is not None:
                            self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
            return answers

        def _score_chunk(self, requests, chunk) -> list[dict[tuple[int, ...], tuple[float, bool]]]:
            device = self.device
            prefixes = [list(context[:-1]) for context, _ in chunk]
            width = max(len(p) for p in prefixes)
            prefix_ids = torch.tensor([[self.tokenizer.pad_token_id or 0] * (width - len(p)) + p for p in prefixes],
                                      device=device)
            prefix_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prefixes], device=device)
            rows: list[tuple[int, tuple[int, ...]]] = []  # (group, continuation)
            for group, (context, members) in enumerate(chunk):
                for continuation in dict.fromkeys(tuple(requests[i][2]) for i in members):
                    rows.append((group, continuation))
            tails = [[chunk[g][0][-1], *continuation[:-1]] for g, continuation in rows]
            tail_width = max(len(t) for t in tails)
            tail_ids = torch.tensor([t + [0] * (tail_width - len(t)) for t in tails], device=device)
            tail_mask = torch.tensor([[1] * len(t) + [0] * (tail_width - len(t)) for t in tails], device=device)
            index = torch.tensor([g for g, _ in rows], device=device)
            with torch.inference_mode():
                from transformers.cache_utils import DynamicCache

                output = self.model(input_ids=prefix_ids, attention_mask=prefix_mask,
                                    position_ids=(prefix_mask.cumsum(1) - 1).clamp(min=0), use_cache=True,
                                    logits_to_keep=1)
                layer = buffer_layer_class()
                cache = DynamicCache()
                width = prefix_ids.shape[1] + tail_width  # the whole cache: no room to double into
                cache.layers = [layer(old.keys[index], old.values[index], most=width) for old in output.cache.layers]
                cache.layer_class_to_replicate = layer
                mask = torch.cat([prefix_mask[index], tail_mask], dim=1)
                positions = prefix_mask.sum(1)[index][:, None] + torch.arange(tail_width, device=device)[None, :]
                logits = self.model(input_ids=tail_ids, attention_mask=mask, position_ids=positions,
                                    cache=cache, use_cache=True).logits
                logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            scored: list[dict[tuple[int, ...], tuple[float, bool]]] = [{} for _ in chunk]
            for row, (group, continuation) in enumerate(rows):
                wanted = torch.tensor(continuation, device=device)
                rows_logprobs = logprobs[row, :len(continuation)]
                greedy = bool((rows_logprobs.argmax(-1) == wanted).all())
                total = float(rows_logprobs.gather(1, wanted[:, None]).sum())
                scored[group][continuation] = (total, greedy)
            return scored

    return LlmtuiLM


def __getattr__(name: str):
    """``LlmtuiLM`` is made on first access (:func:`llmtui_lm_class`)."""
    if name == "LlmtuiLM":
        return llmtui_lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def task_manager(include_folder: Path | None, names: list[str] = ()):
    """lm-eval's TaskManager with ``include_folder`` (the workspace's ``Datasets/lm-eval-tasks/``) on its path.

    When every task in ``names`` is in that folder, lm-eval's own registry is left out: indexing its
    hundreds of YAMLs takes a minute on a busy machine.
    """
    from lm_eval.tasks import TaskManager

    include = [str(include_folder)] if include_folder is not None and include_folder.is_dir() else None
    if include and names:
        own = TaskManager(include_path=include, include_defaults=False)
        if set(names) <= set(own.all_tasks):
            return own
    return TaskManager(include_path=include)
