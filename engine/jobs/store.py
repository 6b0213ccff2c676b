"""The persistent job queue: a SQLite database in ``.llmtui/queue.db`` (WAL, one transaction per change) (any process).

A job is a frozen request: its kind, the preset TOML text and options taken at enqueue time, and the
exact argv to run (stored as a JSON list; ``{job_dir}`` in an argument stands for the job's folder
``.llmtui/jobs/{id}``, :mod:`engine.jobs.job_folder`). Statuses (:class:`~engine.jobs.job_folder.JobStatus`):
``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled`` | ``interrupted``; a queued job whose dependency ends badly becomes ``failed`` with the reason. Ids are never
reused, so job folders never collide. ``executor`` says who runs a job: ``local`` (the worker) or
``slurm`` (:mod:`engine.jobs.slurm`, which records the Slurm job id, node, state, pending reason and
elapsed time here).

A :class:`JobStore` holds one SQLite connection: use one store per thread.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from engine.jobs.job_folder import (CANCELLING, FINISHED, JOB_DIR_PLACEHOLDER, RETRYABLE, STATUSES, JobStatus,
                                    relative_job_files)
from engine.workspace import Workspace

KINDS = ("train", "quantize", "eval")
EXECUTORS = ("local", "slurm")
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    preset TEXT,
    options TEXT NOT NULL DEFAULT '{}',
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    gpus_requested INTEGER NOT NULL DEFAULT 0,
    gpus_assigned TEXT NOT NULL DEFAULT '[]',
    pid INTEGER,
    pid_created REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    exit_code INTEGER,
    error TEXT NOT NULL DEFAULT '',
    log_tail TEXT NOT NULL DEFAULT '',
    log_path TEXT NOT NULL DEFAULT '',
    events_path TEXT NOT NULL DEFAULT '',
    retry_of INTEGER,
    cancel_requested_at REAL,
    failed_dependency INTEGER,
    executor TEXT NOT NULL DEFAULT 'local',
    slurm_job_id TEXT,
    node TEXT NOT NULL DEFAULT '',
    slurm_state TEXT NOT NULL DEFAULT '',
    pending_reason TEXT NOT NULL DEFAULT '',
    elapsed_s REAL,
    max_rss_bytes INTEGER
);
CREATE TABLE IF NOT EXISTS job_deps (
    job_id INTEGER NOT NULL,
    depends_on INTEGER NOT NULL,
    PRIMARY KEY (job_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_by_target ON jobs(target);
CREATE INDEX IF NOT EXISTS deps_by_dependency ON job_deps(depends_on);
"""
#: Columns added after schema version 1, added to older ``queue.db`` files when they are opened.
_ADDED_COLUMNS = {
    "executor": "TEXT NOT NULL DEFAULT 'local'", "slurm_job_id": "TEXT", "node": "TEXT NOT NULL DEFAULT ''",
    "slurm_state": "TEXT NOT NULL DEFAULT ''", "pending_reason": "TEXT NOT NULL DEFAULT ''", "elapsed_s": "REAL",
    "max_rss_bytes": "INTEGER",
}


class JobError(ValueError):
    """A queue request that cannot be done (unknown job, wrong state, bad request)."""


@dataclass
class JobRequest:
    """What to enqueue. ``after`` names existing job ids; ``after_steps`` indexes earlier requests of
    the same :meth:`JobStore.enqueue_many` call (for pipelines)."""

    kind: str
    command: list[str]
    target: str = ""
    description: str = ""
    preset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    gpus: int = 0
    after: tuple[int, ...] = ()
    after_steps: tuple[int, ...] = ()


