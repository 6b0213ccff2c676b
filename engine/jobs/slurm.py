"""Running the queue on a Slurm cluster (CLI / TUI process): submit, sync, cancel through Slurm's own commands.

With ``[slurm] enabled = true`` in ``.llmtui/worker.toml`` every queued job becomes one batch job
(``sbatch --parsable``) that runs the same ``llmtui … train|quantize|eval`` command the local worker would,
wrapped by :mod:`engine.jobs.jobrun` so its exit code lands in ``.llmtui/jobs/{id}/exit_code`` (readable
after Slurm has forgotten the job). Dependencies become ``--dependency=afterok:…``. :func:`sync` (run by
``llmtui queue …`` and the TUI) submits what waits and reads the state of submitted jobs (``squeue``,
then ``sacct`` where accounting is enabled, then the exit file) into the queue database, mapping Slurm
states onto llmtui's. llmtui schedules nothing here: Slurm does. The workspace must be on a filesystem
the compute nodes share (the job's log, events, exit file and model folders are written there).

Preemption and time limits: jobs ask for ``SIGUSR1`` ``signal_before_s`` before their limit
(``--signal=B:USR1@…``); the batch script passes it on to the job (:mod:`engine.jobs.requeue`), and when
the job stops with :data:`~engine.jobs.requeue.REQUEUE_EXIT_CODE` (or its ranks wrote a ``stopped`` event)
the script runs ``scontrol requeue`` so the same job runs again (training resumes from its checkpoint).
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime

from engine.events import EventKind
from engine.files import write_text
from engine.jobs.process import JOB_ENTRY_MODULE, JOB_WRAPPER_MODULE, python_command
from engine.jobs.requeue import REQUEUE_EXIT_CODE, STOP_SIGNAL
from engine.jobs.job_folder import (EVENTS_FILE, EXIT_FILE, FINISHED, LOG_HEADER, SLURM_SCRIPT_FILE, JobStatus,
                                    error_summary, job_log_tail, prepare_job_dir, read_exit_code)
from engine.jobs.settings import SlurmSettings, load_worker_settings
from engine.jobs.store import Job, JobError, JobStore
from engine.workspace import Workspace

LOCK_FILE = "slurm.lock"
COMMAND_TIMEOUT_S = 60.0
#: Slurm job states in which the job still waits (→ ``queued``) or runs (→ ``running``).
WAITING_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT")
RUNNING_STATES = ("RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING",
                  "STOPPED")
#: Ended states that mean the job was stopped from outside rather than failing by itself.
INTERRUPTED_STATES = {"TIMEOUT": "Slurm's time limit was reached", "NODE_FAIL": "its node failed",
                      "PREEMPTED": "it was preempted", "BOOT_FAIL": "its node failed to boot",
                      "DEADLINE": "its deadline passed"}
FAILED_STATES = ("FAILED", "OUT_OF_MEMORY")
#: The port of the torchrun rendezvous on the first node is this plus the Slurm job id modulo 20,000.
RENDEZVOUS_PORT_BASE = 20000
#: How a ``stopped`` event line looks in the events file (``json.dumps`` spacing), quoted for the shell.
STOPPED_PATTERN = shlex.quote(f'"kind": "{EventKind.STOPPED}"')


class SlurmError(RuntimeError):
    """A Slurm command failed or is missing; the message says which and what it printed."""


def slurm_command(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one Slurm client command (``SLURM_CONF`` and ``PATH`` from the environment)."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]}: command not found; [slurm] enabled in .llmtui/worker.toml needs the Slurm "
                         "client commands on PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(argv)} did not answer within {COMMAND_TIMEOUT_S:g} s") from None
    if check and result.returncode != 0:
        raise SlurmError(f"{shlex.join(argv)} failed (exit code {result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()}")
    return result


# ------------------------------------------------------------------------------------------ batch script


@dataclass(frozen=True)
class Resources:
    """What one job asks Slurm for."""

    gpus: int = 0  # per node
    nodes: int = 1
    processes: int = 1  # data-parallel ranks per node
    time: str = ""


def job_resources(ws: Workspace, job: Job, settings: SlurmSettings) -> Resources:
    """A training asks for ``[train] gpus`` per node on ``[train] nodes``; quantization and evaluation for
    one GPU. On a cluster without GPUs (``gpu_flag = ""``) jobs ask for none (ranks then run on CPUs)."""
    per_gpu = 1 if settings.gpu_flag else 0
    if job.kind != "train" or job.preset is None:
        return Resources(gpus=per_gpu, time=settings.time)
    from engine.data.tasks import custom_tasks
    from engine.presets.config import ConfigError, load_preset_text

    try:
        config = load_preset_text(job.preset, f"job #{job.id} preset", job.options.get("overrides") or [],
                                  tuple(custom_tasks(ws.datasets_dir)))
    except ConfigError as exc:
        raise JobError(str(exc)) from None
    processes = config.train.gpus if config.data.dataset != "none" else 1
    nodes = config.train.nodes if config.data.dataset != "none" else 1
    return Resources(gpus=processes if settings.gpu_flag else 0, nodes=nodes, processes=processes,
                     time=config.train.slurm_time or settings.time)


def _rank_command(job: Job, resources: Resources) -> str:
    """The training command as ``srun`` + ``torchrun`` ranks, rendezvous on the job's first node.

    torchrun ends itself on most signals, so it starts with SIGUSR1 ignored; the ranks install their own
    handler (:mod:`engine.jobs.requeue`), so the stop request reaches them and not the launcher.
    """
    prefix = python_command(JOB_ENTRY_MODULE)
    if job.command[:len(prefix)] != prefix:
        raise JobError(f"job #{job.id}: its command does not run {JOB_ENTRY_MODULE}; cannot start it as ranks")
    launcher = [*python_command("torch.distributed.run"), f"--nnodes={resources.nodes}",
                f"--nproc_per_node={resources.processes}", "--rdzv_backend=c10d", "--rdzv_id=$SLURM_JOB_ID",
                "--rdzv_endpoint=$head:$port", "--no-python", *job.command]
    srun = ["srun", f"--nodes={resources.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            "bash", "-c", "trap '' USR1; exec \"$@\"", "llmtui-rank"]
    quoted = [arg if arg.startswith("--rdzv_id=$") or arg.startswith("--rdzv_endpoint=$") else shlex.quote(arg)
              for arg in [*srun, *launcher]]
    return " ".join(quoted)


def batch_script(ws: Workspace, job: Job, settings: SlurmSettings, resources: Resources) -> str:
    """The ``sbatch`` script of one job: its resources as ``#SBATCH`` lines, then the ``[slurm] setup``
    lines, then the job's command under :mod:`engine.jobs.jobrun`, with the stop signal passed on and a
    requeue when the job stopped for it."""
    job_dir = ws.job_dir(job.id)
    exit_file = job_dir / EXIT_FILE
    options = [f"--job-name=llmtui-{job.id}-{job.kind}", f"--output={ws.root / job.log_path}", "--open-mode=append",
               f"--chdir={ws.root}", "--requeue"]
    if settings.signal_before_s:
        options.append(f"--signal=B:{STOP_SIGNAL.name.removeprefix('SIG')}@{settings.signal_before_s}")
    for flag, value in (("partition", settings.partition), ("account", settings.account), ("qos", settings.qos),
                        ("time", resources.time), ("mem", settings.mem)):
        if value:
            options.append(f"--{flag}={value}")
    if settings.cpus_per_task:
        options.append(f"--cpus-per-task={settings.cpus_per_task}")
    if resources.nodes > 1:
        options += [f"--nodes={resources.nodes}", "--ntasks-per-node=1"]
    if resources.gpus and settings.gpu_flag:
        options += shlex.split(settings.gpu_flag.replace("{n}", str(resources.gpus)))
    ranks = job.kind == "train" and resources.nodes * resources.processes > 1
    env = {"LLMTUI_JOB_ID": str(job.id), "LLMTUI_WORKSPACE": str(ws.root),
           "LLMTUI_EVENTS": str(ws.root / job.events_path), "PYTHONUNBUFFERED": "1"}
    wrapper = shlex.join(python_command(JOB_WRAPPER_MODULE, str(exit_file), "--"))
    if ranks:
        run = f"{wrapper} {_rank_command(job, resources)}"
        forward = 'scancel --signal=USR1 "$SLURM_JOB_ID"'  # every rank on every node (steps, not this shell)
    else:
        run = f"{wrapper} {shlex.join(job.command)}"
        forward = 'kill -USR1 "$child" 2>/dev/null'  # jobrun passes it on to the job's processes
    header = shlex.quote(f"{LOG_HEADER}job {job.id} ({job.kind}) started")
    shown = shlex.quote(f"{LOG_HEADER}$ " + shlex.join(job.command).replace("\n", "\\n"))
    lines = ["#!/bin/bash", f"# llmtui job {job.id}: {job.description}".replace("\n", " ")]
    lines += [f"#SBATCH {option}" for option in options]
    lines += [
        "set -u",
        *(f"export {key}={shlex.quote(value)}" for key, value in env.items()),
        "# [slurm] setup from .llmtui/worker.toml",
        *settings.setup,
        f"rm -f {shlex.quote(str(exit_file))}",
        f'echo {header}" $(date -Is) as Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST'
        f' (restart ${{SLURM_RESTART_COUNT:-0}})"',
        f"echo {shown}",
    ]
    if ranks:
        lines += ['head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                  f"port=$(( {RENDEZVOUS_PORT_BASE} + SLURM_JOB_ID % 20000 ))"]
    lines += [
        "stop_asked=0",
        f"trap 'stop_asked=1; {forward}' USR1",
        "trap 'kill -TERM \"$child\" 2>/dev/null' TERM",
        f"{run} &",
        "child=$!",
        "while :; do wait \"$child\"; code=$?; kill -0 \"$child\" 2>/dev/null || break; done",
        # Requeue only when the job says it stopped for the signal: its exit code, or (ranks under a launcher
        # that reports any rank's exit as a failure) the training's "stopped" event.
        f'if [ "$code" -eq {REQUEUE_EXIT_CODE} ] || {{ [ "$stop_asked" -eq 1 ] && '
        f"tail -n 3 {shlex.quote(str(ws.root / job.events_path))} 2>/dev/null | grep -q {STOPPED_PATTERN}; }}; then",
        f"    echo {shlex.quote(LOG_HEADER + 'stopped before the time limit; requeueing')}",
        '    scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ submit


class _Lock:
    """One submitter/syncer per workspace at a time (the TUI and a CLI may both sync)."""

    def __init__(self, ws: Workspace):
        ws.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = ws.state_dir / LOCK_FILE

    def __enter__(self) -> "_Lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _submit(ws: Workspace, store: JobStore, job: Job, settings: SlurmSettings, slurm_ids: dict[int, str]) -> None:
    resources = job_resources(ws, job, settings)
    job_dir = ws.job_dir(job.id)
    prepare_job_dir(job_dir, job.preset)
    script = job_dir / SLURM_SCRIPT_FILE
    write_text(script, batch_script(ws, job, settings, resources))
    argv = ["sbatch", "--parsable"]
    after = [slurm_ids[dep] for dep in job.depends_on if dep in slurm_ids]
    if after:
        argv += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    argv += [*settings.sbatch_args, str(script)]
    try:
        output = slurm_command(*argv).stdout.strip()
    except SlurmError as exc:
        store.fail_waiting(job.id, f"not submitted to Slurm: {exc}")
        return
    slurm_id = output.split(";")[0]  # "ID" or "ID;cluster"
    if store.mark_submitted(job.id, slurm_id, resources.gpus * resources.nodes):
        slurm_ids[job.id] = slurm_id
    else:  # cancelled while sbatch ran: take it back
        slurm_command("scancel", slurm_id, check=False)


def submit_queued(ws: Workspace, store: JobStore, settings: SlurmSettings) -> int:
    """Submit every queued job not yet handed to Slurm (in id order, so dependencies go first). A job whose
    dependency still waits for the local worker is left for a later sync. Returns how many were submitted."""
    waiting = [job for job in store.list(statuses=[JobStatus.QUEUED]) if job.slurm_job_id is None]
    if not waiting:
        return 0
    deps = {dep for job in waiting for dep in job.depends_on}
    known = store.get_many(deps)
    slurm_ids = {job_id: job.slurm_job_id for job_id, job in known.items() if job.slurm_job_id}
    submitted = 0
    for job in waiting:
        blocked = False
        for dep in job.depends_on:
            dep_job = known.get(dep)
            if dep_job is None or dep_job.status == JobStatus.DONE or dep in slurm_ids:
                continue  # cleared from the queue (it finished), done, or a Slurm job to wait for
            if dep_job.status in FINISHED:
                store.fail_waiting(job.id, f"not run: dependency #{dep} {dep_job.status}", dep)
            blocked = True
            break
        if blocked:
            continue
        _submit(ws, store, job, settings, slurm_ids)
        submitted += 1
        if job.id in deps:
            known[job.id] = store.require(job.id)
    return submitted


# ------------------------------------------------------------------------------------------ sync


@dataclass(frozen=True)
class Reading:
    """One Slurm job as ``squeue`` or ``sacct`` reported it."""

    state: str
    reason: str = ""
    node: str = ""
    elapsed_s: float | None = None
    started_at: float | None = None
    ended_at: float | None = None


def _elapsed(text: str) -> float | None:
    """Seconds from sacct's ``ElapsedRaw`` (whole seconds) or squeue's ``[days-]hours:minutes:seconds`` /
    ``minutes:seconds``."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:  # "N/A", "Unknown", "None"
        return None


