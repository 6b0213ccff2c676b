"""The tests' one polling helper: wait until a condition holds. The timeout only ends a test that would hang
(no test asserts a duration); the Pilot tests' async twin is ``tui_workspace.wait_for``, which lets the app run
between looks."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str | Callable[[], str], interval: float = 0.05, *,
             stop: Callable[[], bool] | None = None) -> T:
    """The first truthy value of ``condition()``; AssertionError naming ``what`` (a text, or a function that says
    what was seen) after ``timeout`` seconds, or as soon as ``stop()`` says waiting is pointless."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline or (stop is not None and stop()):
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)
