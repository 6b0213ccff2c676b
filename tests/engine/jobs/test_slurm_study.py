"""A study on the two-node cluster (fixture ``two_nodes``): ``llmtui study run`` with ``[slurm] enabled`` submits
its whole graph at once, each job held by Slurm behind ``afterok`` on the jobs it needs."""

from __future__ import annotations

import json

import pytest

from engine.jobs.store import JobStore
from test_slurm import cli, use_slurm, wait_status

pytestmark = pytest.mark.slow

#: 2 training variants (a few steps) + their evaluations, and the base model's evaluation as the table's root.
STUDY = """[study]
base = "boolq-lora.toml"

[study.set]
"train.max_steps" = 2
"train.per_device_train_batch_size" = 4
"eval.limit" = 2
"eval.datasets" = ["boolq"]

[study.axes]
"peft.method" = ["LoRa", "DoRa"]
"""


def test_a_study_goes_to_slurm_as_one_graph_with_afterok(demo_ws, two_nodes):
    ws = demo_ws
    use_slurm(ws)
    (ws.experiments_dir / "tiny-study.toml").write_text(STUDY)
    result = json.loads(cli(ws, "study", "run", "tiny-study", "--json").stdout)
    with JobStore(ws) as store:
        jobs = [store.require(job_id) for job_id in result["queued"]]
    kinds = sorted(job.kind for job in jobs)
    assert kinds.count("train") == 2 and kinds.count("eval") == 3, kinds
    assert all(job.executor == "slurm" and job.slurm_job_id for job in jobs), [(j.id, j.error) for j in jobs]
    by_id = {job.id: job for job in jobs}
    # Submitted at once: every dependent is already in Slurm, held behind afterok on what it needs.
    dependents = [job for job in jobs if job.depends_on]
    assert len(dependents) == 2
    for job in dependents:
        shown = two_nodes.run("scontrol", "show", "job", job.slurm_job_id).stdout
        wanted = ":".join(by_id[dep].slurm_job_id for dep in job.depends_on)
        assert f"Dependency=afterok:{wanted}" in shown, shown
    for job in jobs:
        ended = wait_status(ws, job.id, ("done", "failed", "cancelled", "interrupted"), timeout_s=600)
        assert ended.status == "done", (job.kind, job.target, ended.error, ended.log_tail)
    for job in jobs:
        if job.kind == "eval":
            assert json.loads((ws.root / "Testing" / "metrics" / f"{job.target}.json").read_text())
    # The study is complete: running it again queues nothing.
    again = json.loads(cli(ws, "study", "run", "tiny-study", "--json").stdout)
    assert again["queued"] == []
