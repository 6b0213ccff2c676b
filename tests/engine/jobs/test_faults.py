"""The queue under faults (issue 22, items 1–7 and 11), each injected for real: a named pause point
(:mod:`engine.fault_points`) freezes the worker, the job's launcher or a promotion, and the test SIGKILLs it
there; then a fresh worker must neither lose the job nor run it twice. Each test says how the old code failed.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from engine.fault_points import PAUSE_ENV, PAUSE_FILE_ENV
from engine.jobs.control import cancel_job
from engine.jobs.job_folder import LAUNCHER_FILE, JobStatus
from engine.jobs.proc_identity import TICKS_PER_SECOND, ProcReader, same_process, start_ticks
from engine.jobs.process import ANY_COMMAND_ENV, llmtui_command, process_alive
from engine.jobs.store import JobStore
from engine.jobs.worker import Worker, ensure_worker, stop_worker, worker_pid
from engine.workspace import Workspace
from waiting import wait_for

REPO = Path(__file__).resolve().parents[3]


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.fixture
def ws(queue_ws):
    return queue_ws


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def paused_worker(ws: Workspace, points: str, pause: Path) -> subprocess.Popen:
    """A foreground worker that freezes at ``points`` (comma-separated pause points)."""
    return subprocess.Popen(llmtui_command(ws, "worker", "--foreground"), cwd=ws.root,
                            env=_env(**{PAUSE_ENV: points, PAUSE_FILE_ENV: str(pause)}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _one_pass(ws: Workspace) -> None:
    """One scheduling pass of a worker in this process."""
    worker = Worker(ws)
    try:
        worker.tick()
    finally:
        worker.close()


def _job(ws: Workspace, job_id: int):
    with JobStore(ws) as store:
        return store.require(job_id)


def test_worker_killed_between_spawn_and_pid_record_is_adopted_not_run_twice(ws, tmp_path):
    """Before: the new worker found ``running`` with no pid and marked it ``interrupted`` while the process ran on
    unseen (``queue retry`` would run it a second time) and later wrote exit code 0."""
    runs = tmp_path / "runs.txt"
    with JobStore(ws) as store:
        job = store.enqueue("eval", py(f"import time; time.sleep(4); open({str(runs)!r}, 'a').write('ran\\n')"))
    pause = tmp_path / "pause"
    worker = paused_worker(ws, "worker-after-spawn", pause)
    wait_for(lambda: Path(f"{pause}.worker-after-spawn").exists(), 60, "the worker to pause after the spawn")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert _job(ws, job.id).pid is None  # the window: claimed and started, pid never recorded
    ensure_worker(ws)
    adopted = wait_for(lambda: (j := _job(ws, job.id)).pid and j, 30, "the new worker to adopt the job")
    assert adopted.status == JobStatus.RUNNING and process_alive(adopted.pid, adopted.pid_created)
    finished = wait_for(lambda: (j := _job(ws, job.id)).finished and j, 60, "the job to end")
    assert finished.status == JobStatus.DONE and finished.exit_code == 0
    assert runs.read_text() == "ran\n"


def test_launcher_that_comes_after_recovery_does_not_run(ws, tmp_path):
    """The worker dies after the spawn and before the pid record while its launcher is still starting (not yet
    recorded in the job folder). The recovery gives the launch up; the launcher, resumed, must not run the
    command. Before: nothing stopped the late launcher, so the job ran although it was shown ``interrupted``."""
    runs = tmp_path / "runs.txt"
    with JobStore(ws) as store:
        job = store.enqueue("eval", py(f"open({str(runs)!r}, 'a').write('ran\\n')"))
    pause = tmp_path / "pause"
    worker = paused_worker(ws, "worker-after-spawn,launcher-before-record", pause)
    launcher_pause = Path(f"{pause}.launcher-before-record")
    wait_for(lambda: launcher_pause.exists() and Path(f"{pause}.worker-after-spawn").exists(), 60,
             "the worker and the launcher to pause")
    launcher_pid = int(launcher_pause.read_text())
    os.kill(worker.pid, signal.SIGKILL)  # the worker only: the launcher has its own session
    worker.wait()
    recovering = Worker(ws)
    try:
        recovering.recover()
    finally:
        recovering.close()
    assert _job(ws, job.id).status == JobStatus.INTERRUPTED
    launcher_pause.unlink()  # let the launcher go on
    wait_for(lambda: not psutil.pid_exists(launcher_pid) or psutil.Process(launcher_pid).status() == "zombie",
             30, "the late launcher to give up")
    assert not runs.exists()
    assert "given_up" in (ws.job_dir(job.id) / LAUNCHER_FILE).read_text()


def test_an_error_after_the_claim_fails_the_job_with_the_reason(ws):
    """Before: an exception between claim and start (here: the job folder cannot be created) left the job
    ``running`` with no process; cancel answered "asked to stop but still runs" until a worker restart."""
    with JobStore(ws) as store:
        job = store.enqueue("eval", py("print('never')"))
    ws.jobs_dir.mkdir(parents=True, exist_ok=True)
    ws.job_dir(job.id).write_text("a file where the job's folder should be")
    _one_pass(ws)
    failed = _job(ws, job.id)
    assert failed.status == JobStatus.FAILED and failed.error.startswith("could not start:")
    assert "FileExistsError" in failed.error or "NotADirectoryError" in failed.error


def test_a_second_worker_never_truncates_the_live_workers_pid(ws):
    """Before: the losing worker's ``finally`` truncated ``worker.lock`` although it never held the lock, so
    ``worker stop`` then said "no worker runs" while the first one ran."""
    first = ensure_worker(ws)
    second = subprocess.run(llmtui_command(ws, "worker", "--foreground"), cwd=ws.root, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and "already runs" in second.stdout
    assert worker_pid(ws) == first
    assert stop_worker(ws) == first


def test_cancel_reaches_a_double_forked_setsid_grandchild(ws, tmp_path):
    """Before: a descendant that double-forked and called ``setsid`` left the job's process group and
    survived ``queue cancel``. Now the launcher is its subreaper and signals it."""
    pid_file = tmp_path / "daemon.pid"
    code = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open({str(pid_file)!r}, "w").write(str(os.getpid()))
                time.sleep(300)
            os._exit(0)
        time.sleep(300)
    """
    with JobStore(ws) as store:
        job = store.enqueue("eval", py(code))
    ensure_worker(ws)
    daemon = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the daemon's pid"))
    assert os.getsid(daemon) != os.getsid(_job(ws, job.id).pid)  # it did leave the job's session
    assert cancel_job(ws, job.id, wait_s=60) == JobStatus.CANCELLED
    wait_for(lambda: not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == "zombie", 30,
             "the daemon to end")


