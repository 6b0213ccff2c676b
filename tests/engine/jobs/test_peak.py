"""engine.jobs.peak.run_measured: a child's peak is its own, not its spawning process's; a process that keeps
starting subprocesses is counted once; an exec'd worker beside it is added."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

MB = 1_000_000
REPO = Path(__file__).resolve().parents[3]
#: A 600 MB parent measures two children: one that stays small, one that rises to 300 MB for an instant
#: (between two polls) and falls back before it exits.
BIG_PARENT = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {str(REPO)!r})
    from engine.jobs.peak import run_measured
    held = bytearray(600 * {MB}); held[::4096] = b"x" * len(held[::4096])
    small = "import time; time.sleep(1)"
    spike = ("import time; time.sleep(0.5); b = bytearray(300 * {MB}); b[::4096] = b'x' * len(b[::4096]); "
             "del b; time.sleep(1)")
    print(json.dumps([run_measured([sys.executable, "-c", code]).peak_bytes for code in (small, spike)]))
""")


def test_a_child_of_a_big_process_measures_its_own_peak():
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-c", BIG_PARENT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    small, spike = json.loads(done.stdout)
    assert small < 100 * MB  # an interpreter's own ~10 MB; ru_maxrss said the parent's 600 MB
    assert 300 * MB < spike < 400 * MB  # the freed 300 MB still counts (the high-water mark keeps it)


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
    """A poll between a fork and its exec saw the parent's pages in the child (1 GB measured 2.03 GB)."""
    from engine.jobs.peak import run_measured

    done = run_measured([sys.executable, "-c", STARTS_SUBPROCESSES], timeout=120, log=tmp_path / "log")
    assert done.rc == 0, (tmp_path / "log").read_text()
    assert HOLD < done.peak_bytes < HOLD + 150 * MB  # the interpreter's own ~10-30 MB, never a second copy


def test_an_execed_worker_beside_its_parent_is_added(tmp_path):
    from engine.jobs.peak import run_measured

    done = run_measured([sys.executable, "-c", WITH_A_WORKER], timeout=120, log=tmp_path / "log")
    assert done.rc == 0, (tmp_path / "log").read_text()
    assert 2 * HOLD < done.peak_bytes < 2 * HOLD + 200 * MB
