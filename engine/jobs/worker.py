"""The queue worker: one per workspace (``.llmtui/worker.lock``), detached from any terminal (worker process).

It takes runnable jobs from the queue, gives each its GPUs through ``CUDA_VISIBLE_DEVICES`` and runs
it as its own process group (``engine.jobs.jobrun`` wrapping the job's command) with stdout and stderr
going to ``.llmtui/jobs/{id}/log.txt``. Jobs live in their own sessions: closing the TUI, losing SSH
or stopping the worker does not stop them. A new worker adopts jobs whose process still lives (pid
plus process start time, so a reused pid is not mistaken for the job), records the result of jobs
that ended meanwhile, and marks the rest ``interrupted``; an interrupted training that left a checkpoint is
queued again to resume from it (``auto_resume``).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from engine.fault_points import pause_point
from engine.jobs.fit import job_memory
from engine.jobs.gpu import GpuInventory, NvmlInventory, system_reading
from engine.jobs.job_folder import (EXIT_FILE, LOG_HEADER, JobStatus, give_up_launch, job_error, job_log_tail,
                                    log_tail, prepare_job_dir, read_exit_code, read_launcher)
from engine.jobs.process import (JOB_ENTRY_MODULE, JOB_WRAPPER_MODULE, descendants, is_job_command, kill_all,
                                 llmtui_command, process_alive, process_start_time, python_command, python_env,
                                 signal_group)
from engine.jobs.resume import job_checkpoint, retry_depth
from engine.jobs.scheduler import Waiting, default_max_parallel, free_gpus, plan_starts
from engine.jobs.settings import SETTINGS_FILE, WorkerError, WorkerSettings, load_worker_settings
from engine.jobs.store import Job, JobStore
from engine.jobs.study_run import TRIAL_OPTION
from engine.jobs.study_search import advance_after_job
from engine.workspace import Workspace

LOCK_FILE = "worker.lock"
LOG_FILE = "worker.log"


# ------------------------------------------------------------------------------------------ the worker


@dataclass
class _Running:
    job_id: int
    pid: int
    created: float | None
    gpus: list[int]
    process: subprocess.Popen | None  # None: adopted from an earlier worker, not our child
    term_sent_at: float | None = None
    kill_sent: bool = False
    tree: list = field(default_factory=list)


class Worker:
    """The scheduling loop. ``run`` until ``should_stop``; tests may call ``recover``/``tick`` directly."""

    def __init__(self, ws: Workspace, settings: WorkerSettings | None = None,
                 inventory: GpuInventory | None = None, say: Callable[[str], None] | None = None):
        self.ws = ws
        self.settings = settings or load_worker_settings(ws)
        self.inventory = inventory or NvmlInventory()
        self.store = JobStore(ws)
        self.running: dict[int, _Running] = {}
        self._say = say or (lambda message: None)
        self._seen_version: int | None = None
        self._last_pass = 0.0
        self._needs: dict[int, float | None] = {}

    def log(self, message: str) -> None:
        self._say(f"{datetime.now().isoformat(timespec='seconds')} {message}")

    def close(self) -> None:
        self.store.close()

    # ----------------------------------------------------------------------------- recovery

    def recover(self) -> None:
        """Take over the jobs an earlier worker left ``running``.

        The pid comes from the queue or, when the earlier worker died before recording it, from the
        launcher's own record in the job folder; a job whose launcher never recorded itself is given up
        there first, so a launcher still starting will not run it behind the queue's back.
        """
        for job in self.store.list(statuses=[JobStatus.RUNNING]):
            if job.id in self.running or job.executor != "local":
                continue
            job_dir = self.ws.job_dir(job.id)
            pid, created = job.pid, job.pid_created
            if not (pid and process_alive(pid, created)):
                record = read_launcher(job_dir) or give_up_launch(job_dir, "recovered by a worker: never started")
                if record and "pid" in record:
                    pid, created = record["pid"], record.get("start_ticks")
            if pid and process_alive(pid, created):
                if (pid, created) != (job.pid, job.pid_created):
                    self.store.set_process(job.id, pid, created)
                self.running[job.id] = _Running(job.id, pid, created, job.gpus_assigned, None)
                self.log(f"job {job.id}: adopted (pid {pid} still runs)")
                continue
            exit_code = read_exit_code(job_dir) if pid else None
            if exit_code is not None:
                status = self._finish(job.id, exit_code)
                self.log(f"job {job.id}: ended while no worker watched it: {status}")
            else:
                reason = ("interrupted: its process was gone when the worker restarted (worker killed or machine "
                          "rebooted)") if pid else "interrupted: the worker stopped before the job's process started"
                self.store.interrupt(job.id, reason, log_tail=log_tail(self.ws.root / job.log_path))
                self.log(f"job {job.id}: {reason}")
                self._auto_resume(job)

    def _auto_resume(self, job: Job) -> None:
        """Queue an interrupted training again when it left a checkpoint (it resumes from there)."""
        if not self.settings.auto_resume or job.kind != "train":
            return
        checkpoint = job_checkpoint(self.ws, job)
        if checkpoint is None:
            return
        depth = retry_depth({j.id: j for j in self.store.list()}, job)
        if depth >= self.settings.auto_resume_attempts:
            self.log(f"job {job.id}: not resumed automatically: {depth} retries already led to it "
                     f"(auto_resume_attempts = {self.settings.auto_resume_attempts})")
            return
        copy = self.store.retry(job.id)[0]
        self.log(f"job {job.id}: re-queued as job {copy.id} to resume from its checkpoint at step {checkpoint.step}")

    # ----------------------------------------------------------------------------- the loop

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.recover()
        self.log(f"worker {os.getpid()} ready on {self.ws.root}")
        while not should_stop():
            try:
                busy = self.tick()
            except Exception:  # one bad pass must not stop the queue: log it and try again
                self.log("error in the worker loop:\n" + traceback.format_exc())
                busy = False
            if not busy:
                # Poll faster while jobs run, so short jobs are reaped and replaced promptly.
                time.sleep(min(self.settings.poll_interval_s, 0.05) if self.running else self.settings.poll_interval_s)

    def tick(self) -> bool:
        """One pass: reap finished jobs, act on cancels, start what may start. True if anything changed."""
        changed = self._reap()
        version = self.store.data_version()
        now = time.monotonic()
        due = (version != self._seen_version or changed or now - self._last_pass > 2.0
               or any(r.term_sent_at is not None for r in self.running.values()))
        if not due:
            return False
        self._seen_version, self._last_pass = version, now
        self._handle_cancels()
        return self._schedule() or changed

    def _reap(self) -> bool:
        ended = []
        for job_id, run in self.running.items():
            if run.process is not None:
                try:
                    done = os.waitid(os.P_PID, run.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
                except ChildProcessError:  # reaped on an earlier pass whose record failed
                    done = True
                else:
                    if done:
                        # The leader is a zombie, so its group id cannot be reused yet: end any stragglers.
                        signal_group(run.pid, signal.SIGKILL)
                        run.process.wait()
            else:
                done = not process_alive(run.pid, run.created)
            if done:
                kill_all(run.tree)
                ended.append(job_id)
        for job_id in ended:
            run = self.running[job_id]
            exit_code = read_exit_code(self.ws.job_dir(job_id))
            if exit_code is None and run.process is not None:
                exit_code = run.process.returncode
            status = self._finish(job_id, exit_code)
            del self.running[job_id]  # only once recorded: a failed write is retried on the next pass
            self.log(f"job {job_id}: {status} (exit code {exit_code})")
        return bool(ended)

    def _finish(self, job_id: int, exit_code: int | None) -> JobStatus:
        job_dir = self.ws.job_dir(job_id)
        tail = job_log_tail(job_dir)
        status = self.store.finish(job_id, exit_code, error=job_error(job_dir, exit_code, tail), log_tail=tail)
        self._advance_search(job_id)
        return status

    def _advance_search(self, job_id: int) -> None:
        """A study search's trial job ended: record its trial and queue the next (no driver process waits)."""
        job = self.store.get(job_id)
        if job is None or TRIAL_OPTION not in job.options:
            return
        try:
            result = advance_after_job(self.ws, job)
        except Exception as exc:  # a broken study file must not stop the queue: say so and go on
            self.log(f"job {job_id}: its study search could not move on: {exc}")
            return
        if result and (result["told"] or result["queued"]):
            self.log(f"job {job_id}: study search told {result['told']}, asked {result['asked']}, "
                     f"queued {result['queued']}")

    def _handle_cancels(self) -> None:
        if not self.running:
            return
        marks = ",".join("?" * len(self.running))
        rows = self.store.conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks}) AND cancel_requested_at IS NOT NULL",
                                       list(self.running))
        now = time.monotonic()
        for (job_id,) in rows.fetchall():
            run = self.running[job_id]
            if run.term_sent_at is None:
                if run.process is None and not process_alive(run.pid, run.created):
                    continue  # gone already; the next reap records it
                run.tree = descendants(run.pid)
                signal_group(run.pid, signal.SIGTERM)
                run.term_sent_at = now
                self.log(f"job {job_id}: cancel: SIGTERM to process group {run.pid}")
            elif not run.kill_sent and now - run.term_sent_at >= self.settings.cancel_grace_s:
                run.tree += [p for p in descendants(run.pid) if p not in run.tree]
                signal_group(run.pid, signal.SIGKILL)
                kill_all(run.tree)
                run.kill_sent = True
                self.log(f"job {job_id}: cancel: SIGKILL after {self.settings.cancel_grace_s:g} s")

    def _schedule(self) -> bool:
        waiting = [job for job in self.store.list(statuses=[JobStatus.QUEUED]) if job.executor == "local"]
        if not waiting:
            return False
        dependency_status = self.store.statuses(dep for job in waiting for dep in job.depends_on)
        readings = self.inventory.gpus()
        held = [gpu for run in self.running.values() for gpu in run.gpus]
        check = self.settings.check_memory
        needs = {job.id: self._memory_need(job) for job in waiting} if check else {}
        shareable = [g for g in set(held) if held.count(g) == 1] if self.settings.share_gpus else []
        max_parallel = self.settings.max_parallel or default_max_parallel(len(readings))
        decision = plan_starts(
            [Waiting(job.id, job.gpus_requested, tuple(job.depends_on), needs.get(job.id)) for job in waiting],
            running=len(self.running), free=free_gpus(readings, held, self.settings.busy_gpu_memory_fraction),
            total_gpus=len(readings),
            max_parallel=max_parallel + (len(shareable) if self.settings.share_gpus else 0),
            dependency_status=dependency_status,
            gpu_free_memory={r.index: r.memory_free for r in readings} if check else None, shareable=shareable,
            cpu_available=self.cpu_available() if check else None)
        for job in waiting:
            reason = decision.waiting.get(job.id, "")
            if reason != job.pending_reason:
                self.store.set_pending_reason(job.id, reason)
                if reason:
                    self.log(f"job {job.id}: waits: {reason}")
        for job_id, why in decision.impossible.items():
            self.store.fail_waiting(job_id, why.reason, why.dependency)
            self.log(f"job {job_id}: failed: {why.reason}")
        by_id = {job.id: job for job in waiting}
        for start in decision.starts:
            self._start(by_id[start.job_id], list(start.gpus))
        return bool(decision.starts or decision.impossible)

    @staticmethod
    def cpu_available() -> int:
        """The machine's available memory now (bytes)."""
        reading = system_reading()
        return reading.memory_total - reading.memory_used

    def _memory_need(self, job: Job) -> float | None:
        """The job's memory estimate (bytes), kept once known (unknown: asked again, its model may appear)."""
        if self._needs.get(job.id) is None:
            self._needs[job.id] = job_memory(self.ws, job)
        return self._needs[job.id]

    def _start(self, job: Job, gpus: list[int]) -> None:
        if not is_job_command(job.command):  # queue.db is data: only llmtui's own job entry runs from it
            self.store.fail_waiting(job.id, f"refused: its command does not start with {shlex.join(python_command(JOB_ENTRY_MODULE))}")
            self.log(f"job {job.id}: refused: not an llmtui job command")
            return
        if not self.store.claim(job.id, gpus):
            return
        pause_point("worker-after-claim")
        try:
            process = self._spawn(job, gpus)
        except Exception as exc:  # the folder, the log, the disk: the job must not stay "running" with no process
            reason = f"could not start: {type(exc).__name__}: {exc}"
            self.store.finish(job.id, None, error=reason)
            self.log(f"job {job.id}: {reason}")
            return
        pause_point("worker-after-spawn")
        created = process_start_time(process.pid)
        self.store.set_process(job.id, process.pid, created)
        self.running[job.id] = _Running(job.id, process.pid, created, gpus, process)
        self.log(f"job {job.id}: started pid {process.pid} ({job.kind} {job.target})")

    def _spawn(self, job: Job, gpus: list[int]) -> subprocess.Popen:
        job_dir = self.ws.job_dir(job.id)
        prepare_job_dir(job_dir, job.preset)
        env = python_env({
            "LLMTUI_JOB_ID": str(job.id), "LLMTUI_WORKSPACE": str(self.ws.root),
            "LLMTUI_EVENTS": str(self.ws.root / job.events_path),
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "PYTHONUNBUFFERED": "1"})
        with open(self.ws.root / job.log_path, "ab") as log:
            when = datetime.now().isoformat(timespec="seconds")
            command = shlex.join(job.command).replace("\n", "\\n")  # one line, so the header stays two
            log.write(f"{LOG_HEADER}job {job.id} ({job.kind}) started {when} on "
                      f"{'GPU ' + ','.join(map(str, gpus)) if gpus else 'no GPU'}\n{LOG_HEADER}$ {command}\n".encode())
            log.flush()
            return subprocess.Popen(python_command(JOB_WRAPPER_MODULE, str(job_dir / EXIT_FILE), "--", *job.command),
                                    cwd=self.ws.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)


