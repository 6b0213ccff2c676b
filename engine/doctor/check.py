"""What one line of ``llmtui doctor``'s report (or of the smoke run) holds, its statuses, and the exit code they give (any process)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OK, WARNING, ERROR, SKIPPED = "ok", "warning", "error", "skipped"
PASS, FAIL = "pass", "fail"  # smoke rows
#: Statuses that make ``llmtui doctor`` exit 1.
FAILED = (ERROR, FAIL)
GIB = 1 << 30


@dataclass
class Check:
    """One line of the report or of the smoke run."""

    name: str
    status: str
    detail: str
    fix: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(checks: list[Check]) -> int:
    """0 when nothing failed, 1 when a check says error or fail."""
    return 1 if any(check.status in FAILED for check in checks) else 0


def gib(value: int | float) -> str:
    return f"{value / GIB:.1f} GiB"
