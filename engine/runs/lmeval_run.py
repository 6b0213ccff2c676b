"""``llmtui eval --lm-eval TASKS``: lm-evaluation-harness tasks on a model folder through the ``llmtui`` model
class (job process).

Order of a run: the tasks are found and their data read (lm-eval's registry plus every YAML under the
workspace's ``Datasets/lm-eval-tasks/``, with relative ``data_files`` read from that folder), so a task
whose data cannot be reached fails before the model loads, naming the dataset; then the model loads;
an adapter or fine-tune with a known parent is checked to differ from it (:func:`adapter_effect`); then
lm-eval runs. Its own output (``results_*.json``, ``samples_{task}_*.jsonl``) is written to a hidden temp
folder and moved into ``Testing/lm-eval/{model}/``, samples first, so an interrupted run leaves no
results file; ``engine.results.lmeval`` reads it. The llmtui measurements (adapter effect, backend
agreement) go into the results file's ``llmtui`` object.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from engine.events import EventKind, EventWriter
from engine.models.folder import TRAINING_METADATA, ModelLoadError, detect_kind, dig
from engine.models.resolve import ModelNotFoundError, resolve_model_folder
from engine.runs.evaluate import EvalOptions
from engine.workspace import Workspace, safe_name

log = logging.getLogger("llmtui.lmeval")
#: The workspace's own lm-eval task folder, below ``Datasets/``.
TASKS_FOLDER = "lm-eval-tasks"
#: Prompts the adapter check compares a model's logits with its parent's on.
ADAPTER_CHECK_PROMPTS = (
    "Question: is the sky blue on a clear day?\nAnswer:",
    "The capital of France is",
    "Question: What is 12 plus 30?\nAnswer:",
    "Once upon a time, in a small village by the sea,",
)
#: Logits closer than this to the parent's everywhere count as "the adapter changed nothing".
UNCHANGED_TOLERANCE = 1e-6
#: Rows the ``llmtui`` class batches when the request says ``auto`` (continuous batching keeps them busy).
AUTO_BATCH = 16
LM_EVAL_INSTALL = "pip install 'llmtui[lm-eval]' (or: pip install lm_eval)"


class LmEvalError(ValueError):
    """An lm-eval run cannot start (unknown task, unreachable data, unchanged adapter…); the message says why."""


class AdapterUnchanged(LmEvalError):
    """The model's logits equal its parent's on every check prompt."""


def tasks_folder(ws: Workspace) -> Path:
    return ws.datasets_dir / TASKS_FOLDER


def require_lm_eval() -> None:
    """Raise LmEvalError with the install command when lm-eval is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise LmEvalError(f"lm-eval tasks need the lm_eval package: {LM_EVAL_INSTALL}") from None


@contextlib.contextmanager
def in_tasks_folder(ws: Workspace):
    """Relative ``data_files`` of the workspace's task YAMLs are read from its task folder (datasets resolves them
    against the working directory)."""
    folder = tasks_folder(ws)
    with contextlib.chdir(folder if folder.is_dir() else ws.root):
        yield


def _dataset_of(manager: Any, task: str) -> str:
    """The dataset a task reads, for error messages (``dataset_path`` and ``data_files`` of its YAML)."""
    import yaml

    class Tolerant(yaml.SafeLoader):
        """Reads lm-eval's ``!function`` tags (and any other) as plain values, running nothing."""

    Tolerant.add_multi_constructor("!", lambda loader, suffix, node: None)
    yaml_path = getattr(manager.task_index.get(task), "yaml_path", None)
    try:
        config = yaml.load(Path(yaml_path).read_text(encoding="utf-8"), Loader=Tolerant) if yaml_path else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # an unreadable YAML: the load error itself says why
        config = {}
    config = config if isinstance(config, dict) else {}
    files = dig(config, "dataset_kwargs", "data_files")
    shown = str(config.get("dataset_path") or "?")
    return f"{shown} ({files})" if files else shown