# ------------------------------------------------------------------------------------------ lock, start, stop


def _lock_path(ws: Workspace) -> Path:
    return ws.state_dir / LOCK_FILE


def worker_pid(ws: Workspace) -> int | None:
    """The pid of the workspace's live worker, or None when none holds the lock."""
    path = _lock_path(ws)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        deadline = time.monotonic() + 1.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                if text.isdigit():
                    return int(text)
                if time.monotonic() > deadline:  # locked, pid not written yet (just starting)
                    return -1
                time.sleep(0.01)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)


def run_worker(ws: Workspace, settings: WorkerSettings | None = None,
               say: Callable[[str], None] | None = None) -> int:
    """Be the workspace's worker in this process until SIGTERM/SIGINT/SIGHUP. Returns 0, or 1 when
    another worker already holds the lock. Running jobs are left running when it stops."""
    ws.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if unsafe := ws.unsafe_state_folder():
        raise WorkerError(f"refusing to run jobs: {unsafe[0]}; fix: {unsafe[1]}")
    say = say or (lambda message: print(message, flush=True))
    fd = os.open(_lock_path(ws), os.O_RDWR | os.O_CREAT, 0o600)
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"a worker already runs for {ws.root} (pid {worker_pid(ws)})")
            return 1
        settings = settings or load_worker_settings(ws)
        if settings.slurm.enabled:
            say(f"{ws.root} runs its jobs on Slurm ([slurm] enabled in {ws.state_dir / SETTINGS_FILE}); "
                "no local worker is needed")
            return 1
        os.ftruncate(fd, 0)  # only now, with the lock held: a second worker never touches the live one's pid
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        held = True
        stop = False

        def request_stop(signum, _frame) -> None:
            nonlocal stop
            stop = True
            say(f"worker {os.getpid()}: {signal.Signals(signum).name}, stopping (running jobs keep running)")

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, request_stop)
        worker = Worker(ws, settings, say=say)
        try:
            worker.run(lambda: stop)
        finally:
            worker.close()
        return 0
    finally:
        if held:
            os.ftruncate(fd, 0)
        os.close(fd)


