"""The queue on a real one-node Slurm cluster (fixture ``slurm_cluster``): submit, run, dependencies,
cancel, failures, reopening the CLI, time limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from engine.jobs.slurm import read_squeue, sync
from engine.jobs.store import JobRequest, JobStore
from engine.jobs.control import cancel_job, run_queued
from waiting import wait_for

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-P", "-m", "tui.cli"]
#: What the test cluster's jobs run first: the [slurm] setup lines (one thread each on this small machine).
SETUP = ["export OMP_NUM_THREADS=1 GPTQMODEL_CPU_WORKERS=2 TOKENIZERS_PARALLELISM=false", "echo setup-ran"]


def use_slurm(ws, **extra) -> None:
    lines = ["[slurm]", "enabled = true", 'gpu_flag = ""', f"setup = {json.dumps(SETUP)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    (ws.state_dir / "worker.toml").write_text("\n".join(lines) + "\n")


def cli(ws, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, "-w", str(ws.root), *args], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_status(ws, job_id: int, statuses: tuple[str, ...], timeout_s: float = 120.0):
    def job():
        with JobStore(ws) as store:
            return store.require(job_id)

    def reached():
        sync(ws)
        return (found := job()).status in statuses and found

    def seen() -> str:
        last = job()
        log = (ws.root / last.log_path).read_text(errors="replace") if (ws.root / last.log_path).exists() else ""
        return (f"job {job_id} to be {statuses}; it is {last.status} ({last.slurm_state} {last.pending_reason}); "
                f"log:\n{log[-2000:]}")

    return wait_for(reached, timeout_s, seen, interval=0.5)


def python_job(code: str, **fields) -> JobRequest:
    """A job running a short Python program (stands in for a command llmtui does not have, e.g. one that fails)."""
    return JobRequest("eval", [sys.executable, "-c", code], **fields)


@pytest.fixture(scope="module")
def time_limited_job(tmp_path_factory, slurm_cluster):
    """A job that outlives Slurm's smallest time limit (one minute), submitted when the first test of this
    module starts so that the others run while it waits for the limit. ``(workspace, job id)``."""
    from tui_workspace import make_workspace

    ws = make_workspace(tmp_path_factory.mktemp("time-limit") / "ws")
    use_slurm(ws, time="1")  # Slurm's time limits are whole minutes
    with JobStore(ws) as store:
        # Like llmtui's evaluation, this job cannot checkpoint, so it ignores the early stop signal.
        job = store.enqueue_many([python_job(
            "import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN); print('working', flush=True); "
            "time.sleep(600)")])[0]
    run_queued(ws)
    return ws, job.id


@pytest.fixture(autouse=True)
def _start_the_time_limited_job_first(time_limited_job):
    pass


def test_failing_job_fails_its_dependents_with_the_reason(demo_ws, slurm_cluster):
    ws = demo_ws
    use_slurm(ws)
    with JobStore(ws) as store:
        first, second, third = store.enqueue_many([
            python_job("import sys; print('boom: the data is bad', flush=True); sys.exit(3)"),
            python_job("print('must not run')", after_steps=(0,)),
            python_job("print('must not run either')", after_steps=(1,)),
        ])
    run_queued(ws)
    with JobStore(ws) as store:
        slurm_ids = [store.require(job.id).slurm_job_id for job in (first, second, third)]
    assert all(slurm_ids)
    failed = wait_status(ws, first.id, ("failed",))
    assert failed.exit_code == 3 and "exit code 3" in failed.error and "boom: the data is bad" in failed.error
    for job, dep in ((second, first.id), (third, second.id)):
        dependent = wait_status(ws, job.id, ("failed",), timeout_s=30)
        assert dependent.error == f"not run: dependency #{dep} failed" and dependent.failed_dependency == dep
    # Slurm holds none of them any more (cancelled for the unsatisfiable dependency), and they never ran.
    deadline = time.monotonic() + 30
    while any(r.state == "PENDING" for r in read_squeue(slurm_ids[1:]).values()):
        assert time.monotonic() < deadline
        sync(ws)
        time.sleep(0.5)
    assert not (ws.job_dir(second.id) / "exit_code").exists()
    listed = json.loads(cli(ws, "queue", "list", "--json").stdout)
    assert [j["status"] for j in listed] == ["failed", "failed", "failed"]
    # queue retry submits new Slurm jobs: the copy of the failed job, and its dependents waiting on the copy.
    retried = cli(ws, "queue", "retry", str(first.id)).stdout
    assert "submitted to Slurm" in retried
    with JobStore(ws) as store:
        copies = store.list()[3:]
    assert [job.retry_of for job in copies] == [first.id, second.id, third.id]
    assert all(job.slurm_job_id and job.slurm_job_id not in slurm_ids for job in copies)
    assert copies[1].depends_on == [copies[0].id]
    assert wait_status(ws, copies[0].id, ("failed",)).exit_code == 3


def test_cancel_scancels_a_running_job_and_fails_its_dependent(demo_ws, slurm_cluster):
    ws = demo_ws
    use_slurm(ws)
    with JobStore(ws) as store:
        long, dependent = store.enqueue_many([
            python_job("import time; print('working', flush=True); time.sleep(600)"),
            python_job("print('must not run')", after_steps=(0,)),
        ])
    run_queued(ws)
    running = wait_status(ws, long.id, ("running",))
    assert running.node == slurm_cluster.node and running.slurm_state == "RUNNING"
    assert cancel_job(ws, long.id) == "cancelled"
    with JobStore(ws) as store:
        cancelled, waiting = store.require(long.id), store.require(dependent.id)
    assert cancelled.error == "cancelled by the user" and cancelled.slurm_state == "CANCELLED"
    assert waiting.status == "failed" and waiting.error == f"not run: dependency #{long.id} cancelled"
    reading = read_squeue([cancelled.slurm_job_id])[cancelled.slurm_job_id]
    assert reading.state == "CANCELLED"


def test_pipeline_and_evaluation_run_to_done_with_afterok_and_survive_reopening_the_cli(demo_ws, slurm_cluster):
    ws = demo_ws
    use_slurm(ws)
    (ws.experiments_dir / "tiny-pipeline.toml").write_text(TINY_TRAIN.format(steps=3, gpus=1) + """