@dataclass
class Job:
    """One row of the queue, as plain data (paths are relative to the workspace root)."""

    id: int
    kind: str
    target: str
    description: str
    status: JobStatus
    command: list[str]
    preset: str | None
    options: dict[str, Any]
    depends_on: list[int]
    gpus_requested: int
    gpus_assigned: list[int]
    pid: int | None
    pid_created: float | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    error: str
    log_tail: str
    log_path: str
    events_path: str
    retry_of: int | None
    cancel_requested_at: float | None
    failed_dependency: int | None
    executor: str = "local"
    slurm_job_id: str | None = None
    node: str = ""
    slurm_state: str = ""
    pending_reason: str = ""
    elapsed_s: float | None = None
    max_rss_bytes: int | None = None  # peak memory, from Slurm's accounting

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobStore:
    """The queue database of one workspace; every state change is one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, ws: Workspace, *, busy_timeout_s: float = 30.0):
        self.ws = ws
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------------------------ plumbing

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.ws.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite3.connect(self.ws.queue_db, timeout=self._busy_timeout_ms / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                present = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
                for column, declaration in _ADDED_COLUMNS.items():
                    if column not in present:  # a queue.db from before the column existed
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {declaration}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "JobStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self):
        return _Transaction(self.conn)

    def data_version(self) -> int:
        """Changes whenever another connection commits (cheap: no disk read); for the worker's polling."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    # ------------------------------------------------------------------------------------ reading

    def _jobs(self, where: str = "", params: Iterable[Any] = (), order: str = "id") -> list[Job]:
        rows = self.conn.execute(f"SELECT * FROM jobs {where} ORDER BY {order}", tuple(params)).fetchall()
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        deps: dict[int, list[int]] = {}
        if len(ids) <= 500:
            marks = ",".join("?" * len(ids))
            dep_rows = self.conn.execute(f"SELECT job_id, depends_on FROM job_deps WHERE job_id IN ({marks})", ids)
        else:
            dep_rows = self.conn.execute("SELECT job_id, depends_on FROM job_deps")
        for job_id, dep in dep_rows:
            deps.setdefault(job_id, []).append(dep)
        return [self._job(row, sorted(deps.get(row["id"], []))) for row in rows]

    def _job(self, row: sqlite3.Row, depends_on: list[int]) -> Job:
        command = json.loads(row["command"])
        if JOB_DIR_PLACEHOLDER in row["command"]:
            job_dir = str(self.ws.job_dir(row["id"]))
            command = [arg.replace(JOB_DIR_PLACEHOLDER, job_dir) for arg in command]
        return Job(
            id=row["id"], kind=row["kind"], target=row["target"], description=row["description"],
            status=JobStatus(row["status"]), command=command, preset=row["preset"], options=json.loads(row["options"]),
            depends_on=depends_on, gpus_requested=row["gpus_requested"],
            gpus_assigned=json.loads(row["gpus_assigned"]), pid=row["pid"], pid_created=row["pid_created"],
            created_at=row["created_at"], started_at=row["started_at"], ended_at=row["ended_at"],
            exit_code=row["exit_code"], error=row["error"], log_tail=row["log_tail"], log_path=row["log_path"],
            events_path=row["events_path"], retry_of=row["retry_of"],
            cancel_requested_at=row["cancel_requested_at"], failed_dependency=row["failed_dependency"],
            executor=row["executor"], slurm_job_id=row["slurm_job_id"], node=row["node"],
            slurm_state=row["slurm_state"], pending_reason=row["pending_reason"], elapsed_s=row["elapsed_s"],
            max_rss_bytes=row["max_rss_bytes"])

    def get(self, job_id: int) -> Job | None:
        jobs = self._jobs("WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    def require(self, job_id: int) -> Job:
        """The job ``job_id``; :class:`JobError` when there is none."""
        job = self.get(job_id)
        if job is None:
            raise JobError(f"no job #{job_id} in {self.ws.queue_db}")
        return job

    def list(self, limit: int | None = None, statuses: Iterable[str] | None = None) -> list[Job]:
        """Jobs in id order; with ``limit``, the most recent ``limit`` of them."""
        where, params = "", []
        if statuses is not None:
            statuses = list(statuses)
            where = f"WHERE status IN ({','.join('?' * len(statuses))})"
            params = statuses
        if limit is None:
            return self._jobs(where, params)
        return self._jobs(where, params, order=f"id DESC LIMIT {int(limit)}")[::-1]

    def get_many(self, job_ids: Iterable[int]) -> dict[int, Job]:
        """The jobs among ``job_ids`` that exist, by id."""
        ids = sorted(set(job_ids))
        found: dict[int, Job] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update((job.id, job) for job in self._jobs(f"WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def slurm_jobs(self, active_states: Iterable[str]) -> list[Job]:
        """Jobs handed to Slurm that are queued or running here, or whose last Slurm state is active."""
        states = list(active_states)
        return self._jobs(f"WHERE slurm_job_id IS NOT NULL AND (status IN ('{JobStatus.QUEUED}', '{JobStatus.RUNNING}') "
                          f"OR slurm_state IN ({','.join('?' * len(states))}))", states)

    def statuses(self, job_ids: Iterable[int]) -> dict[int, JobStatus]:
        """Status of each of ``job_ids`` that still exists."""
        ids = list(set(job_ids))
        result: dict[int, JobStatus] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows = self.conn.execute(f"SELECT id, status FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
                                     chunk)
            result.update({job_id: JobStatus(status) for job_id, status in rows})
        return result

    def status_by_target(self) -> dict[str, JobStatus]:
        """The status of the latest job for each target model name."""
        rows = self.conn.execute("SELECT target, status FROM jobs WHERE id IN "
                                 "(SELECT MAX(id) FROM jobs WHERE target != '' GROUP BY target)")
        return {target: JobStatus(status) for target, status in rows}

    def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        rows = self.conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {status: count for status, count in rows}

    # ------------------------------------------------------------------------------------ enqueueing

    def enqueue(self, kind: str, command: list[str], **fields: Any) -> Job:
        """Add one job (see :class:`JobRequest` for the fields) and return it."""
        return self.enqueue_many([JobRequest(kind, command, **fields)])[0]

    def enqueue_many(self, requests: list[JobRequest]) -> list[Job]:
        """Add jobs in one transaction: all of them or none."""
        for index, request in enumerate(requests):
            _check_request(request, index)
        now = time.time()
        ids: list[int] = []
        with self._write() as conn:
            known = {row[0] for row in conn.execute(
                f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(wanted))})", wanted)} \
                if (wanted := sorted({d for r in requests for d in r.after})) else set()
            missing = [d for d in wanted if d not in known]
            if missing:
                raise JobError(f"cannot wait for job(s) {', '.join(f'#{d}' for d in missing)}: no such job")
            for request in requests:
                cursor = conn.execute(
                    "INSERT INTO jobs (kind, target, description, preset, options, command, status, gpus_requested,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (request.kind, request.target, request.description, request.preset,
                     json.dumps(request.options), json.dumps(list(request.command)), JobStatus.QUEUED, request.gpus,
                     now))
                job_id = int(cursor.lastrowid)
                conn.execute("UPDATE jobs SET log_path = ?, events_path = ? WHERE id = ?",
                             (*relative_job_files(self.ws.job_dir(job_id).relative_to(self.ws.root)), job_id))
                deps = set(request.after) | {ids[step] for step in request.after_steps}
                conn.executemany("INSERT INTO job_deps (job_id, depends_on) VALUES (?, ?)",
                                 [(job_id, dep) for dep in sorted(deps)])
                ids.append(job_id)
        return self._jobs(f"WHERE id IN ({','.join('?' * len(ids))})", ids)

    # ------------------------------------------------------------------------------------ transitions

    def claim(self, job_id: int, gpus: Iterable[int]) -> bool:
        """Move a queued job to ``running`` with its GPUs; False when it is no longer queued."""
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE jobs SET status = '{JobStatus.RUNNING}', started_at = ?, gpus_assigned = ?, pending_reason = '' "
                                  f"WHERE id = ? AND status = '{JobStatus.QUEUED}'", (time.time(), json.dumps(list(gpus)), job_id))
            return cursor.rowcount == 1

    def set_pending_reason(self, job_id: int, reason: str) -> None:
        """Why a queued local job waits (e.g. its memory estimate fits no GPU now); '' when it no longer does."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET pending_reason = ? WHERE id = ? AND status = 'queued'", (reason, job_id))

    def set_process(self, job_id: int, pid: int, pid_created: float | None) -> None:
        """Record the process that runs a claimed job (``pid_created`` guards against pid reuse)."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET pid = ?, pid_created = ? WHERE id = ?", (pid, pid_created, job_id))

    def finish(self, job_id: int, exit_code: int | None, *, error: str = "", log_tail: str = "") -> str:
        """End a running job: ``cancelled`` if a cancel was asked, else ``done`` (exit 0) or ``failed``.

        Dependents of a job that did not end ``done`` fail with the reason. Returns the final status.
        """
        with self._write() as conn:
            row = conn.execute("SELECT status, cancel_requested_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] != JobStatus.RUNNING:
                return JobStatus(row["status"]) if row else "missing"
            if row["cancel_requested_at"] is not None:
                status, error = JobStatus.CANCELLED, "cancelled by the user"
            elif exit_code == 0:
                status, error = JobStatus.DONE, ""
            else:
                status = JobStatus.FAILED
            conn.execute("UPDATE jobs SET status = ?, exit_code = ?, error = ?, log_tail = ?, ended_at = ? "
                         "WHERE id = ?", (status, exit_code, error, log_tail, time.time(), job_id))
            if status != JobStatus.DONE:
                _fail_dependents(conn, job_id, status)
            return status

    def interrupt(self, job_id: int, reason: str, *, log_tail: str = "") -> None:
        """Mark a running job whose process vanished (worker or machine died) as ``interrupted``."""
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE jobs SET status = '{JobStatus.INTERRUPTED}', error = ?, log_tail = ?, ended_at = ? "
                                  f"WHERE id = ? AND status = '{JobStatus.RUNNING}'", (reason, log_tail, time.time(), job_id))
            if cursor.rowcount:
                _fail_dependents(conn, job_id, JobStatus.INTERRUPTED)

    def fail_waiting(self, job_id: int, reason: str, dependency: int | None = None,
                     executor: str | None = None) -> None:
        """Fail a queued job that can never run: its ``dependency`` ended badly, it needs more GPUs than
        exist, or ``executor`` (recorded) refused it."""
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE jobs SET status = '{JobStatus.FAILED}', error = ?, failed_dependency = ?, "
                                  f"ended_at = ?, executor = COALESCE(?, executor) WHERE id = ? AND status = "
                                  f"'{JobStatus.QUEUED}'", (reason, dependency, time.time(), executor, job_id))
            if cursor.rowcount:
                _fail_dependents(conn, job_id, JobStatus.FAILED)

    def mark_submitted(self, job_id: int, slurm_job_id: str, gpus: int) -> bool:
        """Record that a queued job was handed to Slurm as ``slurm_job_id``; False when it is no longer
        queued or was submitted already (another process got there first)."""
        with self._write() as conn:
            cursor = conn.execute("UPDATE jobs SET executor = 'slurm', slurm_job_id = ?, gpus_requested = ?, "
                                  f"slurm_state = 'PENDING' WHERE id = ? AND status = '{JobStatus.QUEUED}' AND slurm_job_id IS NULL",
                                  (slurm_job_id, gpus, job_id))
            return cursor.rowcount == 1

    def record_slurm(self, job_id: int, *, status: str, slurm_state: str, reason: str = "", node: str = "",
                     elapsed_s: float | None = None, started_at: float | None = None,
                     ended_at: float | None = None, exit_code: int | None = None, error: str = "",
                     log_tail: str = "", max_rss_bytes: int | None = None) -> str:
        """Record what Slurm says of a submitted job: its state, reason, node and elapsed time, and the
        llmtui status they map to. A job already finished here (cancelled by the user, failed because of a
        dependency) keeps its status. Dependents of a job that ends badly fail with the reason. Returns the
        job's status afterwards."""
        if status not in STATUSES:
            raise JobError(f"unknown status {status!r}")
        with self._write() as conn:
            row = conn.execute("SELECT status, cancel_requested_at, started_at FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
            if row is None:
                return "missing"
            conn.execute("UPDATE jobs SET slurm_state = ?, pending_reason = ?, node = COALESCE(NULLIF(?, ''), node), "
                         "elapsed_s = COALESCE(?, elapsed_s), started_at = COALESCE(?, started_at), "
                         "max_rss_bytes = COALESCE(?, max_rss_bytes) WHERE id = ?",
                         (slurm_state, reason, node, elapsed_s, started_at, max_rss_bytes, job_id))
            if row["status"] in FINISHED:
                return JobStatus(row["status"])
            if status not in FINISHED:
                conn.execute("UPDATE jobs SET status = ? WHERE id = ?", (status, job_id))
                return status
            if row["cancel_requested_at"] is not None and status != JobStatus.DONE:
                status, error = JobStatus.CANCELLED, "cancelled by the user"
            conn.execute("UPDATE jobs SET status = ?, exit_code = ?, error = ?, log_tail = ?, ended_at = ? "
                         "WHERE id = ?", (status, exit_code, error, log_tail, ended_at or time.time(), job_id))
            if status != JobStatus.DONE:
                _fail_dependents(conn, job_id, status)
            return status

    def request_cancel(self, job_id: int) -> str:
        """Cancel a job: a queued one at once (returns ``cancelled``); a running one is flagged for the
        worker to stop (returns ``cancelling``). Finished jobs raise :class:`JobError`."""
        with self._write() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobError(f"no job #{job_id}")
            if row["status"] == JobStatus.QUEUED:
                conn.execute(f"UPDATE jobs SET status = '{JobStatus.CANCELLED}', error = 'cancelled by the user', ended_at = ? "
                             "WHERE id = ?", (time.time(), job_id))
                _fail_dependents(conn, job_id, JobStatus.CANCELLED)
                return JobStatus.CANCELLED
            if row["status"] == JobStatus.RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) WHERE id = ?",
                             (time.time(), job_id))
                return CANCELLING
            raise JobError(f"job #{job_id} is already {row['status']}")

    def retry(self, job_id: int) -> list[Job]:
        """Queue a copy of a failed/cancelled/interrupted job, and copies of the dependents that failed
        because of it (wired to the copies). Returns the new jobs, the copy of ``job_id`` first."""
        with self._write() as conn:
            original = self._row(conn, job_id)
            if original["status"] not in RETRYABLE:
                raise JobError(f"job #{job_id} is {original['status']}; only {', '.join(RETRYABLE)} jobs "
                               "can be retried")
            if original["failed_dependency"] is not None:
                root = original
                while root["failed_dependency"] is not None:
                    upstream = conn.execute("SELECT * FROM jobs WHERE id = ?", (root["failed_dependency"],)).fetchone()
                    if upstream is None:
                        break
                    root = upstream
                raise JobError(f"job #{job_id} never ran because job #{original['failed_dependency']} did not "
                               f"finish; retry #{root['id']} instead (its dependents are re-queued with it)")
            copies: dict[int, int] = {}
            pending = [original]
            now = time.time()
            while pending:
                row = pending.pop(0)
                cursor = conn.execute(
                    "INSERT INTO jobs (kind, target, description, preset, options, command, status, gpus_requested,"
                    f" created_at, retry_of) SELECT kind, target, description, preset, options, command, '{JobStatus.QUEUED}',"
                    " gpus_requested, ?, id FROM jobs WHERE id = ?", (now, row["id"]))
                new_id = int(cursor.lastrowid)
                conn.execute("UPDATE jobs SET log_path = ?, events_path = ? WHERE id = ?",
                             (*relative_job_files(self.ws.job_dir(new_id).relative_to(self.ws.root)), new_id))
                copies[row["id"]] = new_id
                deps = [dep for (dep,) in conn.execute("SELECT depends_on FROM job_deps WHERE job_id = ?",
                                                        (row["id"],))]
                conn.executemany("INSERT INTO job_deps (job_id, depends_on) VALUES (?, ?)",
                                 [(new_id, copies.get(dep, dep)) for dep in deps])
                pending.extend(conn.execute(f"SELECT * FROM jobs WHERE failed_dependency = ? AND status = '{JobStatus.FAILED}' "
                                            "ORDER BY id", (row["id"],)).fetchall())
        new_ids = list(copies.values())
        return self._jobs(f"WHERE id IN ({','.join('?' * len(new_ids))})", new_ids)

    def clear_finished(self) -> list[int]:
        """Remove finished jobs (and their folders); running and queued jobs stay. Returns the ids removed."""
        with self._write() as conn:
            ids = [job_id for (job_id,) in conn.execute(
                f"SELECT id FROM jobs WHERE status IN ({','.join('?' * len(FINISHED))})", FINISHED)]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM job_deps WHERE job_id IN ({marks}) OR depends_on IN ({marks})",
                             chunk + chunk)
                conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
        for job_id in ids:
            shutil.rmtree(self.ws.job_dir(job_id), ignore_errors=True)
        return ids

    @staticmethod
    def _row(conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"no job #{job_id}")
        return row


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _check_request(request: JobRequest, index: int) -> None:
    where = f"job request {index}"
    if request.kind not in KINDS:
        raise JobError(f"{where}: kind {request.kind!r} is not one of {', '.join(KINDS)}")
    if not request.command or not all(isinstance(arg, str) for arg in request.command):
        raise JobError(f"{where}: command must be a non-empty list of strings, got {request.command!r}")
    if not isinstance(request.gpus, int) or request.gpus < 0:
        raise JobError(f"{where}: gpus must be a whole number ≥ 0, got {request.gpus!r}")
    bad_steps = [step for step in request.after_steps if not 0 <= step < index]
    if bad_steps:
        raise JobError(f"{where}: after_steps {bad_steps} must name earlier requests of the same batch")


