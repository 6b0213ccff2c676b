"""A study's jobs: what each run needs (train → PTQ → eval), each job's status, and queuing only what is missing
or failed, once, with dependencies, through the ordinary enqueue path (CLI and TUI processes).

The study's jobs are keyed by what they write (``train:NAME``, ``quantize:NAME``, ``eval:NAME``), so a
trained model that feeds several PTQ variants, or a base model evaluated as the table's root, is one job
however many runs need it. A job's status: ``running`` / ``queued`` from its latest queue entry, else
``done`` when its output is there (a model folder's metadata, a metrics file), else ``failed`` when its
latest entry ended badly, else ``missing``. :func:`run_study` queues the ``missing`` and ``failed`` ones
(a second call queues nothing) with ``after`` on the jobs already queued or running.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.files import read_json_file
from engine.jobs.enqueue import eval_request, pipeline_requests
from engine.jobs.gpu import GpuInventory, NvmlInventory, visible_gpu_count
from engine.jobs.store import RETRYABLE, Job, JobRequest, JobStore
from engine.presets.plan import make_plan
from engine.presets.requests import EvalRequest
from engine.presets.study import Study, StudyRun
from engine.models.folder import QUANTIZATION_METADATA, TRAINING_METADATA
from engine.models.resolve import ModelNotFoundError, resolve_model_ref
from engine.workspace import Workspace

STATUS_ORDER = ("failed", "running", "queued", "missing", "done")
#: Options key a search trial's jobs carry, so the worker can move the search on when one ends.
TRIAL_OPTION = "study_trial"


@dataclass
class StudyJob:
    key: str  # "train:NAME" | "quantize:NAME" | "eval:NAME"
    kind: str
    target: str
    status: str  # done | queued | running | failed | missing
    job_id: int | None
    deps: list[str]
    run: str  # the first run that needs it
    #: Builds the job's request (made only when it is queued: rendering every run's preset costs time).
    request: Callable[[], JobRequest] | None = None
    error: str = ""
    #: A done training whose recorded preset differs from the study's run now (``key: was → now``): the
    #: study was edited after it ran. It is not trained again (that needs ``llmtui train --overwrite``).
    stale: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "target": self.target, "status": self.status,
                "job_id": self.job_id, "after": self.deps, "run": self.run, "error": self.error,
                "stale": self.stale}


@dataclass
class PlannedRun:
    name: str
    label: str
    outputs: list[str]  # the trained (or snapshot) model, then each PTQ output
    jobs: list[str]
    status: str
    work: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "status": self.status, "outputs": self.outputs,
                "jobs": self.jobs, "work": self.work}


@dataclass
class StudyPlan:
    study: Study
    root: str | None  # the base model in Models/ every run starts from, evaluated as the table's root
    runs: list[PlannedRun]
    jobs: dict[str, StudyJob]
    #: Output model name → the model it was made from (the study's own lineage).
    parents: dict[str, str | None]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUS_ORDER, 0)
        for job in self.jobs.values():
            counts[job.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        total_tokens = sum(r.work.get("tokens") or 0 for r in self.runs)
        hours = [r.work.get("hours") for r in self.runs]
        return {"study": self.study.name, "file": str(self.study.path), "root": self.root,
                "search": self.study.search is not None,
                "runs": [r.to_dict() for r in self.runs], "jobs": [j.to_dict() for j in self.jobs.values()],
                "total_jobs": len(self.jobs), "counts": self.counts(),
                "work": {"tokens": total_tokens,
                         "hours": round(sum(h for h in hours if h), 3) if any(hours) else None}}


def study_root(ws: Workspace, study: Study) -> str | None:
    """The base model's name when every run starts from one folder in ``Models/`` (else None)."""
    bases = {run.config.model.base for run in study.runs} or {str(study.base.get("model", {}).get("base", ""))}
    if len(bases) != 1:
        return None
    try:
        folder = Path(resolve_model_ref(ws, bases.pop()))
    except ModelNotFoundError:
        return None
    return folder.name if folder.parent.resolve() == ws.models_dir.resolve() else None