def load_tasks(ws: Workspace, names: list[str]) -> Any:
    """lm-eval's TaskManager with the workspace's task folder, after every task in ``names`` was found and its data
    read; raises LmEvalError naming the task (and its dataset) otherwise."""
    from engine.runs.lmeval_backend import task_manager

    if not names:
        raise LmEvalError("no lm-eval tasks given")
    manager = task_manager(tasks_folder(ws), names)
    known = set(manager.all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LmEvalError(f"unknown lm-eval task(s) {', '.join(unknown)}: neither in lm-eval's registry nor in "
                          f"{tasks_folder(ws)}")
    with in_tasks_folder(ws):
        for name in names:
            try:
                manager.load([name])
            except Exception as exc:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetNotFound…)
                raise LmEvalError(f"lm-eval task {name}: cannot read its dataset {_dataset_of(manager, name)} "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return manager


def parent_folder(ws: Workspace, model_dir: Path) -> Path | None:
    """The folder an adapter or fine-tune was made from (its base), when the folder names one that exists."""
    found = detect_kind(model_dir)
    if found.kind == "adapter":
        reference = found.base_model_path
    elif found.kind == "full":
        reference = dig(found.documents.get(TRAINING_METADATA), "model_info", "base_model")
    else:
        return None  # a quantized folder is compared with its source by the comparison tools, not here
    if not reference:
        return None
    try:
        return resolve_model_folder(ws, reference)
    except (ModelNotFoundError, ValueError):
        return None


def _last_logits(model: Any, tokenizer: Any, prompts: tuple[str, ...]):
    import torch

    from engine.runs.generation import input_device

    device = input_device(model)
    rows = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
            rows.append(model(input_ids=ids).logits[0].float().cpu())
    return rows


def adapter_effect(ws: Workspace, model_dir: Path, loaded: Any, device: str, *,
                   trust_remote_code: bool = False) -> dict[str, Any] | None:
    """How far the model's logits are from its parent's on :data:`ADAPTER_CHECK_PROMPTS` (None without a parent).

    An adapter's parent is its own base with the adapter switched off; a full fine-tune's is loaded.
    ``changed`` is False when every logit is within :data:`UNCHANGED_TOLERANCE`.
    """
    import torch

    from engine.runs.loading import load_for_inference

    parent = parent_folder(ws, model_dir)
    if parent is None:
        return None
    mine = _last_logits(loaded.model, loaded.tokenizer, ADAPTER_CHECK_PROMPTS)
    if loaded.kind == "adapter":
        with loaded.model.disable_adapter():
            theirs = _last_logits(loaded.model, loaded.tokenizer, ADAPTER_CHECK_PROMPTS)
    else:
        parent_model = load_for_inference(parent, device=device, trust_remote_code=trust_remote_code)
        theirs = _last_logits(parent_model.model, parent_model.tokenizer, ADAPTER_CHECK_PROMPTS)
        del parent_model
    max_diff = max(float((a - b).abs().max()) for a, b in zip(mine, theirs))
    kl = [float(torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True,
                                           reduction="batchmean")) for a, b in zip(mine, theirs)]
    agree = [float((a.argmax(-1) == b.argmax(-1)).float().mean()) for a, b in zip(mine, theirs)]
    return {"parent": parent.name, "prompts": len(ADAPTER_CHECK_PROMPTS), "max_abs_logit_diff": max_diff,
            "mean_kl": sum(kl) / len(kl), "top1_agreement": sum(agree) / len(agree),
            "changed": max_diff > UNCHANGED_TOLERANCE}


def _move_output(tmp: Path, final: Path) -> list[Path]:
    """Move lm-eval's files from ``tmp`` (any depth) into ``final``: samples first, the results file last."""
    final.mkdir(parents=True, exist_ok=True)
    files = sorted(tmp.rglob("*.json*"), key=lambda p: p.name.startswith("results_"))
    moved = []
    for path in files:
        target = final / path.name
        os.replace(path, target)
        moved.append(target)
    return moved


