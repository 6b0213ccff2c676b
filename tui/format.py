"""Formatting shared by the CLI and the app: sizes, counts, durations, status colours (TUI and CLI processes)."""

from __future__ import annotations

STATUS_STYLES = {
    "tested": "green", "untested": "yellow", "queued": "cyan", "running": "bold blue", "done": "green",
    "failed": "bold red", "broken": "red", "cancelled": "magenta", "interrupted": "dark_orange",
}


#: Short column titles of metric keys in tables ("arc F1", "boolq MCC", "math |Δ|").
METRIC_TITLES = {"macro_f1": "F1", "accuracy": "acc", "mcc": "MCC", "F1": "F1", "EM": "EM", "avg_abs_diff": "|Δ|"}


def status_style(status: str) -> str:
    return STATUS_STYLES.get(status, "white")


def human_size(n: int | float | None) -> str:
    """``1536`` → ``1.5K``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def human_count(n: int | None) -> str:
    """``820000`` → ``0.82M``."""
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def human_duration(seconds: float | None) -> str:
    """``3725`` → ``1h02m``."""
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def slurm_state_text(job) -> str:
    """A Slurm job's state as one short string: ``PENDING (Resources)``, ``RUNNING on node3``, and for an
    ended one what accounting recorded: ``FAILED on node[1-2], exit 1, peak 1.2 GiB``; ``-`` for a local job."""
    if not job.slurm_job_id:
        return "-"
    ended = job.finished
    detail = f" ({job.pending_reason})" if job.pending_reason and not ended else (
        f" on {job.node}" if job.node else "")
    if ended and job.exit_code is not None:
        detail += f", exit {job.exit_code}"
    if job.max_rss_bytes:
        detail += f", peak {human_size(job.max_rss_bytes)}"
    return f"{job.slurm_state or '?'}{detail}"
