"""Is this pid still the job's process? Start ticks from ``/proc/PID/stat``, never the wall clock (any process).

A process's start time in clock ticks since boot does not move when the wall clock is stepped (NTP, a
suspended VM, an admin's ``date -s``); ``psutil.create_time()`` is boot time (wall clock) plus those ticks,
so a clock step made a live job look dead. :class:`ProcReader` is the small interface over ``/proc`` that
a test replaces to step the clock.
"""

from __future__ import annotations

import os


class ProcReader:
    """What ``/proc`` says: a process's start ticks and the boot time as the wall clock sees it now."""

    def start_ticks(self, pid: int) -> int | None:
        """Field 22 of ``/proc/PID/stat`` (None when the process is gone or a zombie)."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                text = handle.read().decode("ascii", "replace")
        except OSError:
            return None
        fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
        if fields[0] == "Z":
            return None
        return int(fields[19])

    def boot_time(self) -> float:
        """Wall-clock time of boot (``btime`` in ``/proc/stat``): it moves when the clock is stepped."""
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
        raise OSError("/proc/stat has no btime")


PROC = ProcReader()
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def start_ticks(pid: int, reader: ProcReader = PROC) -> int | None:
    """The identity stored with a job's pid (its start ticks), None when it does not run."""
    return reader.start_ticks(pid)


def same_process(pid: int, recorded: float | None, reader: ProcReader = PROC) -> bool:
    """True when ``pid`` runs and started at ``recorded`` ticks (None: any process with that pid)."""
    ticks = reader.start_ticks(pid)
    if ticks is None:
        return False
    return recorded is None or int(recorded) == ticks