def _none(text: str) -> str:
    return "" if text.strip() in ("None", "(null)", "N/A") else text.strip()


#: The fields both readers ask for, in this order, ``|``-separated: id, state, reason, nodes, elapsed, start, end.
_SQUEUE_FORMAT = "%i|%T|%r|%N|%M|%S|%e"
_SACCT_FORMAT = "JobIDRaw,State,Reason,NodeList,ElapsedRaw,Start,End"


def parse_readings(output: str) -> dict[str, Reading]:
    """THE row parser of ``squeue`` and ``sacct`` output in the fields above (sacct's state may carry a
    suffix: ``CANCELLED by 1000``); a row of another shape is skipped."""
    readings = {}
    for line in output.splitlines():
        parts = line.split("|")
        if len(parts) != 7:
            continue
        slurm_id, state, reason, node, elapsed, start, end = parts
        readings[slurm_id.strip()] = Reading(state.split()[0] if state.strip() else "", _none(reason), _none(node),
                                             _elapsed(elapsed), _timestamp(start), _timestamp(end))
    return readings


def read_squeue(slurm_ids: list[str]) -> dict[str, Reading]:
    """What ``squeue`` knows of these jobs (recently ended ones too, until Slurm forgets them)."""
    if not slurm_ids:
        return {}
    result = slurm_command("squeue", "--noheader", "--states=all", f"--jobs={','.join(slurm_ids)}",
                           f"--format={_SQUEUE_FORMAT}", check=False)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return {}  # none of them is known any more
        raise SlurmError(f"squeue failed (exit code {result.returncode}): {result.stderr.strip()}")
    return parse_readings(result.stdout)


