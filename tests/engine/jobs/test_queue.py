"""The job queue and worker with real processes: detached workers, kill -9, concurrent enqueues, cancel.

Jobs here run trivial commands (``python -c``/``sh -c``) enqueued through the engine API; the job
store accepts any argv, so no model is needed to exercise the queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from engine.jobs.store import JobError, JobStore
from engine.jobs.control import cancel_job
from engine.jobs.process import process_alive
from engine.jobs.worker import ensure_worker, worker_pid
from engine.workspace import Workspace
from tui.cli.main import main as cli_main
from waiting import wait_for

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def all_finished(store: JobStore) -> bool:
    return all(job.finished for job in store.list())


@pytest.fixture
def ws(queue_ws):
    return queue_ws


def write_settings(ws: Workspace, **values) -> None:
    (ws.state_dir / "worker.toml").write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()))


def test_job_keeps_running_after_the_enqueuing_process_exits(ws, tmp_path):
    marker = tmp_path / "marker.txt"
    job_code = f"import time, pathlib; time.sleep(1.5); pathlib.Path({str(marker)!r}).write_text('finished')"
    enqueuer = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from engine.jobs.store import JobStore
        from engine.jobs.worker import ensure_worker
        from engine.workspace import Workspace
        ws = Workspace(Path({str(ws.root)!r}))
        JobStore(ws).enqueue("train", [sys.executable, "-c", {job_code!r}])
        print(ensure_worker(ws))
    """)
    result = subprocess.run([PY, "-c", enqueuer], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    worker = int(result.stdout.strip())
    with JobStore(ws) as store:
        job = wait_for(lambda: (j := store.get(1)).pid and j, 10, "the job to start")
        # The enqueuer is gone; the worker and the job live on, each leading its own session.
        assert process_alive(job.pid, job.pid_created)
        assert os.getsid(worker) == worker and os.getsid(job.pid) == job.pid
        assert os.getsid(worker) != os.getsid(0)
        wait_for(lambda: store.get(1).finished, 20, "the job to finish")
        assert store.get(1).status == "done" and store.get(1).exit_code == 0
    assert marker.read_text() == "finished"


def test_kill_9_of_the_worker_loses_no_job(ws, tmp_path):
    write_settings(ws, max_parallel=3)
    with JobStore(ws) as store:
        doomed = store.enqueue("train", py("import time; time.sleep(120)"))  # its process dies with the "reboot"
        quiet = store.enqueue("train", py("import time; time.sleep(0.5)"))  # ends while no worker runs
        living = store.enqueue("train", py("import sys, time; time.sleep(6); print('bye'); sys.exit(5)"))
        rest = [store.enqueue("eval", py(f"print('job {i}')")) for i in range(3)]
        waiting_on_doomed = store.enqueue("eval", py("print('never')"), after=(doomed.id,))
        total = len(store.list())

        worker = ensure_worker(ws)
        wait_for(lambda: all(store.get(j.id).pid for j in (doomed, quiet, living)), 15, "three jobs to start")
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: worker_pid(ws) is None, 5, "the lock to be released")
        doomed_pid = store.get(doomed.id).pid
        os.killpg(doomed_pid, signal.SIGKILL)  # as if the machine had rebooted under this job
        wait_for(lambda: not process_alive(doomed_pid, store.get(doomed.id).pid_created), 5, "the job to die")
        wait_for(lambda: (ws.job_dir(quiet.id) / "exit_code").exists(), 10, "the short job to end")
        assert process_alive(store.get(living.id).pid, store.get(living.id).pid_created)

        ensure_worker(ws)
        wait_for(lambda: all_finished(store), 30, "the queue to drain")
        jobs = {job.id: job for job in store.list()}
    assert len(jobs) == total
    assert jobs[doomed.id].status == "interrupted" and "process was gone" in jobs[doomed.id].error
    assert jobs[quiet.id].status == "done" and jobs[quiet.id].exit_code == 0
    # Adopted by the new worker while it still ran: its real exit code is still recorded.
    assert jobs[living.id].status == "failed" and jobs[living.id].exit_code == 5
    assert "bye" in jobs[living.id].log_tail
    assert all(jobs[j.id].status == "done" for j in rest)
    assert jobs[waiting_on_doomed.id].status == "failed"
    assert jobs[waiting_on_doomed.id].error == f"not run: dependency #{doomed.id} interrupted"


