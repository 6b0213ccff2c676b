"""The queue on a real two-node Slurm cluster with accounting (fixture ``two_nodes``: two ``slurmd`` in their
own network namespaces, ``slurmdbd`` on a private MariaDB): a training across both nodes, a rank killed,
finished jobs read from ``sacct``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.jobs.slurm import array_job_name, read_sacct, slurm_job_name, sync
from engine.jobs.store import JobStore
from test_slurm import CLI, TINY_TRAIN, cli, events_of, python_job, use_slurm, wait_status

pytestmark = pytest.mark.slow

ENDED = ("done", "failed", "cancelled", "interrupted")
#: Same data, same global batch (4): one process with 4 per step, or one rank per node with 2 each.
NODES_TRAIN = TINY_TRAIN.replace("per_device_train_batch_size = 4", "per_device_train_batch_size = {batch}") + \
    "nodes = {nodes}\nseed = 7\n"
#: Relative difference allowed between the per-step losses of the two-node and the single-process runs (same
#: examples per step; the ranks sum their gradients in another order). Measured: about 1e-7 (float32 rounding).
LOSS_TOLERANCE = 1e-4


def _losses(ws, job) -> list[float]:
    return [event["loss"] for event in events_of(ws, job) if event["kind"] == "train_step"]


def test_training_across_two_nodes_matches_one_process_with_the_same_global_batch(demo_ws, two_nodes):
    ws = demo_ws
    use_slurm(ws)
    (ws.experiments_dir / "two-nodes.toml").write_text(NODES_TRAIN.format(steps=3, gpus=1, batch=2, nodes=2))
    # The same base model under another name, so that the two runs write different model folders.
    shutil.copytree(ws.root / "Models" / "tiny-qwen3", ws.root / "Models" / "tiny-single")
    (ws.experiments_dir / "one-process.toml").write_text(NODES_TRAIN.format(steps=3, gpus=1, batch=4, nodes=1)
                                                         .replace("Models/tiny-qwen3", "Models/tiny-single"))
    multi = json.loads(cli(ws, "queue", "add", "train", "two-nodes", "--json").stdout)[0]["id"]
    single = json.loads(cli(ws, "queue", "add", "train", "one-process", "--json").stdout)[0]["id"]
    script = (ws.job_dir(multi) / "slurm.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "srun --nodes=2 --ntasks-per-node=1" in script
    assert "--nnodes=2" in script and "--nproc_per_node=1" in script
    jobs = {job_id: wait_status(ws, job_id, ENDED, timeout_s=400) for job_id in (multi, single)}
    for job in jobs.values():
        assert job.status == "done", (job.error, job.log_tail)
    # Both nodes ran a rank (accounting's node list), rank 0 wrote one start event for a world of two.
    assert jobs[multi].node == "node[1-2]", jobs[multi].node
    starts = [event for event in events_of(ws, jobs[multi]) if event["kind"] == "start"]
    assert [event["world_size"] for event in starts] == [2]
    # The model folder was written once (by rank 0): one folder, one "done" event.
    assert [event["kind"] for event in events_of(ws, jobs[multi])].count("done") == 1
    assert (ws.root / "Models" / starts[0]["model"] / "training_metadata.json").is_file()
    multi_losses, single_losses = _losses(ws, jobs[multi]), _losses(ws, jobs[single])
    assert len(multi_losses) == len(single_losses) == 3
    for step, (a, b) in enumerate(zip(multi_losses, single_losses), start=1):
        assert abs(a - b) <= LOSS_TOLERANCE * abs(b), (step, multi_losses, single_losses)


def _rank_pid(job_id: int, node: str) -> int | None:
    """The training rank of llmtui job ``job_id`` that Slurm started on ``node`` (from its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(
                errors="replace").split("\0") if "=" in item)
        except OSError:
            continue
        if (environ.get("LLMTUI_JOB_ID") == str(job_id) and environ.get("SLURMD_NODENAME") == node
                and "LOCAL_RANK" in environ):
            return int(entry.name)
    return None


def test_a_rank_killed_on_one_node_fails_the_job_and_its_dependent_naming_the_node(demo_ws, two_nodes):
    ws = demo_ws
    use_slurm(ws)
    (ws.experiments_dir / "long-two-nodes.toml").write_text(NODES_TRAIN.format(steps=5000, gpus=1, batch=2, nodes=2))
    train = json.loads(cli(ws, "queue", "add", "train", "long-two-nodes", "--json").stdout)[0]
    with JobStore(ws) as store:
        dependent = store.enqueue_many([python_job("print('must not run')", after=(train["id"],))])[0]
    job = wait_status(ws, train["id"], ("running",), timeout_s=120)
    deadline = time.monotonic() + 240
    while not any(event["kind"] == "train_step" for event in events_of(ws, job)):
        assert time.monotonic() < deadline, (ws.root / job.log_path).read_text(errors="replace")
        time.sleep(0.5)
    pid = _rank_pid(train["id"], "node2")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    failed = wait_status(ws, train["id"], ENDED, timeout_s=180)
    assert failed.status == "failed", (failed.status, failed.error)
    assert "node2" in failed.error, failed.error
    after = wait_status(ws, dependent.id, ENDED, timeout_s=60)
    assert after.status == "failed" and after.error == f"not run: dependency #{train['id']} failed"
    assert not (ws.job_dir(dependent.id) / "exit_code").exists()
    assert read_sacct([failed.slurm_job_id])[failed.slurm_job_id].state == "FAILED"


