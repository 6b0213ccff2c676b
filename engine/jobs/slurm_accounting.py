"""What Slurm says of submitted jobs (CLI / TUI process): one parser for ``squeue`` and ``sacct`` rows.

``squeue`` knows waiting, running and recently ended jobs; ``sacct`` (where ``slurmdbd`` keeps accounting)
knows every job, with its exit code, peak memory (the largest ``MaxRSS`` of its steps) and node list. Both
are asked for the same columns in the same text formats (``|``-separated), and each row becomes a
:class:`Reading`. Array elements are named ``ARRAY_ELEMENT`` (``123_4``) by both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable

#: The columns read from both commands: (name, squeue format code, sacct field). Same text formats in both.
COLUMNS = (("id", "%i", "JobID"), ("state", "%T", "State"), ("reason", "%r", "Reason"), ("node", "%N", "NodeList"),
           ("elapsed", "%M", "Elapsed"), ("start", "%S", "Start"), ("end", "%e", "End"))
#: Only accounting has these.
SACCT_COLUMNS = (("exit", "ExitCode"), ("max_rss", "MaxRSS"))
SQUEUE_FORMAT = "|".join(code for _, code, _ in COLUMNS)
SACCT_FORMAT = ",".join([field for _, _, field in COLUMNS] + [field for _, field in SACCT_COLUMNS])


@dataclass(frozen=True)
class Reading:
    """One Slurm job as ``squeue`` or ``sacct`` reported it."""

    slurm_id: str
    state: str
    reason: str = ""
    node: str = ""
    elapsed_s: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None  # sacct only: the batch script's exit code, or minus the signal that ended it
    max_rss_bytes: int | None = None  # sacct only: the largest resident set of any of its steps
    from_accounting: bool = False


def _seconds(text: str) -> float | None:
    """Slurm's ``[days-]hours:minutes:seconds`` / ``minutes:seconds`` → seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:  # "N/A", "Unknown", "None"
        return None


def _text(text: str) -> str:
    return "" if text in ("None", "(null)", "N/A") else text


def _exit_code(text: str) -> int | None:
    """sacct's ``code:signal`` → the code, or minus the signal when one ended the job."""
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match:
        return None
    code, signum = int(match.group(1)), int(match.group(2))
    return -signum if signum else code


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes(text: str) -> int | None:
    """sacct's ``63732K`` → bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text)
    return int(float(match.group(1)) * _UNITS[match.group(2)]) if match else None


_CONVERT: dict[str, Callable[[str], object]] = {
    "id": str, "state": lambda text: text.split()[0] if text else "",  # "CANCELLED by 0" → "CANCELLED"
    "reason": _text, "node": _text, "elapsed": _seconds, "start": timestamp, "end": timestamp,
    "exit": _exit_code, "max_rss": _bytes}
_FIELD = {"id": "slurm_id", "elapsed": "elapsed_s", "start": "started_at", "end": "ended_at", "exit": "exit_code",
          "max_rss": "max_rss_bytes"}


def parse_rows(output: str, names: list[str], *, accounting: bool) -> list[Reading]:
    """``|``-separated rows with the columns ``names`` → readings (rows of another shape are skipped)."""
    readings = []
    for line in output.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != len(names):
            continue
        values = {_FIELD.get(name, name): _CONVERT[name](part) for name, part in zip(names, parts)}
        readings.append(Reading(**values, from_accounting=accounting))
    return readings


def squeue_readings(output: str) -> dict[str, Reading]:
    return {reading.slurm_id: reading for reading in parse_rows(output, [name for name, _, _ in COLUMNS],
                                                                 accounting=False)}


def sacct_readings(output: str) -> dict[str, Reading]:
    """One reading per job (or array element): its own row, with the peak memory of its steps
    (``ID.batch``, ``ID.0``, …), which is where accounting records it."""
    names = [name for name, _, _ in COLUMNS] + [name for name, _ in SACCT_COLUMNS]
    jobs: dict[str, Reading] = {}
    peak: dict[str, int] = {}
    for reading in parse_rows(output, names, accounting=True):
        job_id, _, step = reading.slurm_id.partition(".")
        if step:
            if reading.max_rss_bytes is not None:
                peak[job_id] = max(peak.get(job_id, 0), reading.max_rss_bytes)
        else:
            jobs[job_id] = reading
    return {job_id: replace(reading, max_rss_bytes=peak.get(job_id, reading.max_rss_bytes))
            for job_id, reading in jobs.items()}
