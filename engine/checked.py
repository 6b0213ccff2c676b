"""THE check of values read from a user's file (any process): numbers finite and in range, strings on one line.

Every loader of a user-edited or user-supplied file (presets, ``--set``, ``worker.toml``,
``datasets.toml``) asks here, and a bad value becomes one :class:`BadInputError` whose message names the
file, the field and the value — one line, which ``llmtui`` prints and exits 2 on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class BadInputError(ValueError):
    """A value read from a file is unusable; ``str()`` is one line naming the file, the field and the value."""

    def __init__(self, file: str | Path, field: str, value: Any, why: str):
        self.file, self.field, self.value, self.why = str(file), field, value, why
        super().__init__(one_line(f"{file}: {field} = {value!r} {why}"))


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters shown escaped (a message stays one line)."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def number_problem(value: Any, *, integer: bool = False, min: float | None = None, max: float | None = None,
                   above: float | None = None) -> str | None:
    """Why ``value`` is not a finite number in range (None when it is). Booleans are not numbers."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return "must be an integer" if integer else "must be a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not nan or inf)"
    if min is not None and value < min:
        return f"must be at least {min}"
    if max is not None and value > max:
        return f"must be at most {max}"
    if above is not None and value <= above:
        return f"must be greater than {above}"
    return None


def check_number(file: str | Path, field: str, value: Any, **limits: Any) -> Any:
    """``value`` when :func:`number_problem` finds nothing, else raise BadInputError naming file and field."""
    if why := number_problem(value, **limits):
        raise BadInputError(file, field, value, why)
    return value


def single_line_problem(value: Any) -> str | None:
    """Why ``value`` is not a one-line string (a line break in a field written into a script starts a command)."""
    if not isinstance(value, str):
        return "must be a string"
    if any(not c.isprintable() and c != " " for c in value):
        return "must be one line (no line breaks or control characters)"
    return None