def plan_runs(ws: Workspace, study: Study, *, inventory: GpuInventory | None = None) -> StudyPlan:
    """Every run's jobs with their status (nothing is queued); a search's ``study.runs`` are its trials so far
    (engine.jobs.study.plan_study fills them in)."""
    runs = study.runs
    latest = _latest_jobs(ws)
    root = study_root(ws, study)
    planned: list[PlannedRun] = []
    nodes: dict[str, StudyJob] = {}
    parents: dict[str, str | None] = {}
    snapshots = {r.config.model.base: r.name for r in runs if r.config.data.dataset == "none"}
    inventory = inventory or NvmlInventory()
    gpu_count = visible_gpu_count(inventory)
    first_eval = next((r.config.eval for r in runs if r.config.eval.after), None)
    if root is not None and first_eval is not None:
        datasets = list(dict.fromkeys(d for r in runs for d in r.config.eval.datasets)) \
            if all(r.config.eval.datasets for r in runs) else []
        eval_settings = first_eval

        def root_request() -> JobRequest:
            request = EvalRequest(datasets=datasets, limit=eval_settings.limit, batch_size=eval_settings.batch_size,
                                  backend=eval_settings.backend, threads=eval_settings.threads)
            return eval_request(ws, root, request, gpus=1 if gpu_count else 0)

        nodes[f"eval:{root}"] = _node(ws, "eval", root, [], root, root_request, latest)
        parents[root] = None
    throughput = _known_throughput(ws, runs)
    for run in runs:
        steps = make_plan(run.config, ws).steps
        keys = [f"{'train' if s.kind == 'snapshot' else s.kind}:{s.target}" for s in steps]
        trial = run.values.get("trial") if study.search is not None else None
        built = _RunRequests(ws, run, inventory, {"study": str(study.path), "trial": trial} if trial is not None else None)
        for index, (step, key) in enumerate(zip(steps, keys)):
            if key not in nodes:
                nodes[key] = _node(ws, key.split(":", 1)[0], step.target, [keys[i] for i in step.after], run.name,
                                   functools.partial(built.request, index), latest)
                if nodes[key].kind == "train" and nodes[key].status == "done":
                    nodes[key].stale = _stale_training(ws, run)
        outputs = [s.target for s in steps if s.kind in ("train", "snapshot", "quantize")]
        for step in steps:
            if step.kind == "quantize":
                parents[step.target] = step.options["source"]
            elif step.kind in ("train", "snapshot"):
                # a fine-tune of a hub model has the study's snapshot of that model as its parent, if any
                trained = run.config.data.dataset != "none"
                parents[step.target] = root or (snapshots.get(run.config.model.base) if trained else None)
        statuses = [nodes[k].status for k in dict.fromkeys(keys)]
        status = next((s for s in STATUS_ORDER if s in statuses), "done")
        planned.append(PlannedRun(run.name, run.label, outputs, list(dict.fromkeys(keys)), status,
                                  _work(ws, run, throughput)))
    return StudyPlan(study, root, planned, nodes, parents)


class _RunRequests:
    """A run's pipeline requests (:func:`engine.jobs.enqueue.pipeline_requests`), built on first use."""

    def __init__(self, ws: Workspace, run: StudyRun, inventory: GpuInventory, trial: dict[str, Any] | None):
        self.ws, self.run, self.inventory, self.trial = ws, run, inventory, trial
        self.requests: list[JobRequest] | None = None

    def request(self, index: int) -> JobRequest:
        if self.requests is None:
            self.requests = pipeline_requests(self.ws, self.run.config, self.run.preset_text, inventory=self.inventory)
            for request in self.requests:
                if self.trial is not None:
                    request.options[TRIAL_OPTION] = self.trial
        return self.requests[index]


def _latest_jobs(ws: Workspace) -> dict[tuple[str, str], Job]:
    if not ws.queue_db.exists():
        return {}
    with JobStore(ws) as store:
        jobs = store.list()
    return {(job.kind, job.target): job for job in jobs}  # id order: the latest wins


def _node(ws: Workspace, kind: str, target: str, deps: list[str], run: str, request: Callable[[], JobRequest],
          latest: dict[tuple[str, str], Job]) -> StudyJob:
    job = latest.get((kind, target))
    if job is not None and job.status in ("queued", "running"):
        status = job.status
    elif _output_done(ws, kind, target):
        status = "done"
    elif job is not None and job.status in RETRYABLE:
        status = "failed"
    else:
        status = "missing"
    return StudyJob(f"{kind}:{target}", kind, target, status, job.id if job else None, deps, run, request,
                    error=job.error if job is not None and status == "failed" else "")