def test_finished_jobs_are_read_from_accounting_with_exit_code_peak_memory_and_node(demo_ws, two_nodes):
    ws = demo_ws
    use_slurm(ws)
    with JobStore(ws) as store:
        fails, works = store.enqueue_many([
            python_job("import sys, time; block = bytearray(150 << 20); time.sleep(3); sys.exit(3)"),
            python_job("print('fine')"),
        ])
    sync(ws)
    with JobStore(ws) as store:
        slurm_ids = {job_id: store.require(job_id).slurm_job_id for job_id in (fails.id, works.id)}
    deadline = time.monotonic() + 120
    readings = {}
    while not all(readings.get(i) and readings[i].state in ("FAILED", "COMPLETED") for i in slurm_ids.values()):
        assert time.monotonic() < deadline, readings
        time.sleep(1)
        readings = read_sacct(list(slurm_ids.values()))
    failed = readings[slurm_ids[fails.id]]
    assert failed.from_accounting and failed.exit_code == 3 and failed.node in two_nodes.nodes
    assert failed.max_rss_bytes and failed.max_rss_bytes > 150 << 20, failed
    assert failed.elapsed_s is not None and failed.elapsed_s >= 3 and failed.ended_at > failed.started_at
    # The record is accounting's, not the exit file's: remove the exit files before llmtui looks.
    for job_id in slurm_ids:
        (ws.job_dir(job_id) / "exit_code").unlink()
    sync(ws)
    with JobStore(ws) as store:
        failed_job, done_job = store.require(fails.id), store.require(works.id)
    assert (failed_job.status, failed_job.exit_code, failed_job.slurm_state) == ("failed", 3, "FAILED")
    assert failed_job.max_rss_bytes == failed.max_rss_bytes and failed_job.node == failed.node
    assert failed_job.elapsed_s == failed.elapsed_s
    assert (done_job.status, done_job.exit_code) == ("done", 0)
    shown = cli(ws, "queue", "show", str(fails.id)).stdout
    assert f"FAILED on {failed.node}, exit 3, peak" in shown, shown
    shown = json.loads(cli(ws, "queue", "show", str(fails.id), "--json").stdout)
    assert shown["max_rss_bytes"] == failed.max_rss_bytes and shown["exit_code"] == 3


def _max_at_once(readings) -> int:
    """The most jobs that ran at the same time, from accounting's start and end times (1 s resolution: a job
    that started in the second another ended is counted as after it)."""
    edges = sorted([(r.started_at, 1) for r in readings] + [(r.ended_at, -1) for r in readings])
    running = peak = 0
    for _, change in edges:  # at equal times the -1 sorts first
        running += change
        peak = max(peak, running)
    return peak


def test_untested_evaluations_go_as_one_array_with_at_most_k_at_once(demo_ws, two_nodes):
    ws = demo_ws
    use_slurm(ws, max_parallel=4)
    for index in range(19):  # with tiny-qwen3 itself: 20 untested models
        shutil.copytree(ws.root / "Models" / "tiny-qwen3", ws.root / "Models" / f"tiny-copy-{index:02d}")
    jobs = json.loads(cli(ws, "queue", "add", "eval", "--untested", "--datasets", "boolq", "--limit", "1",
                          "--json").stdout)
    assert len(jobs) == 20 and {job["kind"] for job in jobs} == {"eval"}
    array_id = jobs[0]["slurm_job_id"].split("_")[0]
    # One array; element i is job i (its model).
    assert [job["slurm_job_id"] for job in jobs] == [f"{array_id}_{index}" for index in range(20)]
    script = (ws.job_dir(jobs[0]["id"]) / "slurm-array.sh").read_text()
    assert "#SBATCH --array=0-19%4" in script
    for index, job in enumerate(jobs):
        assert f"{index}) exec /bin/bash {ws.job_dir(job['id']) / 'slurm.sh'}" in script
        assert f"Models/{job['target']}" in (ws.job_dir(job["id"]) / "slurm.sh").read_text()
    shown = two_nodes.run("scontrol", "show", "job", array_id).stdout
    assert "ArrayTaskThrottle=4" in shown, shown
    for job in jobs:
        ended = wait_status(ws, job["id"], ENDED, timeout_s=900)
        assert ended.status == "done", (job["target"], ended.error, ended.log_tail)
        assert json.loads((ws.root / "Testing" / "metrics" / f"{job['target']}.json").read_text())
    readings = read_sacct([job["slurm_job_id"] for job in jobs])
    assert len(readings) == 20 and {r.state for r in readings.values()} == {"COMPLETED"}
    at_once = _max_at_once(readings.values())
    assert 2 <= at_once <= 4, at_once
    assert {r.node for r in readings.values()} <= set(two_nodes.nodes)


