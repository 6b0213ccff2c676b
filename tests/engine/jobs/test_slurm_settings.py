"""``[slurm]`` settings in worker.toml and the batch scripts llmtui writes (no cluster needed)."""

from __future__ import annotations

import pytest

from engine.jobs.settings import WorkerError, load_worker_settings
from engine.jobs.slurm import Reading, Resources, _record, batch_script, parse_readings
from engine.jobs.store import JobRequest, JobStore
from engine.presets.config import ConfigError, load_preset_text
from engine.workspace import Workspace


def settings_of(tmp_path, text: str):
    ws = Workspace(tmp_path)
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    (ws.state_dir / "worker.toml").write_text(text)
    return ws, load_worker_settings(ws)


def test_slurm_table_is_read_and_checked(tmp_path):
    _, settings = settings_of(tmp_path, '[slurm]\nenabled = true\npartition = "gpu"\ntime = "1-00:00:00"\n'
                                        'cpus_per_task = 8\nmem = "64G"\ngpu_flag = "--gres=gpu:{n}"\n'
                                        'sbatch_args = ["--exclusive"]\nsetup = ["source venv/bin/activate"]\n')
    assert settings.slurm.enabled and settings.slurm.partition == "gpu" and settings.slurm.cpus_per_task == 8
    assert settings.slurm.setup == ["source venv/bin/activate"] and settings.max_parallel == 0
    for bad, words in (('time = "soon"', "slurm.time = 'soon' is not a Slurm time limit"),
                       ('gpu_flag = "--gpus"', "must contain {n}"),
                       ("cpus_per_task = -1", "slurm.cpus_per_task = -1 must be a whole number"),
                       ('enabled = "yes"', "slurm.enabled = 'yes' must be true or false"),
                       ("partitions = 1", "unknown key slurm.'partitions'"),
                       ("setup = [1]", "slurm.setup = [1] must be a list of strings")):
        with pytest.raises(WorkerError, match="worker.toml") as error:
            settings_of(tmp_path, f"[slurm]\n{bad}\n")
        assert words in str(error.value)


def test_preset_slurm_time_and_nodes_are_checked():
    config = load_preset_text('[train]\nnodes = 2\nslurm_time = "48:00:00"\n')
    assert config.train.nodes == 2 and config.train.slurm_time == "48:00:00"
    with pytest.raises(ConfigError, match="train.slurm_time: '2 days' is not a Slurm time limit"):
        load_preset_text('[train]\nslurm_time = "2 days"\n')
    with pytest.raises(ConfigError, match="train.nodes"):
        load_preset_text("[train]\nnodes = 0\n")


def test_multi_node_batch_script(tmp_path):
    ws, settings = settings_of(tmp_path, '[slurm]\nenabled = true\npartition = "gpu"\naccount = "lab"\n'
                                         'setup = ["module load cuda"]\nsignal_before_s = 600\n')
    with JobStore(ws) as store:
        job = store.enqueue("train", ["python", "-P", "-m", "tui.cli", "-w", str(ws.root), "train", "p.toml"],
                            preset="[train]\ngpus = 4\nnodes = 2\n")
    import sys

    job.command[0] = sys.executable  # the prefix every job command has (engine.jobs.process.llmtui_command)
    script = batch_script(ws, job, settings.slurm, Resources(gpus=4, nodes=2, processes=4, time="48:00:00"))
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --time=48:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 "#SBATCH --signal=B:USR1@600", "#SBATCH --requeue", "module load cuda",
                 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'):
        assert line in script.splitlines(), line
    run = next(line for line in script.splitlines() if "torch.distributed.run" in line)
    for part in ("srun --nodes=2 --ntasks-per-node=1", "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
                 "--rdzv_endpoint=$head:$port", "--rdzv_id=$SLURM_JOB_ID", "--no-python", "train p.toml"):
        assert part in run, part
    assert script.index("module load cuda") < script.index(run)
    assert "trap 'stop_asked=1; scancel --signal=USR1 \"$SLURM_JOB_ID\"' USR1" in script


