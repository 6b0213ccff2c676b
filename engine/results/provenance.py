"""The comparability guard: what two evaluations of one test set must share to be compared (any process).

Per test set, a run's provenance is a handful of aspects — prompt format, decoding, dataset file, answer
extraction, evaluation backend for llmtui's runs; task config, few-shot, prompt format, harness version and
backend for lm-evaluation-harness runs. :func:`guard_warnings` lists every aspect that differs between the
reference and another model, and "provenance unknown" for aspects a (legacy) file does not record.
"""

from __future__ import annotations

from typing import Any

from engine.data.prompts import COMPARED_FIELDS
from engine.results.records import DatasetResult, ResultRecord

#: eval_config.backend keys compared (the version and thread count do not change greedy outputs).
BACKEND_KEYS = ("name", "dtype")
UNKNOWN = "provenance unknown"


def dataset_provenance(record: ResultRecord, dataset: DatasetResult) -> dict[str, Any]:
    """Aspect → recorded value (a scalar or a small dict), None where the file does not record it."""
    if dataset.provenance:  # lm-evaluation-harness: the reader already collected its aspects
        return dict(dataset.provenance)
    config = record.eval_config or {}
    max_new = config.get("max_new_tokens")
    decoding = None
    if "decoding" in config or "stop" in config:
        decoding = {"decoding": config.get("decoding"), "stop": config.get("stop"),
                    "max_new_tokens": max_new.get(dataset.file) if isinstance(max_new, dict) else max_new}
    backend = config.get("backend")
    prompt_format = record.prompt_format
    return {
        # The prompt builder owns which fields matter (all but the rendered example).
        "prompt format": {k: prompt_format.get(k) for k in COMPARED_FIELDS} if prompt_format else None,
        "decoding": decoding,
        "dataset file": {"sha256": dataset.dataset_sha256} if dataset.dataset_sha256 else None,
        "answer extraction": {"extractor_version": record.extractor_version}
        if record.extractor_version is not None else None,
        "evaluation backend": {k: backend.get(k) for k in BACKEND_KEYS} if isinstance(backend, dict) else None,
    }


def guard_warnings(reference: ResultRecord, other: ResultRecord, file_name: str) -> list[str]:
    """Why ``other``'s run of ``file_name`` may not be comparable with ``reference``'s (empty when it is)."""
    ref = dataset_provenance(reference, reference.datasets[file_name])
    new = dataset_provenance(other, other.datasets[file_name])
    warnings = []
    unknown: dict[str, list[str]] = {}
    for aspect in dict.fromkeys([*ref, *new]):
        a, b = ref.get(aspect), new.get(aspect)
        if a is None or b is None:
            for record, value in ((reference, a), (other, b)):
                if value is None:
                    unknown.setdefault(record.name, []).append(aspect)
            continue
        if a != b:
            warnings.append(f"{aspect} differs: {_difference(a, b)}")
    if len(unknown) == 2 and len(set(map(tuple, unknown.values()))) == 1:
        warnings.append(f"{UNKNOWN}: neither run records its {', '.join(unknown[reference.name])}")
    else:
        warnings += [f"{UNKNOWN}: {name}'s run does not record its {', '.join(aspects)}"
                     for name, aspects in unknown.items()]
    return warnings


def _difference(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
        return "; ".join(f"{k} {_short(a.get(k))} vs {_short(b.get(k))}" for k in keys)
    return f"{_short(a)} vs {_short(b)}"


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:12] + "…"  # a SHA-256: its start tells two files apart
    return text if len(text) <= 40 else text[:39] + "…"