def test_two_processes_enqueue_200_jobs_each_and_each_runs_once(ws, tmp_path):
    write_settings(ws, max_parallel=6)
    ran = tmp_path / "ran.txt"
    ensure_worker(ws)
    enqueuer = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from engine.jobs.store import JobStore
        from engine.workspace import Workspace
        start_at = float(sys.argv[1])
        store = JobStore(Workspace(Path({str(ws.root)!r})))
        store.conn  # open (and create) the database before the race starts
        time.sleep(max(0.0, start_at - time.time()))
        ids = [store.enqueue("eval", ["/bin/sh", "-c", 'echo "$LLMTUI_JOB_ID" >> {ran}']).id for _ in range(200)]
        print(" ".join(map(str, ids)))
    """)
    start_at = str(time.time() + 1.5)
    procs = [subprocess.Popen([PY, "-c", enqueuer, start_at], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    returned = [int(i) for out, _ in outputs for i in out.split()]
    assert len(returned) == 400 and len(set(returned)) == 400
    with JobStore(ws) as store:
        wait_for(lambda: all_finished(store), 120, "400 jobs to run", interval=0.25)
        jobs = store.list()
    assert sorted(job.id for job in jobs) == sorted(returned)
    assert all(job.status == "done" for job in jobs)
    runs = [int(line) for line in ran.read_text().split()]
    assert sorted(runs) == sorted(returned)  # every job ran, and none twice


def test_a_failing_job_records_its_exit_code_and_log_tail_and_the_queue_goes_on(ws):
    with JobStore(ws) as store:
        bad = store.enqueue("train", py("""
            for i in range(30):
                print(f"step {i}")
            raise ValueError("loss became NaN at step 29")
        """))
        good = store.enqueue("eval", py("print('still running jobs')"))
        ensure_worker(ws)
        wait_for(lambda: all_finished(store), 20, "both jobs")
        bad, good = store.get(bad.id), store.get(good.id)
    assert bad.status == "failed" and bad.exit_code == 1
    assert bad.error == "exit code 1: ValueError: loss became NaN at step 29"
    tail = bad.log_tail.splitlines()
    assert tail[-1] == "ValueError: loss became NaN at step 29"
    assert "step 29" in tail and "step 0" not in tail  # the last lines, not the whole log
    assert good.status == "done"


def test_an_error_event_gives_the_summary(ws):
    code = """
        import json, os, sys, time
        with open(os.environ["LLMTUI_EVENTS"], "a") as f:
            f.write(json.dumps({"t": time.time(), "kind": "error", "message": "CUDA out of memory"}) + "\\n")
        print("traceback noise")
        sys.exit(2)
    """
    with JobStore(ws) as store:
        job = store.enqueue("train", py(code))
        ensure_worker(ws)
        wait_for(lambda: store.get(job.id).finished, 20, "the job")
        assert store.get(job.id).error == "exit code 2: CUDA out of memory"


def test_cancel_ends_the_whole_process_tree(ws, tmp_path):
    write_settings(ws, cancel_grace_s=1.0)
    pids_file = tmp_path / "pids.json"
    # The job starts a child that ignores SIGTERM, which starts a grandchild; all must end.
    grandchild = "import time; time.sleep(300)"
    child = (f"import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}]); print(p.pid, flush=True); time.sleep(300)")
    job_code = f"""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {child!r}], stdout=subprocess.PIPE, text=True)
        grandchild = int(child.stdout.readline())
        open({str(pids_file)!r}, "w").write(json.dumps([child.pid, grandchild]))
        time.sleep(300)
    """
    with JobStore(ws) as store:
        job = store.enqueue("train", py(job_code))
        after = store.enqueue("eval", py("print('x')"), after=(job.id,))
        ensure_worker(ws)
        wait_for(lambda: pids_file.exists() and pids_file.read_text(), 20, "the job's children to start")
        leader = store.get(job.id).pid
        tree = [psutil.Process(pid) for pid in [leader, *json.loads(pids_file.read_text())]]
        assert len(tree) == 3 and all(p.is_running() for p in tree)

        assert cancel_job(ws, job.id) == "cancelled"
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree), 10,
                 "every process of the job to end")
        done = store.get(job.id)
        assert done.status == "cancelled" and done.error == "cancelled by the user"
        assert store.get(after.id).status == "failed"
        assert store.get(after.id).error == f"not run: dependency #{job.id} cancelled"
        with pytest.raises(JobError, match="already cancelled"):
            store.request_cancel(job.id)


def test_cancel_escalates_to_sigkill_after_the_grace_period(ws):
    write_settings(ws, cancel_grace_s=1.0)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('READY'.lower(), flush=True); time.sleep(300)"
    with JobStore(ws) as store:
        job = store.enqueue("train", py(stubborn))
        ensure_worker(ws)
        wait_for(lambda: "ready" in (ws.root / job.log_path).read_text(errors="replace")
                 if (ws.root / job.log_path).exists() else False, 15, "the job to start")
        started = time.monotonic()
        assert cancel_job(ws, job.id) == "cancelled"
        assert time.monotonic() - started >= 1.0  # it ignored SIGTERM for the whole grace period
        done = store.get(job.id)
        assert done.exit_code == -signal.SIGKILL and not process_alive(done.pid, done.pid_created)


def test_cancel_without_a_worker_ends_the_job_itself(ws):
    with JobStore(ws) as store:
        job = store.enqueue("train", py("import time; time.sleep(300)"))
        queued = store.enqueue("train", py("print('x')"), after=(job.id,))
        worker = ensure_worker(ws)
        wait_for(lambda: store.get(job.id).pid, 15, "the job to start")
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: worker_pid(ws) is None, 5, "the worker to die")
        pid, created = store.get(job.id).pid, store.get(job.id).pid_created
        assert cancel_job(ws, job.id) == "cancelled"
        assert not process_alive(pid, created)
        assert store.get(queued.id).status == "failed"


def test_retry_requeues_a_copy_and_the_dependents_that_failed_with_it(ws):
    with JobStore(ws) as store:
        first = store.enqueue("train", py("import sys; sys.exit(1)"))
        second = store.enqueue("quantize", py("print('q')"), after=(first.id,))
        third = store.enqueue("eval", py("print('e')"), after=(second.id,))
        ensure_worker(ws)
        wait_for(lambda: all_finished(store), 20, "the first round")
        assert [store.get(j.id).status for j in (first, second, third)] == ["failed"] * 3
        with pytest.raises(JobError, match=f"retry #{first.id} instead"):
            store.retry(third.id)
        copies = store.retry(first.id)
        assert [c.retry_of for c in copies] == [first.id, second.id, third.id]
        assert copies[1].depends_on == [copies[0].id] and copies[2].depends_on == [copies[1].id]
        assert copies[0].command == first.command
        with pytest.raises(JobError, match="only failed, cancelled, interrupted"):
            store.retry(copies[0].id)


def test_cli_list_show_logs_clear(ws, capsys):
    with JobStore(ws) as store:
        ok = store.enqueue("eval", py("print('hello from the job')"), target="m1")
        bad = store.enqueue("eval", py("import sys; sys.exit(4)"), target="m2")
        ensure_worker(ws)
        wait_for(lambda: all_finished(store), 20, "two jobs")
    root = str(ws.root)
    assert cli_main(["-w", root, "queue", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(j["id"], j["status"], j["exit_code"]) for j in listed] == [(ok.id, "done", 0), (bad.id, "failed", 4)]
    assert cli_main(["-w", root, "queue", "logs", str(ok.id)]) == 0
    assert "hello from the job" in capsys.readouterr().out
    assert cli_main(["-w", root, "queue", "show", str(bad.id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["error"] == "exit code 4"
    from engine.jobs.store import job_status_by_target, list_jobs

    assert job_status_by_target(ws) == {"m1": "done", "m2": "failed"}
    assert [j.id for j in list_jobs(ws, limit=1)] == [bad.id]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["-w", root, "queue", "cancel", str(ok.id)])
    assert exit_info.value.code == 2 and "already done" in capsys.readouterr().err
    assert cli_main(["-w", root, "queue", "clear", "--finished"]) == 0
    assert list_jobs(ws) == [] and not ws.job_dir(ok.id).exists()
    with pytest.raises(SystemExit):
        cli_main(["-w", root, "queue", "show", str(ok.id)])
    assert f"no job #{ok.id}" in capsys.readouterr().err


def test_cli_add_rejects_bad_requests_before_queueing(ws, capsys):
    (ws.models_dir / "tiny-openmath_SFT_LoRa8_NoQuant").mkdir()
    root = str(ws.root)
    cases = [
        (["quantize", "missing-model", "--method", "gptq"], "no model 'missing-model'"),
        (["quantize", "tiny-openmath_SFT_LoRa8_NoQuant", "--method", "gptq", "--bits", "5"],
         "--bits: GPTQ supports bits 2, 3, 4, 8, not 5"),
        (["quantize", "../../etc", "--method", "gptq"], "is not a model name"),
        (["eval", "tiny-openmath_SFT_LoRa8_NoQuant", "--datasets", "boolq,nope"], "unknown test set 'nope'"),
        (["eval"], "name the models to evaluate, or give --untested"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["-w", root, "queue", "add", *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err.replace("\n", " ")
    assert JobStore(ws).list() == []
    assert worker_pid(ws) is None


def test_untested_models_are_the_folders_without_metrics(ws):
    from engine.jobs.enqueue import untested_model_names

    for name in ("a-model", "b-model", ".tmp-c-model"):
        (ws.models_dir / name).mkdir()
        (ws.models_dir / name / "config.json").write_text("{}")
    (ws.metrics_dir / "b-model.json").write_text(json.dumps({"test-boolq.parquet": {"accuracy": 0.5}}))
    assert untested_model_names(ws) == ["a-model"]


PRESET = """
[model]
base = "Qwen/Qwen3-0.6B"
[data]
dataset = "openmath"
[peft]
method = "LoRa"
r = 8
[[ptq]]
method = "GPTQ"
bits = 4
group_size = 128
[[ptq]]
method = "HQQ"
bits = 4
group_size = 64
[eval]
after = true
datasets = ["boolq"]
limit = 20
"""


def test_a_pipeline_preset_becomes_dependent_jobs_with_the_preset_frozen(ws):
    from engine.presets.config import load_preset_text
    from engine.jobs.enqueue import enqueue_pipeline
    from fake_gpus import FakeInventory

    config = load_preset_text(PRESET)
    # NVML cannot exist here: a fake inventory of 2 GPUs stands in for the machine.
    jobs = enqueue_pipeline(ws, config, PRESET, overrides=["train.max_steps=5"], inventory=FakeInventory.with_gpus(2))
    train, gptq, hqq, *evals = jobs
    assert [j.kind for j in jobs] == ["train", "quantize", "quantize", "eval", "eval", "eval"]
    assert train.preset == PRESET and all(j.preset == PRESET for j in jobs)
    assert train.command[train.command.index("train") + 1] == str(ws.job_dir(train.id) / "preset.toml")
    assert train.command[-2:] == ["--set", "train.max_steps=5"]
    assert gptq.depends_on == [train.id] and hqq.depends_on == [train.id]
    assert [e.depends_on for e in evals] == [[train.id], [gptq.id], [hqq.id]]
    assert [e.target for e in evals] == [train.target, gptq.target, hqq.target]
    assert "--method" in gptq.command and gptq.command[gptq.command.index("--bits") + 1] == "4"
    assert gptq.options["source"] == train.target and gptq.gpus_requested == 1
    assert evals[0].command[-4:] == ["--datasets", "boolq", "--limit", "20"]
    with JobStore(ws) as store:
        store.claim(train.id, [0])
        store.finish(train.id, 1, error="exit code 1: boom")
        statuses = store.statuses(j.id for j in jobs)
        errors = {j.id: j.error for j in store.list()}
    assert [statuses[j.id] for j in jobs] == ["failed"] * 6
    assert errors[gptq.id] == f"not run: dependency #{train.id} failed"
    assert errors[evals[1].id] == f"not run: dependency #{gptq.id} failed"


def test_a_pipeline_on_a_cpu_only_machine_asks_for_no_gpu(ws):
    from engine.presets.config import load_preset_text
    from engine.jobs.enqueue import enqueue_pipeline
    from fake_gpus import FakeInventory

    jobs = enqueue_pipeline(ws, load_preset_text(PRESET), PRESET, inventory=FakeInventory([]))
    assert all(j.gpus_requested == 0 for j in jobs)
    too_many = load_preset_text(PRESET, overrides=["train.gpus=3"])
    with pytest.raises(JobError, match="train.gpus = 3 but this machine has 2 GPU"):
        enqueue_pipeline(ws, too_many, PRESET, inventory=FakeInventory.with_gpus(2))


def test_the_job_reads_the_preset_frozen_at_enqueue_time(ws, tmp_path):
    preset = ws.experiments_dir / "p.toml"
    preset.write_text("[train]\nmax_steps = 1\n")
    with JobStore(ws) as store:
        job = store.enqueue("train", ["/bin/sh", "-c", 'cat "$0"', "{job_dir}/preset.toml"],
                            preset=preset.read_text())
        preset.write_text("[train]\nmax_steps = 999\n")  # edited after queueing: the job must not see it
        ensure_worker(ws)
        wait_for(lambda: store.get(job.id).finished, 20, "the job")
        assert store.get(job.id).status == "done"
    log = (ws.root / store.get(job.id).log_path).read_text()
    assert "max_steps = 1\n" in log and "999" not in log


def test_quantize_and_eval_requests_name_their_outputs_and_wait_for_their_dependencies(ws):
    from engine.jobs.enqueue import enqueue_eval, enqueue_quantize
    from engine.presets.naming import ptq_output_name, ptq_spec
    from engine.presets.requests import EvalRequest, QuantizeRequest
    from fake_gpus import FakeInventory

    source = "tiny-boolq_SFT_LoRa16_NoQuant"
    (ws.models_dir / source).mkdir()
    one_gpu = FakeInventory.with_gpus(1)  # NVML cannot exist here
    job = enqueue_quantize(ws, source, QuantizeRequest(method="gptq", bits=4, group_size=128), inventory=one_gpu)
    assert job.kind == "quantize" and job.gpus_requested == 1
    assert job.target == ptq_output_name(source, ptq_spec("GPTQ", 4, 128)) != source
    assert job.command[job.command.index("quantize") + 1] == str(ws.model_dir(source))
    assert job.command[-2:] == ["--out", job.target]
    # The output does not exist yet: evaluating it is fine when the job waits for the quantization.
    with pytest.raises(JobError, match="no model"):
        enqueue_eval(ws, [job.target], inventory=one_gpu)
    evals = enqueue_eval(ws, [job.target, source], EvalRequest(datasets=["boolq"], limit=5, force=True), after=[job.id],
                         inventory=FakeInventory([]))
    assert [e.depends_on for e in evals] == [[job.id], [job.id]]
    assert [e.gpus_requested for e in evals] == [0, 0]
    assert evals[0].command[-5:] == ["--datasets", "boolq", "--limit", "5", "--force"]
    with pytest.raises(JobError, match="no such job"):
        enqueue_eval(ws, [source], after=[999])


def test_logs_follow_prints_until_the_job_ends(ws, capsys):
    with JobStore(ws) as store:
        job = store.enqueue("eval", py("""
            import time
            for i in range(4):
                print(f"line {i}", flush=True)
                time.sleep(0.3)
        """))
    ensure_worker(ws)
    assert cli_main(["-w", str(ws.root), "queue", "logs", str(job.id), "-f"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("line")] == [f"line {i}" for i in range(4)]
    assert JobStore(ws).get(job.id).status == "done"


def test_worker_cli_start_status_stop(ws, capsys):
    root = str(ws.root)
    assert cli_main(["-w", root, "worker"]) == 0
    pid = worker_pid(ws)
    assert pid and f"worker pid {pid}" in capsys.readouterr().out
    assert cli_main(["-w", root, "worker"]) == 0  # a second start finds the running worker
    assert worker_pid(ws) == pid
    assert cli_main(["-w", root, "worker", "status"]) == 0
    assert cli_main(["-w", root, "worker", "stop"]) == 0
    assert worker_pid(ws) is None and not process_alive(pid, None)
    assert cli_main(["-w", root, "worker", "status"]) == 1
