"""A study's search: Optuna (TPE) asks for each trial's values, each trial is a queued train → eval pipeline, and its
objective is told back when its metrics file appears (CLI, TUI and worker processes; offline).

Nothing stays running between trials: the storage is SQLite in ``.llmtui/studies/{name}.db``, and
:func:`advance` — called by ``llmtui study run`` and by the worker whenever a trial's job ends — records
finished trials (their value, or a failure), then asks for new ones while fewer than ``n_trials`` are
complete or under way and fewer than ``parallel`` are under way, and queues their jobs. A trial's
sampled values and run name are kept in its user attributes, so any process can rebuild its run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.data.tasks import DatasetError, get_task
from engine.jobs.gpu import GpuInventory
from engine.jobs.store import Job
from engine.jobs.study_run import TRIAL_OPTION, enqueue_missing, pending_jobs, plan_runs, study_lock
from engine.presets.study import SearchSpec, Study, StudyError, StudyRun, load_study
from engine.results.metrics_files import load_metrics_file
from engine.workspace import Workspace


def storage_path(ws: Workspace, study: Study) -> Path:
    return ws.state_dir / "studies" / f"{study.name}.db"


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_search(ws: Workspace, study: Study, trials_so_far: int = 0):
    """The Optuna study in the workspace's storage (created on first use). The TPE sampler is seeded with the
    file's seed plus the number of trials so far: each process that asks continues the sequence instead of
    repeating its first draws."""
    optuna = _optuna()
    search = study.search
    assert search is not None
    path = storage_path(ws, study)
    path.parent.mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(seed=search.seed + trials_so_far,
                                         n_startup_trials=max(1, min(10, search.n_trials // 2)))
    return optuna.create_study(study_name=study.name, storage=f"sqlite:///{path}", direction=search.direction,
                               sampler=sampler, load_if_exists=True)


def search_trials(ws: Workspace, study: Study) -> list[dict[str, Any]]:
    """Every trial in the storage: number, state, params, value, run name (empty before the first ``study run``)."""
    if not storage_path(ws, study).is_file():
        return []
    optuna = _optuna()
    try:
        stored = optuna.load_study(study_name=study.name, storage=f"sqlite:///{storage_path(ws, study)}")
    except KeyError:  # the file exists but holds no such study yet
        return []
    notes = stored.user_attrs
    return [{"number": t.number, "state": t.state.name.lower(), "params": t.user_attrs.get("params", t.params),
             "value": t.value, "run": t.user_attrs.get("run"), "note": notes.get(f"note:{t.number}", "")}
            for t in stored.get_trials(deepcopy=False)]


def trial_runs(ws: Workspace, study: Study) -> list[StudyRun]:
    """The runs of the trials that are complete or under way (failed trials are left out: never re-queued)."""
    return [study.trial_run(t["number"], t["params"]) for t in search_trials(ws, study)
            if t["state"] in ("complete", "running") and t["run"]]


def objective_value(ws: Workspace, run_name: str, search: SearchSpec) -> tuple[float | None, str]:
    """The trial's objective from its metrics file: (value, "") or (None, why) — why is "" while not evaluated."""
    path = ws.metrics_file(run_name)
    if not path.is_file():
        return None, ""
    record = load_metrics_file(path)
    dataset_name, metric = search.objective_parts
    dataset = record.dataset(dataset_name) if not record.error else None
    if dataset is None and not record.error:  # a custom test set is recorded under its test file's name
        try:
            dataset = record.dataset(get_task(dataset_name, ws.datasets_dir).test_file)
        except DatasetError:
            dataset = None
    value = dataset.metrics.get(metric) if dataset is not None else None
    if value is None:
        return None, f"{path.name} has no {search.objective}" + (f" ({record.error})" if record.error else "")
    return float(value), ""


def _distribution(optuna, dimension):
    if dimension.choices is not None:
        return optuna.distributions.CategoricalDistribution(dimension.choices)
    if dimension.integer:
        return optuna.distributions.IntDistribution(int(dimension.low), int(dimension.high), log=dimension.log)
    return optuna.distributions.FloatDistribution(dimension.low, dimension.high, log=dimension.log)


def advance(ws: Workspace, study: Study, *, inventory: GpuInventory | None = None) -> dict[str, Any]:
    """Record finished trials, ask for the next ones and queue what the open trials still need:
    ``{"queued": [job ids], "skipped": [run names], "pending": n, "told": {trial: value | "failed"},
    "asked": [trials]}``."""
    optuna = _optuna()
    search = study.search
    assert search is not None
    told: dict[int, Any] = {}
    asked: list[int] = []
    with study_lock(ws, study):
        plan = plan_runs(ws, replace(study, runs=trial_runs(ws, study)), inventory=inventory)
        status = {run.name: run.status for run in plan.runs}
        stored = open_search(ws, study)
        trials = stored.get_trials(deepcopy=False)
        for trial in trials:
            if trial.state != optuna.trial.TrialState.RUNNING or not trial.user_attrs.get("run"):
                continue
            name = trial.user_attrs["run"]
            value, why = objective_value(ws, name, search)
            if value is not None:
                stored.tell(trial.number, value)
                told[trial.number] = value
            elif why or status.get(name) == "failed":
                stored.set_user_attr(f"note:{trial.number}", why or "a job of this trial failed")
                stored.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                told[trial.number] = "failed"
        trials = stored.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        complete = states.count(optuna.trial.TrialState.COMPLETE)
        running = states.count(optuna.trial.TrialState.RUNNING)
        failed = states.count(optuna.trial.TrialState.FAIL)
        if complete + running < search.n_trials and running < search.parallel and failed < search.n_trials:
            stored = open_search(ws, study, trials_so_far=len(trials))
            distributions = {d.key: _distribution(optuna, d) for d in search.space}
            while complete + running < search.n_trials and running < search.parallel:
                trial = stored.ask(distributions)
                params = {key: trial.params[key] for key in distributions}
                try:
                    run = study.trial_run(trial.number, params)
                except StudyError as exc:
                    stored.set_user_attr(f"note:{trial.number}", "; ".join(exc.problems))
                    stored.tell(trial, state=optuna.trial.TrialState.FAIL)
                    failed += 1
                    if failed >= search.n_trials:
                        break
                    continue
                trial.set_user_attr("params", params)
                trial.set_user_attr("run", run.name)
                asked.append(trial.number)
                running += 1
        if told or asked:
            plan = plan_runs(ws, replace(study, runs=trial_runs(ws, study)), inventory=inventory)
        jobs, skipped = enqueue_missing(ws, plan)
    return {"queued": [job.id for job in jobs], "skipped": skipped, "pending": pending_jobs(plan, jobs),
            "told": told, "asked": asked}


def advance_after_job(ws: Workspace, job: Job) -> dict[str, Any] | None:
    """The worker's hook when a job ends: a search trial's job moves its search on (None for other jobs)."""
    trial = job.options.get(TRIAL_OPTION) if isinstance(job.options, dict) else None
    if not isinstance(trial, dict) or not trial.get("study"):
        return None
    from engine.data.tasks import custom_tasks

    study = load_study(trial["study"], tuple(custom_tasks(ws.datasets_dir)))
    return advance(ws, study)