class SteppedClock(ProcReader):
    """``/proc`` as after the wall clock was stepped an hour forward (NTP, a resumed VM): boot time moves."""

    def boot_time(self) -> float:
        return super().boot_time() + 3600


def test_a_clock_step_does_not_make_a_live_job_look_dead():
    """Before: identity was ``psutil.create_time()`` (boot time by the wall clock + start ticks) compared with
    0.05 s tolerance; after a clock step the live job looked dead. Start ticks do not move."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        recorded = start_ticks(child.pid)
        stepped = SteppedClock()
        old_identity = ProcReader().boot_time() + recorded / TICKS_PER_SECOND  # what the old code stored
        after_step = stepped.boot_time() + stepped.start_ticks(child.pid) / TICKS_PER_SECOND
        assert abs(after_step - old_identity) > 0.05  # the old comparison: "dead"
        assert same_process(child.pid, recorded, stepped)  # the new one: still the job's process
        assert process_alive(child.pid, float(recorded))
        assert not same_process(child.pid, recorded + 1, stepped)  # a reused pid is still told apart
    finally:
        child.kill()
        child.wait()


def test_a_kill_during_promotion_leaves_the_model_folder(tmp_path):
    """Before: ``promote_dir`` renamed the old folder away, then the new one in; a kill between the two left no
    ``Models/{name}`` at all. Now the two are swapped in one step; killed right after it, the new one stands."""
    models = tmp_path / "Models"
    (models / "m").mkdir(parents=True)
    (models / "m" / "weights").write_text("old")
    (models / ".tmp-m-new").mkdir()
    (models / ".tmp-m-new" / "weights").write_text("new")
    pause = tmp_path / "pause"
    code = f"from engine.files import promote_dir; promote_dir({str(models / '.tmp-m-new')!r}, {str(models / 'm')!r})"
    child = subprocess.Popen([sys.executable, "-c", code], env=_env(**{PAUSE_ENV: "promote-after-exchange",
                                                                       PAUSE_FILE_ENV: str(pause)}))
    wait_for(lambda: Path(f"{pause}.promote-after-exchange").exists(), 60, "the promotion to pause")
    child.kill()
    child.wait()
    assert (models / "m" / "weights").read_text() == "new"


def test_an_unsafe_state_folder_is_refused_with_the_fix(ws):
    """Before: only ``init`` checked ``.llmtui/``; a worker ran whatever a group-writable queue.db held."""
    os.chmod(ws.state_dir, 0o777)
    done = subprocess.run(llmtui_command(ws, "worker", "--foreground"), cwd=ws.root, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"chmod go-w {ws.state_dir}" in done.stderr and "Traceback" not in done.stderr
    os.chmod(ws.state_dir, 0o700)
    assert stat.S_IMODE(ws.state_dir.stat().st_mode) == 0o700


def test_the_worker_runs_only_llmtuis_job_entry(ws, tmp_path, monkeypatch):
    """Before: the worker ran any argument list found in queue.db (the Slurm path already refused)."""
    monkeypatch.delenv(ANY_COMMAND_ENV)
    marker = tmp_path / "ran"
    with JobStore(ws) as store:
        job = store.enqueue("eval", ["/bin/sh", "-c", f"touch {marker}"])
    _one_pass(ws)
    refused = _job(ws, job.id)
    assert refused.status == JobStatus.FAILED and refused.error.startswith("refused:") and not marker.exists()


def test_a_requeued_launcher_replaces_its_earlier_record_but_never_a_given_up_one(tmp_path):
    """A Slurm requeue runs the same job folder again: the old launcher record must not stop it; a launch a
    recovery gave up must stay given up."""
    from engine.jobs.job_folder import give_up_launch, read_launcher, record_launcher

    assert record_launcher(tmp_path, 111, 5) and read_launcher(tmp_path)["pid"] == 111
    assert record_launcher(tmp_path, 222, 6) and read_launcher(tmp_path)["pid"] == 222
    assert give_up_launch(tmp_path, "test") == {"pid": 222, "start_ticks": 6}  # a launcher won: adopt it
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert give_up_launch(fresh, "never started") is None
    assert not record_launcher(fresh, 333, 7)