def test_cancel_and_retry_one_element_of_an_array(demo_ws, two_nodes, tmp_path):
    ws = demo_ws
    use_slurm(ws, max_parallel=2)
    flag = tmp_path / "may-finish"
    waits = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.5)\nprint('finished')"
    with JobStore(ws) as store:
        first, stuck, last = store.enqueue_many([python_job("print('one')"), python_job(waits),
                                                 python_job("print('three')")])
    sync(ws)
    with JobStore(ws) as store:
        ids = [store.require(job.id).slurm_job_id for job in (first, stuck, last)]
    array_id = ids[0].split("_")[0]
    assert ids == [f"{array_id}_0", f"{array_id}_1", f"{array_id}_2"]
    wait_status(ws, stuck.id, ("running",), timeout_s=120)
    assert cli(ws, "queue", "cancel", str(stuck.id)).returncode == 0
    for job in (first, last):
        assert wait_status(ws, job.id, ENDED, timeout_s=120).status == "done"
    cancelled = wait_status(ws, stuck.id, ENDED, timeout_s=60)
    assert cancelled.status == "cancelled" and cancelled.slurm_state == "CANCELLED"
    flag.touch()
    retried = cli(ws, "queue", "retry", str(stuck.id)).stdout
    assert "submitted to Slurm" in retried
    with JobStore(ws) as store:
        copy = store.list()[-1]
    assert copy.retry_of == stuck.id and "_" not in copy.slurm_job_id  # a job of its own, not an element
    assert wait_status(ws, copy.id, ENDED, timeout_s=120).status == "done"


@pytest.mark.parametrize("shape", ["job", "array"])
def test_a_sync_killed_between_sbatch_and_recording_does_not_submit_twice(demo_ws, two_nodes, shape):
    """Before, the next sync found the job still unsubmitted in the queue and ran sbatch again: two Slurm jobs
    for one llmtui job. Now the sync looks the job up by its Slurm name first and records that one."""
    ws = demo_ws
    use_slurm(ws)
    count = 1 if shape == "job" else 3
    with JobStore(ws) as store:
        jobs = store.enqueue_many([python_job(f"print('ran once {index}')") for index in range(count)])
    pause = "after-sbatch"
    syncer = subprocess.Popen(
        [sys.executable, "-c", "import sys; from engine.jobs.slurm import sync; from engine.workspace import "
         "Workspace; from pathlib import Path; sync(Workspace(Path(sys.argv[1])))", str(ws.root)],
        env=dict(os.environ, LLMTUI_TEST_PAUSE_AT=pause))
    marker = ws.state_dir / f"paused-at-{pause}"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert syncer.poll() is None and time.monotonic() < deadline, "the sync did not reach the pause point"
        time.sleep(0.1)
    os.kill(syncer.pid, signal.SIGKILL)  # sbatch has answered; the answer is not recorded
    syncer.wait()
    with JobStore(ws) as store:
        assert all(store.require(job.id).slurm_job_id is None for job in jobs)
    for job in jobs:
        assert wait_status(ws, job.id, ENDED, timeout_s=120).status == "done"
    with JobStore(ws) as store:
        recorded = [store.require(job.id).slurm_job_id for job in jobs]
    names = [slurm_job_name(ws, job) for job in jobs] if shape == "job" else [array_job_name(ws, jobs)]
    in_slurm = two_nodes.run("squeue", "--noheader", "--states=all", "--array", f"--name={','.join(names)}",
                             "--format=%i").stdout.split()
    assert sorted(in_slurm) == sorted(recorded), (in_slurm, recorded)  # one submission, the one recorded
    for index, job in enumerate(jobs):
        assert (ws.root / job.log_path).read_text().splitlines().count(f"ran once {index}") == 1