def _output_done(ws: Workspace, kind: str, target: str) -> bool:
    if kind == "eval":
        return ws.metrics_file(target).is_file()
    return (ws.model_dir(target) / (TRAINING_METADATA if kind == "train" else QUANTIZATION_METADATA)).is_file()


def _stale_training(ws: Workspace, run: StudyRun) -> list[str]:
    """``section.key: was → now`` for each training setting the model folder's metadata records differently."""
    meta = read_json_file(ws.model_dir(run.name) / TRAINING_METADATA)[0]
    recorded = meta.get("training_parameters", {}).get("preset") if isinstance(meta, dict) else None
    if not isinstance(recorded, dict):
        return []
    now = run.config.to_dict()
    changes = []
    for section in ("model", "data", "peft", "quant", "train"):
        was = recorded.get(section) if isinstance(recorded.get(section), dict) else {}
        changes += [f"{section}.{key}: {was[key]!r} → {value!r}" for key, value in now[section].items()
                    if key in was and was[key] != value]
    return changes


def _known_throughput(ws: Workspace, runs: list[StudyRun]) -> float | None:
    """Median training tokens/s of this study's finished trainings on this machine (None before the first)."""
    rates = []
    for run in runs:
        path = ws.model_dir(run.name) / TRAINING_METADATA
        meta = read_json_file(path)[0]
        if isinstance(meta, dict) and isinstance(meta.get("training_stats"), dict):
            rate = meta["training_stats"].get("tokens_per_s")
            if isinstance(rate, (int, float)) and rate > 0:
                rates.append(float(rate))
    return statistics.median(rates) if rates else None


def _work(ws: Workspace, run: StudyRun, throughput: float | None) -> dict[str, Any]:
    """Estimated training work: optimizer steps × tokens per step (an upper bound: every row at max_length)."""
    train = run.config.train
    if run.config.data.dataset == "none":
        return {"steps": 0, "tokens": 0, "hours": 0.0}
    per_step = train.per_device_train_batch_size * train.gradient_accumulation_steps * train.gpus * train.nodes
    steps = train.max_steps if train.max_steps > 0 else _epoch_steps(ws, run, per_step)
    tokens = steps * per_step * train.max_length if steps is not None else None
    hours = round(tokens / throughput / 3600, 4) if tokens is not None and throughput else None
    return {"steps": steps, "tokens": tokens, "hours": hours}


def _epoch_steps(ws: Workspace, run: StudyRun, per_step: int) -> int | None:
    path = ws.datasets_dir / f"train-{run.config.data.dataset}.parquet"
    try:
        import pyarrow.parquet as pq

        rows = pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return None
    if run.config.data.trunc_train:
        rows = min(rows, run.config.data.trunc_train)
    return math.ceil(run.config.train.num_train_epochs * rows / per_step)


@contextlib.contextmanager
def study_lock(ws: Workspace, study: Study) -> Iterator[None]:
    """One process at a time queues a study's jobs (``study run``, the worker asking the next trial)."""
    folder = ws.state_dir / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{study.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def enqueue_missing(ws: Workspace, plan: StudyPlan) -> tuple[list[Job], list[str]]:
    """Queue the plan's ``missing`` and ``failed`` jobs (dependencies first); returns (queued jobs, names of
    runs that needed nothing queued). Call under :func:`study_lock`."""
    batch: list[JobRequest] = []
    index: dict[str, int] = {}
    for key, node in plan.jobs.items():
        if node.status not in ("missing", "failed") or node.request is None:
            continue
        waits = [plan.jobs[d].job_id for d in node.deps if plan.jobs[d].status in ("queued", "running")]
        steps = [index[d] for d in node.deps if d in index]
        index[key] = len(batch)
        batch.append(replace(node.request(), after=tuple(j for j in waits if j is not None), after_steps=tuple(steps)))
    jobs: list[Job] = []
    if batch:
        with JobStore(ws) as store:
            jobs = store.enqueue_many(batch)
    skipped = [run.name for run in plan.runs if not any(k in index for k in run.jobs)]
    return jobs, skipped


def pending_jobs(plan: StudyPlan, queued: list[Job]) -> int:
    """How many of the study's jobs wait for the worker (or Slurm): queued now, or already queued or running."""
    return len(queued) + sum(1 for job in plan.jobs.values() if job.status in ("queued", "running"))
