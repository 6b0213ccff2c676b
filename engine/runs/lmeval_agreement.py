"""``llmtui eval --lm-eval … --check-backends N``: the first N generate_until items of an lm-eval run generated
again by vLLM, and the share whose answers equal the built-in engine's (job process).

vLLM gets the same token ids, the same ceiling and end-of-sequence tokens; its tokens are cut where the
request's ``until`` strings first appear, as the ``llmtui`` class cuts its own, and lm-eval's
post-processing is applied to both. vLLM's worker returns tokens, not log-probabilities, so
loglikelihood tasks are not compared (the record says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.workspace import Workspace


def _generate_items(samples: dict[str, list[dict[str, Any]]], count: int) -> list[tuple[str, str, dict, str]]:
    """Up to ``count`` ``(task, context, gen_kwargs, our answer)`` from lm-eval's samples, tasks in order."""
    items = []
    for task, rows in samples.items():
        for row in rows:
            arguments = row.get("arguments")
            # in memory a list of request args, ``[(context, gen_kwargs)]``; in the samples file ``gen_args_0``
            if isinstance(arguments, dict):
                first = arguments.get("gen_args_0") or {}
                arguments = [(first.get("arg_0"), first.get("arg_1"))]
            context, gen_kwargs = (list(arguments[0]) + [None, None])[:2] if arguments else (None, None)
            if isinstance(context, str) and isinstance(gen_kwargs, dict):
                items.append((task, context, gen_kwargs, row["resps"][0][0]))
            if len(items) >= count:
                return items
    return items


def backend_agreement(ws: Workspace, model_dir: Path, lm: Any, samples: dict[str, list[dict[str, Any]]],
                      count: int) -> dict[str, Any]:
    """``{"measured", "items", "agreeing", "rate", "other": vLLM's description | "reason"}`` for ``count`` items."""
    from engine.models.folder import detect_kind
    from engine.runs.evaluate import EvalError, choose_backend
    from engine.runs.vllm_client import VLLMBackend, VLLMError

    items = _generate_items(samples, count)
    if not items:
        return {"measured": False, "reason": "no generate_until items (vLLM's worker returns no log-probabilities)"}
    found = detect_kind(model_dir)
    try:
        _, python, _ = choose_backend(ws, "vllm", found)
    except EvalError as exc:
        return {"measured": False, "reason": str(exc)}
    groups: dict[str, list[int]] = {}
    for index, (_, _, gen_kwargs, _) in enumerate(items):
        groups.setdefault(json.dumps(gen_kwargs, sort_keys=True, default=str), []).append(index)
    plans = [(indexes, lm.greedy_plan(items[indexes[0]][2], [items[i][1] for i in indexes]))
             for indexes in groups.values()]
    plans = [(indexes, plan) for indexes, plan in plans if plan is not None]
    if not plans:
        return {"measured": False, "reason": "the generate_until items are sampled, not greedy"}
    sequences = [[len(ids) + plan.max_gen_toks for ids in plan.token_ids] for _, plan in plans]
    device = "cpu" if str(lm.device) == "cpu" else "gpu"
    try:
        backend = VLLMBackend(python, model_dir, lm.tokenizer, sequences=sequences, device=device,
                              trust_remote_code=found.trust_remote_code,
                              dtype="float32" if device == "cpu" else "auto")
    except VLLMError as exc:
        return {"measured": False, "reason": str(exc)}
    agreeing, differing = 0, []  # answers equal / not
    try:
        for indexes, plan in plans:
            generations = backend.generate(plan.token_ids, plan.max_gen_toks, eos_ids=plan.eos_ids,
                                           brace_mask=plan.mask, text_stop=plan.text_stop)
            for index, generation in zip(indexes, generations):
                answer = plan.answer(generation.text)
                if answer == items[index][3]:
                    agreeing += 1
                else:
                    differing.append({"task": items[index][0], "llmtui": items[index][3][:200], "vllm": answer[:200]})
    finally:
        backend.close()
    compared = sum(len(indexes) for indexes, _ in plans)
    return {"measured": True, "items": compared, "agreeing": agreeing, "rate": agreeing / compared,
            "other": backend.describe(), "differing": differing[:5]}