[[ptq]]
method = "HQQ"
bits = 4
group_size = 64
samples = 8
[eval]
after = true
datasets = ["boolq"]
limit = 2
""")
    evaluation = json.loads(cli(ws, "queue", "add", "eval", "--untested", "--datasets", "boolq", "--limit", "2",
                                "--json").stdout)
    assert [job["target"] for job in evaluation] == ["tiny-qwen3"]  # one Slurm job per untested model
    jobs = json.loads(cli(ws, "queue", "add", "train", "tiny-pipeline", "--json").stdout)
    kinds = [job["kind"] for job in jobs]
    assert kinds[0] == "train" and "quantize" in kinds and kinds.count("eval") == 2, kinds
    jobs = evaluation + jobs
    assert all(job["executor"] == "slurm" and job["slurm_job_id"] for job in jobs)
    # Slurm itself holds the dependents back until their dependency is done.
    quantize = next(job for job in jobs if job["kind"] == "quantize")
    shown = slurm_cluster.run("scontrol", "show", "job", quantize["slurm_job_id"]).stdout
    assert f"Dependency=afterok:{jobs[1]['slurm_job_id']}" in shown, shown
    # No llmtui process runs now: the jobs are Slurm's. Wait for their exit files, then reopen the CLI.
    deadline = time.monotonic() + 400
    for job in jobs:
        while not (ws.job_dir(job["id"]) / "exit_code").exists():
            log = ws.root / job["log_path"]
            assert time.monotonic() < deadline, log.read_text(errors="replace") if log.exists() else job
            time.sleep(0.5)
    listed = {job["id"]: job for job in json.loads(cli(ws, "queue", "list", "--json").stdout)}
    assert {job["status"] for job in listed.values()} == {"done"}, {i: j["error"] for i, j in listed.items()}
    for job in listed.values():
        assert job["slurm_state"] == "COMPLETED" and job["node"] == slurm_cluster.node and job["exit_code"] == 0
        assert job["elapsed_s"] is not None and job["started_at"] is not None
        for dep in job["depends_on"]:
            assert job["started_at"] >= listed[dep]["ended_at"] - 1, (job["id"], dep)  # Slurm's clock: 1 s steps
    for name in {job["target"] for job in listed.values()}:
        assert (ws.root / "Models" / name).is_dir()
        assert json.loads((ws.root / "Testing" / "metrics" / f"{name}.json").read_text())
    first = evaluation[0]
    log = (ws.root / first["log_path"]).read_text()
    assert "setup-ran" in log and f"as Slurm job {first['slurm_job_id']}" in log
    script = (ws.job_dir(first["id"]) / "slurm.sh").read_text()
    assert "#SBATCH --signal=B:USR1@300" in script and "#SBATCH --requeue" in script
    shown = cli(ws, "queue", "show", str(first["id"])).stdout
    assert "COMPLETED" in shown and first["slurm_job_id"] in shown


TINY_TRAIN = """
[model]
base = "Models/tiny-qwen3"
[data]
dataset = "boolq"
trunc_train = 64
[peft]
method = "NoPeft"
[train]
learning_rate = 1e-3
per_device_train_batch_size = 4
gradient_accumulation_steps = 1
max_steps = {steps}
logging_steps = 1
gradient_checkpointing = false
max_length = 128
gpus = {gpus}
"""


def events_of(ws, job) -> list[dict]:
    path = ws.root / job.events_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_rank_training_runs_under_srun_and_torchrun(demo_ws, slurm_cluster):
    ws = demo_ws
    use_slurm(ws)
    (ws.experiments_dir / "two-ranks.toml").write_text(TINY_TRAIN.format(steps=2, gpus=2))
    job_id = json.loads(cli(ws, "queue", "add", "train", "two-ranks", "--json").stdout)[0]["id"]
    script = (ws.job_dir(job_id) / "slurm.sh").read_text()
    assert "srun --nodes=1 --ntasks-per-node=1" in script and "torch.distributed.run" in script
    assert "--nproc_per_node=2" in script and "--rdzv_endpoint=$head:$port" in script
    job = wait_status(ws, job_id, ("done", "failed", "cancelled", "interrupted"), timeout_s=240)
    assert job.status == "done", (job.error, job.log_tail)
    starts = [event for event in events_of(ws, job) if event["kind"] == "start"]
    assert [event["world_size"] for event in starts] == [2]  # two ranks, one start event (rank 0's)
    assert (ws.root / "Models" / starts[0]["model"]).is_dir()


def test_stop_signal_stops_the_training_and_requeues_it(demo_ws, slurm_cluster):
    ws = demo_ws
    use_slurm(ws)
    (ws.experiments_dir / "long.toml").write_text(TINY_TRAIN.format(steps=5000, gpus=1))
    job_id = json.loads(cli(ws, "queue", "add", "train", "long", "--json").stdout)[0]["id"]
    job = wait_status(ws, job_id, ("running",))
    deadline = time.monotonic() + 120
    while not any(event["kind"] == "train_step" for event in events_of(ws, job)):
        assert time.monotonic() < deadline, (ws.root / job.log_path).read_text(errors="replace")
        time.sleep(0.5)
    # What Slurm does signal_before_s before the time limit (--signal=B:USR1@…): USR1 to the batch shell.
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job.slurm_job_id)
    log_path = ws.root / job.log_path
    deadline = time.monotonic() + 120
    while "requeueing" not in log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.5)
    stopped = [event for event in events_of(ws, job) if event["kind"] == "stopped"]
    assert len(stopped) == 1 and "stopped on request at step" in stopped[0]["message"]
    assert not any(event["kind"] in ("error", "done") for event in events_of(ws, job))
    # Slurm keeps the same job and holds it a while before running it again (Reason=BeginTime).
    again = wait_status(ws, job_id, ("queued",), timeout_s=60)
    assert again.slurm_job_id == job.slurm_job_id and again.slurm_state in ("PENDING", "REQUEUED"), again
    assert again.exit_code is None
    assert (ws.job_dir(job_id) / "exit_code").read_text().strip() == "75"  # REQUEUE_EXIT_CODE
    assert cancel_job(ws, job_id) == "cancelled"


async def test_jobs_screen_shows_a_slurm_job_with_its_state_at_80x24(tmp_path, slurm_cluster, tui_app):
    from textual.widgets import Static

    from tui.screens.jobs import JobsScreen
    from tui_workspace import make_workspace, wait_for

    ws = make_workspace(tmp_path / "ws")
    use_slurm(ws)
    with JobStore(ws) as store:
        long, waiting = store.enqueue_many([
            python_job("import time; print('working', flush=True); time.sleep(600)", target="slow-model"),
            python_job("print('after')", target="next-model", after_steps=(0,)),
        ])
    app = tui_app(ws, gpus=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        # Opening the screen syncs with Slurm: the waiting jobs are submitted and the first one runs.
        await wait_for(pilot, lambda: long.id in screen.views and screen.views[long.id].job.status == "running",
                       timeout=60, what="the Slurm job to run")
        table = screen.query_one("#jobs")
        row = [str(cell) for cell in table.get_row(str(long.id))]
        assert "running" in row and slurm_cluster.node in row, row
        screen.selected_id = long.id
        screen.update_panel()
        title = str(screen.query_one("#job-title", Static).render())
        slurm_id = screen.views[long.id].job.slurm_job_id
        assert f"Slurm job {slurm_id}: RUNNING on {slurm_cluster.node}" in title, title
        waiting_view = screen.views[waiting.id].job
        assert waiting_view.status == "queued" and waiting_view.pending_reason == "Dependency"
    assert cancel_job(ws, long.id) == "cancelled"


def test_time_limit_shows_as_interrupted(time_limited_job):
    ws, job_id = time_limited_job
    ended = wait_status(ws, job_id, ("done", "failed", "cancelled", "interrupted"), timeout_s=180)
    assert ended.status == "interrupted", (ended.status, ended.error)
    assert ended.slurm_state == "TIMEOUT" and "time limit" in ended.error
