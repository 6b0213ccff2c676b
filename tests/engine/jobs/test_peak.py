"""engine.jobs.peak.run_measured: a child's peak counts side-by-side exec'd workers, and the measurement counts
no one twice: not a process that keeps starting subprocesses (a poll between a fork and its exec saw the
parent's pages in the child: 2.03 GB measured for a 1 GB process calling ``ctypes.util.find_library``), not
the measuring process itself (``ru_maxrss`` carried its size into the child)."""

from __future__ import annotations

import sys

from engine.jobs.peak import run_measured

MB = 1_000_000
HOLD = 400 * MB
STARTS_SUBPROCESSES = f"""
import ctypes.util, time
held = bytearray({HOLD}); held[::4096] = b"x" * len(held[::4096])
end = time.monotonic() + 3
while time.monotonic() < end:
    ctypes.util.find_library("nvidia-ml")  # ldconfig, gcc and ld, each forked from this process
"""
WITH_A_WORKER = f"""
import subprocess, sys
held = bytearray({HOLD}); held[::4096] = b"x" * len(held[::4096])
worker = "import time; held = bytearray({HOLD}); held[::4096] = b'x' * len(held[::4096]); time.sleep(3)"
subprocess.run([sys.executable, "-c", worker], check=True)
"""


def test_a_process_starting_subprocesses_is_counted_once(tmp_path):
    done = run_measured([sys.executable, "-c", STARTS_SUBPROCESSES], timeout=120, log=tmp_path / "log")
    assert done.rc == 0, (tmp_path / "log").read_text()
    assert HOLD < done.peak_bytes < HOLD + 150 * MB  # the interpreter's own ~10-30 MB, never a second copy


def test_an_execed_worker_beside_its_parent_is_added(tmp_path):
    done = run_measured([sys.executable, "-c", WITH_A_WORKER], timeout=120, log=tmp_path / "log")
    assert done.rc == 0, (tmp_path / "log").read_text()
    assert 2 * HOLD < done.peak_bytes < 2 * HOLD + 200 * MB


def test_a_large_measuring_process_is_not_counted_in_its_child(tmp_path):
    """A child execs from a fork of the measuring process and ``wait4``'s ``ru_maxrss`` kept the parent's size
    (0.41 GB child measured 0.81 GB beside an 0.8 GB parent); the child's own high-water mark does not."""
    parent = bytearray(2 * HOLD)
    parent[::4096] = b"x" * len(parent[::4096])
    child = f'held = bytearray({HOLD}); held[::4096] = b"x" * len(held[::4096]); import time; time.sleep(1)'
    done = run_measured([sys.executable, "-c", child], timeout=120, log=tmp_path / "log")
    assert done.rc == 0, (tmp_path / "log").read_text()
    assert HOLD < done.peak_bytes < HOLD + 150 * MB
    del parent
