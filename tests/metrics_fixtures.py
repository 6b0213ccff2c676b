"""Builders of metrics and predictions files for the results/compare tests.

``write_evaluation`` scores given model outputs with engine.results.scoring and writes the two files in the
shape the evaluator writes (Testing/metrics/{model}.json and Testing/predictions/{model}/*.jsonl).
``legacy_metrics`` returns a file in the shape the old research scripts wrote: percentages, their
metric key names, a Windows-path model name.
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.files import write_json, write_jsonl
from engine.results.scoring import extract_boxed, score_item, summarize_dataset
from engine.workspace import Workspace

KIND_BY_FILE = {
    "test-ai2_arc.parquet": "mcq4",
    "test-boolq.parquet": "boolq",
    "test-squad_v2.parquet": "squad_v2",
    "test-OpenMathInstruct-2.parquet": "math_numeric",
}


#: The provenance the evaluator records (extractor version, prompt format, decoding, backend); every
#: file written by ``write_evaluation`` carries it unless told otherwise, so comparisons are clean.
PROVENANCE: dict[str, Any] = {
    "extractor_version": 1,
    "prompt_format": {"chat_template_sha256": "f" * 64, "system_placement": "system", "date_string": None,
                      "enable_thinking": False, "bos_in_text": False, "reasoning_block": False,
                      "example": "System: …"},
    "eval_config": {"decoding": "greedy", "stop": "EOS or the first closed \\boxed{}",
                    "max_new_tokens": {file_name: 16 for file_name in KIND_BY_FILE},
                    "backend": {"name": "hf", "version": "5.24.0", "dtype": "float32", "threads": 1}},
}


def boxed(answer: Any) -> str:
    return f"The answer is \\boxed{{{answer}}}"


def write_evaluation(ws: Workspace, model: str, outputs: dict[str, list[str]],
                     golds: dict[str, list[Any]], *, prompts: dict[str, list[str]] | None = None,
                     write_predictions: bool = True, peak_gb: tuple[float, float] = (2.5, 2.0),
                     provenance: dict[str, Any] | None = None, dataset_sha256: dict[str, str] | None = None) -> None:
    """Score ``outputs[file][i]`` against ``golds[file][i]`` and write metrics + predictions.

    ``provenance`` replaces the top-level provenance keys (default :data:`PROVENANCE`; ``{}`` writes a
    legacy file without them) and ``dataset_sha256`` each test set's file hash (default: one per file
    name, the same for every model)."""
    provenance = PROVENANCE if provenance is None else provenance
    if dataset_sha256 is None and provenance:
        dataset_sha256 = {name: hashlib.sha256(name.encode()).hexdigest() for name in outputs}
    datasets = {}
    for file_name, texts in outputs.items():
        kind = KIND_BY_FILE[file_name]
        scores = [score_item(kind, text, gold) for text, gold in zip(texts, golds[file_name], strict=True)]
        datasets[file_name] = summarize_dataset(kind, scores, [0.01 * (i % 7 + 1) for i in range(len(scores))],
                                                [5 + i % 3 for i in range(len(scores))])
        if write_predictions:
            item_prompts = (prompts or {}).get(file_name) or [f"{file_name} question {i}" for i in range(len(texts))]
            # The evaluator's row: normalised pred, gold as in the dataset.
            rows = [{"index": i, "prompt": item_prompts[i], "output": text, "extracted": extract_boxed(text),
                     "pred": s.pred,
                     "gold": gold, "correct": s.correct, "has_box": s.has_box,
                     **({"f1": s.f1} if kind == "squad_v2" else {})}
                    for i, (text, s, gold) in enumerate(zip(texts, scores, golds[file_name]))]
            stem = file_name.removesuffix(".parquet")
            write_jsonl(ws.predictions_folder(model) / f"{stem}.jsonl", rows)
        if dataset_sha256 and file_name in dataset_sha256:
            datasets[file_name]["dataset_sha256"] = dataset_sha256[file_name]
    total = sum(d["total_samples"] for d in datasets.values())
    correct = sum(d["correct"] for d in datasets.values())
    reserved, allocated = peak_gb
    write_json(ws.metrics_file(model), {
        "model_name": model,
        "evaluated_at": "2026-11-02T10:00:00",
        "summary": {
            "num_datasets": len(datasets), "total_samples": total, "total_correct": correct,
            "total_incorrect": total - correct, "overall_accuracy": correct / total if total else None,
            "latency_seconds": {"sum": 1.0, "mean": 0.02}, "tokens_generated": {"sum": 10, "mean": 5.0},
            "quantization": {"method": "NoQuant", "quant_tag": "NoQuant"},
            "peak_vram_reserved_gb": reserved, "peak_vram_allocated_gb": allocated,
        },
        "datasets": datasets,
        "quantization": {"method": "NoQuant", "quant_tag": "NoQuant", "bits": 16, "group_size": None,
                         "backend": None},
        "hardware": {"peak_vram_reserved_gb": reserved, "peak_vram_allocated_gb": allocated,
                     "per_gpu": [{"gpu": 0, "peak_reserved_gb": reserved, "peak_allocated_gb": allocated}]},
        "eval_config": {"batch_size": 8, **provenance.get("eval_config", {})},
        "throughput": {"items_per_s": 100.0},
        "llmtui_version": "0.1.0",
        **{key: value for key, value in provenance.items() if key != "eval_config"},
    })


def legacy_metrics() -> dict[str, Any]:
    """A metrics file as the old research scripts wrote it: no boolq, a null, percentages."""
    return {
        "model_name": "Models\\Qwen3-8B-openmath_SFT_LoRa256_QLORA_w4_headbf16",
        "evaluated_at": "2025-10-20T15:07:25",
        "summary": {
            "num_datasets": 3, "total_samples": 150, "total_correct": 75, "total_incorrect": 75,
            "overall_accuracy": 50.0,
            "latency_seconds": {"sum": 445.6912, "mean": 2.9713, "median": 0.5104, "mode": 0.431, "std": 9.2},
            "tokens_generated": {"sum": 6643, "mean": 44.29},
            "quantization": {"method": "QLORA", "weights_bits": 4, "group_size": None},
            "peak_vram_reserved_gb": 7.262, "peak_vram_allocated_gb": 6.023,
        },
        "datasets": {
            "test-ai2_arc.parquet": {
                "type": "mcq4", "total_samples": 50, "format_success_rate": 100.0, "correct": 44,
                "incorrect": 6, "accuracy": 88.0,
                "metrics": {"task": "ARC (4-way MCQ)", "macro_f1": 0.8803,
                            "per_class": {"A": {"precision": 1.0, "recall": 0.8667, "f1": 0.9286}},
                            "confusion_matrix": {"A": {"A": 13, "B": 0, "C": 0, "D": 2}}, "support": 50},
                "latency_seconds": {"per_prompt": [0.8877, 0.4078], "sum": 134.6815, "mean": 2.6936},
                "tokens_generated": {"per_prompt": [5, 5], "sum": 2015, "mean": 40.3},
            },
            "test-OpenMathInstruct-2.parquet": {
                "type": "math_numeric", "total_samples": 50, "format_success_rate": 96.0, "correct": 15,
                "incorrect": 35, "accuracy": 30.0,
                "metrics": {"task": "OpenMathInstruct-2 (numeric)", "avg_abs_diff": 116.962302, "support": 50},
                "latency_seconds": {"sum": 269.8527, "mean": 5.3971},
                "tokens_generated": {"sum": 4086, "mean": 81.72},
            },
            "test-squad_v2.parquet": {
                "type": "squad_v2", "total_samples": 50, "format_success_rate": None, "correct": 16,
                "incorrect": 34, "accuracy": 32.0,
                "metrics": {"task": "SQuAD v2", "EM": 32.0, "F1": 39.73, "HasAns_EM": 55.17,
                            "HasAns_F1": 68.49, "NoAns_Accuracy": None, "AvNA_Accuracy": 56.0, "support": 50},
                "latency_seconds": {"sum": 41.157, "mean": 0.8231},
                "tokens_generated": None,
            },
        },
        "quantization": {"method": "QLORA", "source": "training_metadata", "weights_bits": 4,
                         "group_size": None, "lm_head_dtype": "bf16", "backend": "bitsandbytes",
                         "quant_tag": "QLORA_w4_headbf16"},
        "hardware": {"peak_vram_reserved_gb": 7.262, "peak_vram_allocated_gb": 6.023,
                     "per_gpu": [{"gpu": 0, "peak_allocated_gb": 6.023, "peak_reserved_gb": 7.262}]},
    }


def legacy_boolq_dataset() -> dict[str, Any]:
    """A BoolQ block with the old scripts' key names (f1_pos, MCC, confusion_matrix)."""
    return {
        "type": "boolq", "total_samples": 2, "format_success_rate": 100.0, "correct": 1, "incorrect": 1,
        "accuracy": 50.0,
        "metrics": {"task": "BoolQ (binary)", "f1_pos": 0.0, "macro_f1": 0.3333, "balanced_accuracy": 0.5,
                    "MCC": 0.0, "confusion_matrix": {"TP": 0, "TN": 1, "FP": 0, "FN": 1}, "support": 2},
        "latency_seconds": {"per_prompt": [0.294, 0.3003], "sum": 0.5943},
        "tokens_generated": {"sum": 10, "mean": 5.0},
    }