def read_sacct(slurm_ids: list[str]) -> dict[str, Reading]:
    """What Slurm's accounting knows of these jobs; empty where accounting is disabled."""
    if not slurm_ids:
        return {}
    result = slurm_command("sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={','.join(slurm_ids)}",
                           f"--format={_SACCT_FORMAT}", check=False)
    if result.returncode != 0:
        return {}  # "accounting storage is disabled" (no slurmdbd): the exit file is the record
    return parse_readings(result.stdout)


def _record(ws: Workspace, store: JobStore, job: Job, reading: Reading | None) -> str:
    """Map one Slurm reading (None: Slurm has forgotten the job) onto the job's llmtui status."""
    job_dir = ws.job_dir(job.id)
    if reading is not None and reading.state in WAITING_STATES:
        return store.record_slurm(job.id, status=JobStatus.QUEUED, slurm_state=reading.state, reason=reading.reason,
                                  node=reading.node, elapsed_s=reading.elapsed_s)
    if reading is not None and reading.state in RUNNING_STATES:
        return store.record_slurm(job.id, status=JobStatus.RUNNING, slurm_state=reading.state, reason=reading.reason,
                                  node=reading.node, elapsed_s=reading.elapsed_s, started_at=reading.started_at)
    exit_code = read_exit_code(job_dir)
    tail = job_log_tail(job_dir)
    state = reading.state if reading is not None else ""
    if state == "COMPLETED" or (reading is None and exit_code == 0):
        status, error = JobStatus.DONE, ""
    elif state in INTERRUPTED_STATES:
        status, error = JobStatus.INTERRUPTED, f"interrupted: {INTERRUPTED_STATES[state]} (Slurm state {state})"
    elif state == "CANCELLED":
        if reading is not None and reading.reason == "DependencyNeverSatisfied":
            failed = [dep for dep in job.depends_on
                      if store.statuses([dep]).get(dep, JobStatus.DONE) != JobStatus.DONE]
            status = JobStatus.FAILED
            error = (f"not run: dependency #{failed[0]} did not finish" if failed
                     else "not run: Slurm says its dependency was never satisfied")
        else:
            status, error = JobStatus.CANCELLED, "cancelled in Slurm (scancel)"
    elif state in FAILED_STATES or (reading is None and exit_code is not None):
        status = JobStatus.FAILED
        error = error_summary(exit_code, tail, job_dir / EVENTS_FILE)
        if state == "OUT_OF_MEMORY":
            error = f"out of memory (Slurm state OUT_OF_MEMORY); {error}"
    elif reading is None:
        status = JobStatus.INTERRUPTED
        error = "interrupted: Slurm no longer knows the job and it left no exit status"
    else:
        status, error = JobStatus.FAILED, f"unknown Slurm state {state!r}"
    return store.record_slurm(job.id, status=status, slurm_state=state or "GONE",
                              reason=reading.reason if reading else "", node=reading.node if reading else "",
                              elapsed_s=reading.elapsed_s if reading else None,
                              started_at=reading.started_at if reading else None,
                              ended_at=reading.ended_at if reading else None, exit_code=exit_code, error=error,
                              log_tail=tail)