def run_lm_eval(ws: Workspace, model_ref: str | Path, options: EvalOptions, *,
                events: EventWriter | None = None, manager: Any = None) -> dict[str, Any]:
    """Evaluate one model folder on lm-eval tasks; returns ``{"model", "results" (lm-eval's), "files"}``.

    ``manager`` is :func:`load_tasks`'s answer when the caller already checked the tasks.
    """
    require_lm_eval()
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    from engine.runs.generation import choose_threads
    from engine.runs.lmeval_backend import LlmtuiLM
    from engine.runs.loading import load_for_inference, resolve_device

    events = events or EventWriter(None)
    batch_size = options.batch_size if isinstance(options.batch_size, int) else AUTO_BATCH
    try:
        model_dir = resolve_model_folder(ws, model_ref)
    except ModelNotFoundError as exc:
        raise LmEvalError(f"model {exc}") from None
    name = safe_name(model_dir.name)
    manager = manager or load_tasks(ws, options.lm_eval_tasks)  # before the model: unreachable data fails fast
    device = resolve_device(options.device)
    threads = choose_threads(options.threads) if device == "cpu" else None  # as the built-in evaluation's
    events.emit(EventKind.START, model=name, model_dir=str(model_dir), lm_eval_tasks=options.lm_eval_tasks)
    loaded = load_for_inference(model_dir, device=device, trust_remote_code=options.trust_remote_code)
    effect = adapter_effect(ws, model_dir, loaded, device, trust_remote_code=options.trust_remote_code)
    if effect is not None and not effect["changed"]:
        message = (f"the adapter changed nothing: {name}'s logits equal its parent {effect['parent']}'s on "
                   f"{effect['prompts']} prompts (max difference {effect['max_abs_logit_diff']:.2e})")
        if not options.force_unchanged_adapter:
            raise AdapterUnchanged(message + "; evaluate anyway with --force-unchanged-adapter")
        events.emit(EventKind.WARNING, model=name, message=message)
    lm = LlmtuiLM(pretrained=str(model_dir), loaded=loaded, batch_size=batch_size)
    model_args = {"pretrained": str(model_dir)}
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=ws.lm_eval_dir if ws.lm_eval_dir.is_dir()
                                else _made(ws.lm_eval_dir)))
    try:
        tracker = EvaluationTracker(output_path=str(tmp))
        with in_tasks_folder(ws):
            results = lm_eval.simple_evaluate(
                model=lm, model_args=model_args, tasks=list(options.lm_eval_tasks),
                num_fewshot=None if options.num_fewshot < 0 else options.num_fewshot,
                limit=options.limit or None, apply_chat_template=options.apply_chat_template, log_samples=True,
                task_manager=manager, evaluation_tracker=tracker, batch_size=batch_size)
        samples = results.pop("samples")
        results["config"]["model"] = "llmtui"
        results["llmtui"] = {"model_kind": loaded.kind, "device": device, "threads": threads,
                             "adapter_effect": effect}
        if options.check_backends:
            from engine.runs.lmeval_agreement import backend_agreement

            agreement = backend_agreement(ws, model_dir, lm, samples, options.check_backends)
            results["llmtui"]["backend_agreement"] = agreement
            if not agreement["measured"]:  # recorded as not measured: the comparability guard ignores it
                events.emit(EventKind.WARNING, model=name,
                            message=f"--check-backends: agreement not measured: {agreement['reason']}")
        tracker.general_config_tracker.log_experiment_args(
            model_source="llmtui", model_args=model_args, system_instruction=None,
            chat_template=lm.chat_template(options.apply_chat_template) if options.apply_chat_template else None,
            fewshot_as_multiturn=False)
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"]:
            tracker.save_results_samples(task_name=task, samples=samples[task])
        files = _move_output(tmp, ws.lm_eval_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    events.emit(EventKind.SAVED, path=str(ws.lm_eval_dir / name))
    return {"model": name, "results": results, "files": [str(p) for p in files]}


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_lm_eval_models(ws: Workspace, refs: list[str | Path], options: EvalOptions, *,
                       events: EventWriter | None = None) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """Each model in turn, continuing past a model's failure: ``({name: run}, [(name, error)])``.

    The tasks are checked once first: an unknown task or unreachable data raises before any model loads.
    """
    events = events or EventWriter(None)
    require_lm_eval()
    manager = load_tasks(ws, options.lm_eval_tasks)
    done: dict[str, dict[str, Any]] = {}
    failed: list[tuple[str, str]] = []
    for ref in refs:
        try:
            run = run_lm_eval(ws, ref, options, events=events, manager=manager)
        except (LmEvalError, ModelLoadError) as exc:
            failed.append((Path(str(ref)).name, str(exc)))
            events.emit(EventKind.ERROR, model=Path(str(ref)).name, message=str(exc))
            continue
        done[run["model"]] = run
    return done, failed