def test_a_cluster_without_gpus_gpu_flag_auto_asks_for_none_and_an_explicit_flag_fails_with_the_fix(demo_ws,
                                                                                                     two_nodes):
    from engine.doctor.check import ERROR, OK
    from engine.doctor.facts import Facts
    from engine.doctor.slurm import check_slurm

    ws = demo_ws
    # The default gpu_flag ("auto"): the partition has no GPU resources (sinfo %G), so jobs ask for none.
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    (ws.state_dir / "worker.toml").write_text("[slurm]\nenabled = true\n")
    facts = Facts(ws, None, None)
    [check] = check_slurm(facts)
    assert check.status == OK and "partition debug has no GPUs" in check.detail, check
    with JobStore(ws) as store:
        job = store.enqueue_many([python_job("print('on a CPU')")])[0]
    sync(ws)
    assert not [line for line in (ws.job_dir(job.id) / "slurm.sh").read_text().splitlines()
                if line.startswith("#SBATCH --gpus")]
    assert wait_status(ws, job.id, ENDED, timeout_s=120).status == "done"
    # An explicit GPU flag on this cluster: sbatch refuses; the job says what to set and that Slurm was tried.
    (ws.state_dir / "worker.toml").write_text('[slurm]\nenabled = true\ngpu_flag = "--gpus-per-node={n}"\n')
    [check] = check_slurm(facts)
    assert check.status == ERROR and "partition debug has no GPUs" in check.detail and 'gpu_flag = ""' in check.fix
    with JobStore(ws) as store:
        job = store.enqueue_many([python_job("print('wants a GPU')")])[0]
    sync(ws)
    with JobStore(ws) as store:
        refused = store.require(job.id)
    assert refused.status == "failed" and refused.executor == "slurm"
    assert "Invalid generic resource" in refused.error and 'set gpu_flag = ""' in refused.error, refused.error


def test_batch_jobs_run_with_the_hub_offline_and_a_model_that_cannot_be_fetched_fails_at_enqueue(
        demo_ws, two_nodes, monkeypatch):
    ws = demo_ws
    use_slurm(ws)
    probe = ("import os, socket\n"
             "print('offline', os.environ.get('HF_HUB_OFFLINE'), os.environ.get('HF_DATASETS_OFFLINE'))\n"
             "try:\n    socket.create_connection(('192.0.2.1', 443), timeout=3)\n"  # TEST-NET-1: never routed
             "except OSError as exc:\n    print('no route:', exc.errno)\n")
    with JobStore(ws) as store:
        job = store.enqueue_many([python_job(probe)])[0]
    sync(ws)
    assert wait_status(ws, job.id, ENDED, timeout_s=120).status == "done"
    lines = (ws.root / job.log_path).read_text().splitlines()
    assert "offline 1 1" in lines
    assert f"no route: {errno.ENETUNREACH}" in lines  # the node's namespace has no route off the bridge
    # Queuing a training from a hub id that is not cached, with the hub unreachable from this machine too
    # (a local port nothing listens on: no traffic leaves): refused now, naming the model and the way out.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(ws.root / "empty-hub-cache"))
    (ws.experiments_dir / "from-hub.toml").write_text(TINY_TRAIN.format(steps=1, gpus=1).replace(
        "Models/tiny-qwen3", "nobody/not-cached-anywhere"))
    result = subprocess.run([*CLI, "-w", str(ws.root), "queue", "add", "train", "from-hub"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "model.base = 'nobody/not-cached-anywhere' is not in the Hugging Face cache and cannot be fetched" \
        in result.stderr and "huggingface-cli download nobody/not-cached-anywhere" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    with JobStore(ws) as store:
        assert len(store.list()) == 1  # nothing queued


async def test_jobs_screen_shows_what_accounting_recorded_at_80x24(tmp_path, two_nodes, tui_app):
    from textual.widgets import Static

    from tui.screens.jobs import JobsScreen
    from tui_workspace import make_workspace, wait_for

    ws = make_workspace(tmp_path / "ws")
    use_slurm(ws)
    with JobStore(ws) as store:
        job = store.enqueue_many([python_job("import sys, time; block = bytearray(80 << 20); time.sleep(3); "
                                             "sys.exit(4)", target="hungry-model")])[0]
    sync(ws)
    with JobStore(ws) as store:
        slurm_id = store.require(job.id).slurm_job_id
    deadline = time.monotonic() + 120
    while not (reading := read_sacct([slurm_id]).get(slurm_id)) or not reading.max_rss_bytes:
        assert time.monotonic() < deadline, reading
        time.sleep(1)
    ended = wait_status(ws, job.id, ENDED, timeout_s=120)
    assert ended.status == "failed" and ended.max_rss_bytes and ended.max_rss_bytes > 80 << 20, ended
    app = tui_app(ws, gpus=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        await wait_for(pilot, lambda: job.id in screen.views, timeout=30, what="the job's row")
        screen.selected_id = job.id
        screen.update_panel()
        title = str(screen.query_one("#job-title", Static).render())
        assert f"FAILED on {ended.node}, exit 4, peak" in " ".join(title.split()), title
