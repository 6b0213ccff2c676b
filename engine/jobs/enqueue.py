"""Presets and requests → queued jobs: the train → PTQ → eval pipeline, PTQ runs, evaluations (TUI and CLI).

Each job runs ``llmtui -w WS train|quantize|eval …`` in its own process. A train job's preset is
frozen at enqueue time: the worker writes the stored TOML text to ``.llmtui/jobs/{id}/preset.toml``
and the job reads that copy, so editing ``experiments/`` later does not change a queued run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable

from engine.data.tasks import BUILTIN_TASKS
from engine.jobs.gpu import GpuInventory, visible_gpu_count
from engine.jobs.job_folder import JOB_DIR_PLACEHOLDER, PRESET_FILE, JobStatus
from engine.jobs.process import llmtui_command
from engine.jobs.store import Job, JobError, JobRequest, JobStore
from engine.presets.config import ConfigError, ExperimentConfig
from engine.presets.naming import ptq_output_name, ptq_spec
from engine.presets.plan import make_plan
from engine.presets.requests import EvalRequest, QuantizeRequest, TrainRequest, flag_problems
from engine.workspace import UnsafeNameError, Workspace, safe_name


def model_name_arg(ws: Workspace, text: str, *, must_exist: bool = True) -> str:
    """A model given on the command line (a name in ``Models/`` or a folder there) → its name."""
    path = Path(text).expanduser()
    if path.is_dir() and path.resolve().parent == ws.models_dir.resolve():
        return path.resolve().name
    try:
        name = safe_name(text)
    except UnsafeNameError as exc:
        raise JobError(str(exc)) from None
    if name != text:
        raise JobError(f"{text!r} is not a model name in {ws.models_dir} (names are single folder names)")
    if must_exist and not ws.model_dir(name).is_dir():
        raise JobError(f"no model {name!r} in {ws.models_dir}")
    return name


def _quantize_request(ws: Workspace, source: str, target: str, request: QuantizeRequest, *, gpus: int,
                      description: str, preset: str | None = None, after: tuple[int, ...] = (),
                      after_steps: tuple[int, ...] = ()) -> JobRequest:
    command = llmtui_command(ws, "quantize", str(ws.model_dir(source)), *request.argv(), "--out", target)
    return JobRequest("quantize", command, target=target, description=description, preset=preset,
                      options={"source": source, **request.options()}, gpus=gpus, after=after,
                      after_steps=after_steps)


def _eval_request(ws: Workspace, model: str, request: EvalRequest, *, gpus: int, description: str = "",
                  preset: str | None = None, after: tuple[int, ...] = (),
                  after_steps: tuple[int, ...] = ()) -> JobRequest:
    description = description or f"evaluate {model} on {', '.join(request.datasets) or 'all test sets'}"
    return JobRequest("eval", llmtui_command(ws, "eval", str(ws.model_dir(model)), *request.argv()), target=model,
                      description=description, preset=preset, options=request.options(), gpus=gpus, after=after,
                      after_steps=after_steps)


def enqueue_pipeline(ws: Workspace, config: ExperimentConfig, preset_text: str, *, overrides: Iterable[str] = (),
                     overwrite: bool = False, after: Iterable[int] = (),
                     inventory: GpuInventory | None = None) -> list[Job]:
    """Queue a preset's steps as dependent jobs: train (or snapshot) → each PTQ step → eval of each output.

    ``preset_text`` is frozen in the jobs; ``overrides`` (``section.key=value``) are passed to the
    train command as ``--set`` (and ``overwrite`` as ``--overwrite``, replacing an existing model folder);
    ``after`` are job ids the first step waits for.
    """
    gpu_count = visible_gpu_count(inventory)
    train_gpus = config.train.gpus if gpu_count else 0
    if train_gpus > gpu_count > 0:
        raise JobError(f"train.gpus = {config.train.gpus} but this machine has {gpu_count} GPU(s)")
    step_gpus = 1 if gpu_count else 0
    overrides = list(overrides)
    requests: list[JobRequest] = []
    for step in make_plan(config, ws).steps:
        after_steps = tuple(step.after)
        if step.kind in ("train", "snapshot"):
            train = TrainRequest(overrides=overrides, overwrite=overwrite)
            command = llmtui_command(ws, "train", f"{JOB_DIR_PLACEHOLDER}/{PRESET_FILE}", *train.argv())
            requests.append(JobRequest("train", command, target=step.target, description=step.description,
                                       preset=preset_text, options={"step": step.kind, **train.options()},
                                       gpus=train_gpus, after=tuple(after)))
        elif step.kind == "quantize":
            requests.append(_quantize_request(ws, step.options["source"], step.target,
                                              QuantizeRequest.from_options(step.options), gpus=step_gpus,
                                              description=step.description, preset=preset_text,
                                              after_steps=after_steps))
        elif step.kind == "eval":
            requests.append(_eval_request(ws, step.target, EvalRequest.from_options(step.options), gpus=step_gpus,
                                          description=step.description, preset=preset_text,
                                          after_steps=after_steps))
        else:
            raise JobError(f"the plan has a step of unknown kind {step.kind!r}")
    with JobStore(ws) as store:
        return store.enqueue_many(requests)


def enqueue_quantize(ws: Workspace, model: str, request: QuantizeRequest, *, out: str | None = None,
                     after: Iterable[int] = (), inventory: GpuInventory | None = None) -> Job:
    """Queue one PTQ run of ``model`` (which must exist unless the job waits for others)."""
    after = tuple(after)
    source = model_name_arg(ws, model, must_exist=not after)
    request = replace(request, method=request.method.upper())
    problems = request.field_problems("ptq") + request.problems()
    if problems:
        raise JobError(flag_problems(problems))
    spec = ptq_spec(request.method, request.resolved_bits(), request.group_size or None, request.calibration or None)
    target = model_name_arg(ws, out, must_exist=False) if out else ptq_output_name(source, spec)
    description = f"{spec.method} {spec.weights_bits}-bit PTQ of {source} → Models/{target}"
    job = _quantize_request(ws, source, target, request, gpus=1 if visible_gpu_count(inventory) else 0,
                            description=description, after=after)
    with JobStore(ws) as store:
        return store.enqueue_many([job])[0]


def enqueue_eval(ws: Workspace, models: Iterable[str], request: EvalRequest | None = None, *,
                 after: Iterable[int] = (), custom_datasets: tuple[str, ...] = (),
                 inventory: GpuInventory | None = None) -> list[Job]:
    """Queue one evaluation job per model (the models must exist unless the jobs wait for others);
    ``request.force`` evaluates again models that already have a metrics file."""
    request = request or EvalRequest()
    after = tuple(after)
    names = [model_name_arg(ws, model, must_exist=not after) for model in models]
    if not names:
        raise JobError("no model to evaluate")
    problems = request.field_problems("eval") + request.problems((*BUILTIN_TASKS, *custom_datasets))
    if problems:
        raise JobError(flag_problems(problems))
    gpus = 1 if visible_gpu_count(inventory) else 0
    jobs = [_eval_request(ws, name, request, gpus=gpus, after=after) for name in names]
    with JobStore(ws) as store:
        return store.enqueue_many(jobs)


def enqueue_demo_pipeline(ws: Workspace, inventory: GpuInventory | None = None) -> list[Job]:
    """A demo workspace's example: evaluate its base model, and queue the example preset's pipeline (train →
    evaluate on the same test sets), so a newcomer sees progress, a loss curve, results and a comparison."""
    from engine.demo_layout import DEMO_BASE, DEMO_PIPELINE
    from engine.presets.config import load_preset

    path = ws.experiment_file(DEMO_PIPELINE)
    try:
        config = load_preset(path)
        preset_text = path.read_text(encoding="utf-8")
    except (ConfigError, OSError) as exc:
        raise JobError(f"the demo's example preset cannot be used: {exc}") from None
    from engine.jobs.store import job_status_by_target

    pending = {name for name, status in job_status_by_target(ws).items() if status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE)}
    jobs = []
    if not ws.metrics_file(DEMO_BASE).exists() and DEMO_BASE not in pending:
        jobs += enqueue_eval(ws, [DEMO_BASE], EvalRequest(datasets=config.eval.datasets, limit=config.eval.limit),
                             inventory=inventory)
    if not ws.model_dir(config.output_name()).exists() and config.output_name() not in pending:
        jobs += enqueue_pipeline(ws, config, preset_text, inventory=inventory)
    if not jobs:
        raise JobError(f"the demo's example is already queued or done (Models/{config.output_name()}, "
                       f"Testing/metrics/{DEMO_BASE}.json)")
    return jobs


def untested_model_names(ws: Workspace) -> list[str]:
    """Models in ``Models/`` with no ``Testing/metrics/{name}.json`` (broken folders left out)."""
    from engine.models.scan import untested_models

    return [record.name for record in untested_models(ws)]
