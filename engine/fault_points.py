"""Named points where a fault-injection test may freeze a process, to SIGKILL it there (any process).

``LLMTUI_TEST_PAUSE_AT=NAME[,NAME…]`` makes :func:`pause_point` ``NAME`` write its pid to
``$LLMTUI_TEST_PAUSE_FILE.NAME`` and wait there until it is killed or the test deletes that file. Unset (always, outside the tests) it costs one dictionary lookup. The points mark the
windows issue 22 found: between a job's claim and its pid record, between the two renames of a promotion.
"""

from __future__ import annotations

import os
import time

PAUSE_ENV = "LLMTUI_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "LLMTUI_TEST_PAUSE_FILE"


def pause_point(name: str) -> None:
    """Freeze here when a test asked for ``name`` (see the module docstring)."""
    if name not in os.environ.get(PAUSE_ENV, "").split(","):
        return
    path = f"{os.environ[PAUSE_FILE_ENV]}.{name}"
    with open(path, "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    while os.path.exists(path):
        time.sleep(0.05)
