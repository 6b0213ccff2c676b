"""lm-evaluation-harness output read as llmtui results (CLI / TUI): ``results_*.json`` and, for paired
statistics, ``samples_{task}_*.jsonl`` as lm-eval 0.4 writes them with ``--log_samples``.

Output folders live under ``Testing/lm-eval/`` (``llmtui results --import PATH`` copies them there). Each
task becomes a test set named ``lm-eval:{task}`` of kind :data:`LM_EVAL_KIND`, attached to the llmtui
record of the same model when there is one (so its metrics sit in the same results row), else to a
record of its own. Metric keys ``acc,none`` become ``acc``; another filter is appended
(``exact_match,strict-match`` → ``exact_match_strict-match``). Samples are matched by ``doc_id`` and
checked by lm-eval's ``doc_hash`` (engine.results.compare).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.files import write_text
from engine.results.item_metrics import PredictionsError, jsonl_objects
from engine.models.resolve import model_name_from
from engine.data.kinds import LM_EVAL_KIND
from engine.results.records import DatasetResult, ResultRecord
from engine.workspace import Workspace, safe_name

DATASET_PREFIX = "lm-eval:"
_RESULTS_NAME = re.compile(r"^results_(?P<stamp>.+)\.json$")
#: Per-sample binary metrics preferred as an item's "correct" (for flipped items), in this order.
_CORRECTNESS_METRICS = ("acc", "exact_match", "acc_norm")


class LmEvalError(ValueError):
    """A folder holds no lm-eval output, or a results file cannot be read (names the file)."""


def results_files(folder: Path) -> list[Path]:
    """Every ``results_*.json`` below ``folder`` (hidden folders skipped), sorted by path."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("results_*.json") if _RESULTS_NAME.match(p.name)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_results_file(path: Path) -> ResultRecord:
    """One results file as a record (``error`` set when it is not lm-eval output); never raises on content."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return ResultRecord(path=path, name=path.parent.name, source="unreadable",
                            error=f"{path}: cannot read as JSON ({exc})")
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return ResultRecord(path=path, name=path.parent.name, source="unreadable",
                            error=f"{path}: not lm-evaluation-harness output (no 'results' object)")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    name = model_name_from(_pretrained(config.get("model_args"))) or model_name_from(data.get("model_name")) \
        or path.parent.name
    record = ResultRecord(path=path, name=name, source="lm-eval", raw_model_name=data.get("model_name"),
                          evaluated_at=_date(data.get("date")))
    stamp = _RESULTS_NAME.match(path.name)["stamp"]
    counts = data.get("n-samples") if isinstance(data.get("n-samples"), dict) else {}
    for task, values in data["results"].items():
        if not isinstance(values, dict):
            record.warnings.append(f"{path.name}: results.{task} should be an object")
            continue
        dataset = DatasetResult(file=DATASET_PREFIX + task, name=DATASET_PREFIX + task, kind=LM_EVAL_KIND)
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                continue  # alias, name, sample_len, "N/A" stderr
            shown = metric if filter_name == "none" else f"{metric}_{filter_name}"
            if metric.endswith("_stderr"):
                dataset.details[shown] = value
            else:
                dataset.metrics[shown] = value
        count = counts.get(task) if isinstance(counts.get(task), dict) else {}
        effective = count.get("effective")
        dataset.total_samples = effective if isinstance(effective, int) and not isinstance(effective, bool) else None
        samples = path.parent / f"samples_{task}_{stamp}.jsonl"
        dataset.samples_path = samples if samples.is_file() else None
        dataset.provenance = _provenance(data, config, task)
        record.datasets[dataset.file] = dataset
    return record


def _provenance(data: dict[str, Any], config: dict[str, Any], task: str) -> dict[str, Any]:
    """What two lm-eval runs of a task must share to be compared (see engine.results.provenance)."""
    def per_task(key: str) -> Any:
        value = data.get(key)
        return value.get(task) if isinstance(value, dict) else None

    return {
        "task config": per_task("task_hashes") or None,
        "few-shot": {"n_shot": per_task("n-shot"), "as_multiturn": data.get("fewshot_as_multiturn")},
        "prompt format": {"chat_template_sha": data.get("chat_template_sha"),
                          "system_instruction_sha": data.get("system_instruction_sha")},
        "harness version": data.get("lm_eval_version"),
        "evaluation backend": {"model": config.get("model"), "dtype": config.get("model_dtype")},
        "limit": {"limit": config.get("limit")},
    }


def _pretrained(model_args: Any) -> Any:
    """``pretrained`` from model_args, a dict (0.4.5+) or ``pretrained=PATH,dtype=…`` text."""
    if isinstance(model_args, dict):
        return model_args.get("pretrained") or model_args.get("model")
    if isinstance(model_args, str):
        for part in model_args.split(","):
            key, _, value = part.partition("=")
            if key.strip() in ("pretrained", "model"):
                return value.strip()
    return None


def _date(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    return None


def lm_eval_records(ws: Workspace) -> list[ResultRecord]:
    """Every model's lm-eval results under ``Testing/lm-eval``: one record per model, the newest run
    of each task kept (older runs noted as warnings). Unreadable files become records with ``error``."""
    by_name: dict[str, ResultRecord] = {}
    records = [read_results_file(path) for path in results_files(ws.lm_eval_dir)]
    broken = [r for r in records if r.error]
    for record in sorted((r for r in records if not r.error), key=lambda r: r.evaluated_at or ""):
        kept = by_name.setdefault(record.name, record)
        if kept is record:
            continue
        kept.warnings.extend(record.warnings)
        for file_name, dataset in record.datasets.items():
            if file_name in kept.datasets:
                kept.warnings.append(f"{record.name}: {file_name} was run more than once; using the newest "
                                     f"run ({record.path})")
            kept.datasets[file_name] = dataset
    return list(by_name.values()) + broken


def attach(records: list[ResultRecord], lm_records: list[ResultRecord]) -> list[ResultRecord]:
    """llmtui's records with lm-eval's tasks added to the record of the same model (a record of its own
    when llmtui has none)."""
    by_name = {r.name: r for r in records if not r.error}
    for lm in lm_records:
        own = by_name.get(lm.name)
        if own is None or lm.error:
            records.append(lm)
            continue
        own.datasets.update(lm.datasets)
        own.warnings.extend(lm.warnings)
    return records


def read_samples(path: Path) -> list[dict[str, Any]]:
    """A samples file as comparison rows, one per ``doc_id`` in order: ``index``, ``doc_hash``,
    ``prompt``, ``gold``, ``output``, ``pred``, ``correct`` and ``metrics`` (per-sample values, named as
    in the results). Raises PredictionsError naming the line."""
    rows: dict[int, dict[str, Any]] = {}
    for number, sample, doc_id in jsonl_objects(path, "doc_id"):
        filter_name = str(sample.get("filter") or "none")
        row = rows.get(doc_id)
        if row is None:
            row = rows[doc_id] = _sample_row(sample)
        elif row["doc_hash"] != sample.get("doc_hash"):
            raise PredictionsError(f"line {number}: doc_id {doc_id} appears twice with different documents")
        for metric in sample.get("metrics") or []:
            name = metric if filter_name == "none" else f"{metric}_{filter_name}"
            if name in row["metrics"]:
                raise PredictionsError(f"line {number}: doc_id {doc_id} has {name} twice")
            row["metrics"][name] = sample.get(metric)
    result = [rows[i] for i in sorted(rows)]
    for row in result:
        binary = [name for name, value in row["metrics"].items() if value in (0, 1) and not isinstance(value, bool)]
        preferred = next((m for m in _CORRECTNESS_METRICS if m in binary), binary[0] if binary else None)
        row["correct"] = bool(row["metrics"][preferred]) if preferred else None
    return result


def _sample_row(sample: dict[str, Any]) -> dict[str, Any]:
    arguments = sample.get("arguments")
    requests = [arguments[k] for k in sorted(arguments, key=_argument_order)] \
        if isinstance(arguments, dict) else []
    context = requests[0].get("arg_0") if requests and isinstance(requests[0], dict) else None
    resps = sample.get("filtered_resps")
    output, pred = _response(resps, requests)
    raw = _single(sample.get("resps"))
    if isinstance(raw, str):  # generated text: the raw output, before lm-eval's filters extracted the answer
        output = raw
    gold = sample.get("target")
    if _is_loglikelihood(resps) and isinstance(gold, (int, str)) and str(gold).isdigit() \
            and int(gold) < len(requests):
        gold = f"{gold}: {str(requests[int(gold)].get('arg_1', '')).strip()}"
    return {"index": sample["doc_id"], "doc_hash": sample.get("doc_hash"), "prompt": context, "gold": gold,
            "output": output, "extracted": pred, "pred": pred, "metrics": {}}


def _argument_order(key: str) -> int:
    digits = key.rpartition("_")[2]
    return int(digits) if digits.isdigit() else 0


def _is_loglikelihood(resps: Any) -> bool:
    return isinstance(resps, list) and bool(resps) and all(
        isinstance(r, list) and len(r) == 2 and _float(r[0]) is not None for r in resps)


def _response(resps: Any, requests: list[Any]) -> tuple[Any, Any]:
    """(what the model produced, its answer): generated text as is; for a multiple-choice task the
    log-likelihood of each choice and the choice with the highest."""
    if _is_loglikelihood(resps):
        scores = [_float(r[0]) for r in resps]
        best = max(range(len(scores)), key=scores.__getitem__)
        choices = [str(r.get("arg_1", "")).strip() if isinstance(r, dict) else str(i) for i, r in enumerate(requests)]
        output = "log-likelihoods: " + ", ".join(
            f"{choices[i] if i < len(choices) else i}={s:.3f}" for i, s in enumerate(scores))
        return output, f"{best}: {choices[best]}" if best < len(choices) else best
    answer = _single(resps)
    return answer, answer


def _single(value: Any) -> Any:
    """``[["text"]]`` or ``["text"]`` → ``"text"`` (one request, one response); anything else as is."""
    for _ in range(2):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
    return value


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def import_output(ws: Workspace, source: Path) -> list[Path]:
    """Copy an lm-eval output folder's results and samples files into ``Testing/lm-eval/{model}/``.

    Every results file is read first; LmEvalError names the first that is not lm-eval output (nothing
    is copied then). Returns the files written.
    """
    source = Path(source).expanduser()
    files = [source] if source.is_file() and _RESULTS_NAME.match(source.name) else results_files(source)
    if not files:
        raise LmEvalError(f"{source}: no results_*.json from lm-evaluation-harness found")
    records = [read_results_file(path) for path in files]
    for record in records:
        if record.error:
            raise LmEvalError(record.error)
    written = []
    for path, record in zip(files, records):
        target = ws.lm_eval_dir / safe_name(record.name)
        stamp = _RESULTS_NAME.match(path.name)["stamp"]
        for item in [path, *sorted(path.parent.glob(f"samples_*_{_glob_escape(stamp)}.jsonl"))]:
            written.append(write_text(target / item.name, item.read_text(encoding="utf-8")))
    return written


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
