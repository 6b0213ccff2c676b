"""A workspace path with a space or ``%`` stays one ``#SBATCH`` argument (issue 22, item 13).

Before: ``#SBATCH --output=/srv/my ws/…`` was cut at the space by sbatch, and ``%`` started a file-name
pattern (``%j``…). Now the value is double-quoted and ``%`` doubled in ``--output``; a path sbatch cannot
carry (a double quote, a line break) is refused with the reason.
"""

from __future__ import annotations

import sys

import pytest

from engine.jobs.settings import SlurmSettings
from engine.jobs.slurm import Resources, SlurmError, batch_script
from engine.jobs.store import JobStore
from engine.workspace import Workspace


def _script(root) -> str:
    ws = Workspace(root).init()
    with JobStore(ws) as store:
        job = store.enqueue("eval", [sys.executable, "-P", "-m", "tui.cli", "-w", str(ws.root), "eval", "m"])
    return batch_script(ws, job, SlurmSettings(enabled=True), Resources())


def test_space_and_percent_are_quoted(tmp_path):
    lines = _script(tmp_path / "my 100% ws").splitlines()
    output = next(line for line in lines if line.startswith("#SBATCH --output="))
    chdir = next(line for line in lines if line.startswith("#SBATCH --chdir="))
    assert output.startswith(f'#SBATCH --output="{tmp_path}/my 100%% ws/') and output.endswith('"')
    assert chdir == f'#SBATCH --chdir="{tmp_path}/my 100% ws"'


def test_a_path_sbatch_cannot_carry_is_refused(tmp_path):
    with pytest.raises(SlurmError, match="cannot be given to sbatch"):
        _script(tmp_path / 'say "hi"')