def _active(state: str) -> bool:
    return state in WAITING_STATES or state in RUNNING_STATES


def sync(ws: Workspace, settings: SlurmSettings | None = None) -> None:
    """Submit queued jobs and bring the state of submitted ones up to date from Slurm.

    Also cancels in Slurm the jobs llmtui has finished meanwhile (a dependent failed because its
    dependency did), so nothing waits there forever. Safe to call from several processes at once.
    """
    settings = settings or load_worker_settings(ws).slurm
    if not settings.enabled:
        if not ws.queue_db.exists():
            return
        with JobStore(ws) as store:
            if not store.slurm_jobs(WAITING_STATES + RUNNING_STATES):
                return  # a workspace that runs its jobs locally: nothing to ask Slurm
    with _Lock(ws), JobStore(ws) as store:
        if settings.enabled:
            submit_queued(ws, store, settings)
        tracked = store.slurm_jobs(WAITING_STATES + RUNNING_STATES)  # in id order: dependencies first
        ids = [job.slurm_job_id for job in tracked if job.slurm_job_id]
        readings = read_squeue(ids)
        readings.update(read_sacct([slurm_id for slurm_id in ids if slurm_id not in readings]))
        for job in tracked:
            if not job.finished:
                _record(ws, store, job, readings.get(job.slurm_job_id or ""))
        # Jobs llmtui has finished that Slurm still holds (a dependent failed because its dependency did,
        # a cancel): end them there too, so nothing waits forever.
        for job in store.get_many(job.id for job in tracked).values():
            reading = readings.get(job.slurm_job_id or "")
            if job.finished and reading is not None and _active(reading.state):
                slurm_command("scancel", job.slurm_job_id or "", check=False)
                store.record_slurm(job.id, status=job.status, slurm_state="CANCELLED", reason=reading.reason)
            elif job.finished and reading is None and _active(job.slurm_state):
                store.record_slurm(job.id, status=job.status, slurm_state="GONE")


def cancel(ws: Workspace, job_id: int, *, wait_s: float = 30.0) -> str:
    """Cancel a Slurm job (``scancel``) and return its status once Slurm has ended it (or after ``wait_s``)."""
    with JobStore(ws) as store:
        job = store.require(job_id)
        outcome = store.request_cancel(job_id)
        if job.slurm_job_id:
            result = slurm_command("scancel", job.slurm_job_id, check=False)
            if result.returncode != 0 and not any(gone in result.stderr for gone in (
                    "already completing or completed", "Invalid job id")):  # ended meanwhile: nothing to stop
                raise SlurmError(f"scancel {job.slurm_job_id} failed: {result.stderr.strip()}")
        if outcome == JobStatus.CANCELLED:
            return JobStatus.CANCELLED
        deadline = time.monotonic() + wait_s
        while True:
            sync(ws)
            status = store.require(job_id).status
            if status != JobStatus.RUNNING or time.monotonic() > deadline:
                return status
            time.sleep(0.5)
