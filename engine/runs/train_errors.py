"""The training run's errors (job process): a known failure, and the early stop a requeue follows."""

from __future__ import annotations


class TrainError(RuntimeError):
    """A training run cannot start or failed in a known way; the message says what, where and what to do."""


class TrainStopped(TrainError):
    """Training stopped early on the stop signal (a Slurm time limit or preemption is near): the job should
    exit with :data:`engine.jobs.requeue.REQUEUE_EXIT_CODE` and run again."""