def test_a_job_slurm_forgot_is_judged_by_its_exit_file(tmp_path):
    ws = Workspace(tmp_path)
    with JobStore(ws) as store:
        done, failed, lost = store.enqueue_many([JobRequest("eval", ["true"]), JobRequest("eval", ["false"]),
                                                 JobRequest("eval", ["true"])])
        for job, slurm_id in ((done, "11"), (failed, "12"), (lost, "13")):
            assert store.mark_submitted(job.id, slurm_id, 0)
        ws.job_dir(done.id).mkdir(parents=True)
        (ws.job_dir(done.id) / "exit_code").write_text("0\n")
        ws.job_dir(failed.id).mkdir(parents=True)
        (ws.job_dir(failed.id) / "exit_code").write_text("2\n")
        assert _record(ws, store, store.require(done.id), None) == "done"
        assert _record(ws, store, store.require(failed.id), None) == "failed"
        assert _record(ws, store, store.require(lost.id), None) == "interrupted"
        assert "no longer knows the job" in store.require(lost.id).error
        assert store.require(failed.id).error.startswith("exit code 2")


def test_a_queue_db_from_before_slurm_gains_the_slurm_columns(tmp_path):
    import json
    import sqlite3

    ws = Workspace(tmp_path)
    ws.state_dir.mkdir(parents=True)
    conn = sqlite3.connect(ws.queue_db)
    conn.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, target TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '', preset TEXT, options TEXT NOT NULL DEFAULT '{}',
            command TEXT NOT NULL, status TEXT NOT NULL, gpus_requested INTEGER NOT NULL DEFAULT 0,
            gpus_assigned TEXT NOT NULL DEFAULT '[]', pid INTEGER, pid_created REAL, created_at REAL NOT NULL,
            started_at REAL, ended_at REAL, exit_code INTEGER, error TEXT NOT NULL DEFAULT '',
            log_tail TEXT NOT NULL DEFAULT '', log_path TEXT NOT NULL DEFAULT '',
            events_path TEXT NOT NULL DEFAULT '', retry_of INTEGER, cancel_requested_at REAL,
            failed_dependency INTEGER);
        CREATE TABLE job_deps (job_id INTEGER NOT NULL, depends_on INTEGER NOT NULL,
            PRIMARY KEY (job_id, depends_on)) WITHOUT ROWID;
        PRAGMA user_version = 1;
    """)
    conn.execute("INSERT INTO jobs (kind, command, status, created_at, exit_code) VALUES ('eval', ?, 'done', 1.0, 0)",
                 (json.dumps(["true"]),))
    conn.commit()
    conn.close()
    with JobStore(ws) as store:
        old = store.require(1)
        assert (old.status, old.executor, old.slurm_job_id, old.slurm_state, old.elapsed_s) == \
            ("done", "local", None, "", None)
        new = store.enqueue("eval", ["true"])
        assert store.mark_submitted(new.id, "42", 1)
        assert store.require(new.id).slurm_job_id == "42"
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_no_local_worker_runs_a_slurm_workspace(tmp_path):
    from engine.jobs.worker import run_worker

    ws, _ = settings_of(tmp_path, "[slurm]\nenabled = true\n")
    said: list[str] = []
    assert run_worker(ws, say=said.append) == 1
    assert "runs its jobs on Slurm" in said[0]


def test_one_parser_reads_squeue_and_sacct_rows():
    """squeue's ``%i|%T|%r|%N|%M|%S|%e`` and sacct's ``--parsable2`` rows of the same fields, as Slurm prints them."""
    squeue = ("41|RUNNING|None|node1|1-02:03:04|2026-12-02T03:00:00|2026-12-03T03:00:00\n"
              "42|PENDING|Dependency|(null)|0:00|N/A|N/A\n")
    sacct = "43|CANCELLED by 1000|None|node2|65|2026-12-02T03:00:00|2026-12-02T03:01:05\nnot a row\n"
    readings = parse_readings(squeue) | parse_readings(sacct)
    assert set(readings) == {"41", "42", "43"}
    assert readings["41"].state == "RUNNING" and readings["41"].node == "node1"
    assert readings["41"].elapsed_s == ((1 * 24 + 2) * 60 + 3) * 60 + 4
    assert readings["42"] == Reading("PENDING", "Dependency", "", 0.0, None, None)
    assert readings["43"].state == "CANCELLED" and readings["43"].elapsed_s == 65.0
    assert readings["43"].ended_at - readings["43"].started_at == 65.0