def ensure_worker(ws: Workspace, *, max_parallel: int | None = None, wait_s: float = 15.0) -> int:
    """Start a detached worker (its own session, output to ``.llmtui/worker.log``) unless one runs.

    Returns the worker's pid once it holds the lock; raises :class:`WorkerError` if it does not start.
    """
    pid = worker_pid(ws)
    if pid:
        return pid
    ws.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if unsafe := ws.unsafe_state_folder():
        raise WorkerError(f"refusing to run jobs: {unsafe[0]}; fix: {unsafe[1]}")
    log_path = ws.state_dir / LOG_FILE
    extra = ["--max-parallel", str(max_parallel)] if max_parallel is not None else []
    with open(log_path, "ab") as log:
        process = subprocess.Popen(llmtui_command(ws, "worker", "--foreground", *extra),
                                   cwd=ws.root, env=python_env(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pid = worker_pid(ws)
        if pid and pid > 0:
            return pid
        if process.poll() is not None and not worker_pid(ws):
            break
        time.sleep(0.02)
    raise WorkerError(f"the worker did not start; see {log_path}:\n{log_tail(log_path, 10)}")


def stop_worker(ws: Workspace, timeout_s: float = 10.0) -> int | None:
    """Ask the workspace's worker to stop (its jobs keep running) and wait for it. Returns its pid,
    or None when none ran."""
    pid = worker_pid(ws)
    if not pid or pid < 0:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + timeout_s
    while worker_pid(ws) or process_alive(pid, None):
        if time.monotonic() > deadline:
            raise WorkerError(f"worker {pid} did not stop within {timeout_s:g} s")
        time.sleep(0.05)
    return pid
