"""The front door to studies (CLI, TUI and worker processes): plan a study (a grid's runs, or a search's trials
so far) and run it (queue what is missing or failed; a search also records finished trials and asks for more)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.jobs.gpu import GpuInventory
from engine.jobs.study_run import StudyPlan, enqueue_missing, pending_jobs, plan_runs, study_lock
from engine.jobs.study_search import advance, trial_runs
from engine.presets.study import Study
from engine.workspace import Workspace


def plan_study(ws: Workspace, study: Study, *, inventory: GpuInventory | None = None) -> StudyPlan:
    """Every run's jobs with their status (nothing is queued)."""
    if study.search is not None:
        study = replace(study, runs=trial_runs(ws, study))
    return plan_runs(ws, study, inventory=inventory)


def run_study(ws: Workspace, study: Study, *, inventory: GpuInventory | None = None) -> dict[str, Any]:
    """Queue what the study still needs: ``{"queued": [job ids], "skipped": [run names], "pending": n}`` (n: its
    jobs now queued or running, which the caller hands to the worker or Slurm). A search first records
    finished trials and asks Optuna for the next ones (:func:`engine.jobs.study_search.advance`)."""
    if study.search is not None:
        return advance(ws, study, inventory=inventory)
    with study_lock(ws, study):
        plan = plan_runs(ws, study, inventory=inventory)
        jobs, skipped = enqueue_missing(ws, plan)
    return {"queued": [job.id for job in jobs], "skipped": skipped, "pending": pending_jobs(plan, jobs)}