def _fail_dependents(conn: sqlite3.Connection, job_id: int, how: str) -> None:
    """Fail every queued job that waits, directly or not, on ``job_id`` (inside the caller's transaction)."""
    now = time.time()
    pending = [(job_id, how)]
    while pending:
        dep, dep_status = pending.pop()
        rows = conn.execute("SELECT j.id FROM jobs j JOIN job_deps d ON d.job_id = j.id "
                            f"WHERE d.depends_on = ? AND j.status = '{JobStatus.QUEUED}'", (dep,)).fetchall()
        for (waiting,) in rows:
            conn.execute(f"UPDATE jobs SET status = '{JobStatus.FAILED}', error = ?, failed_dependency = ?, ended_at = ? "
                         "WHERE id = ?", (f"not run: dependency #{dep} {dep_status}", dep, now, waiting))
            pending.append((waiting, JobStatus.FAILED))


def list_jobs(ws: Workspace, limit: int | None = None) -> list[Job]:
    """The queue's jobs in id order (the most recent ``limit`` when given)."""
    with JobStore(ws) as store:
        return store.list(limit)


def job_status_by_target(ws: Workspace) -> dict[str, str]:
    """Model name → status of its latest job (for the Models screen's queued/running/failed marks)."""
    if not ws.queue_db.exists():
        return {}
    with JobStore(ws) as store:
        return store.status_by_target()
