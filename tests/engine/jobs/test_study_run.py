"""A study's jobs without running them: statuses, queuing only what is missing or failed, dependencies, shared
prerequisites (real queue database; nothing started)."""

from __future__ import annotations

from engine.jobs.store import JobStore
from engine.jobs.study import plan_study, run_study
from engine.presets.study import load_study
from fake_gpus import FakeInventory
from study_files import study_text
from tui_workspace import make_workspace

STUDY = study_text("tiny", '"peft.method" = ["LoRa", "DoRa"]\n'
                   'ptq = [[{ method = "HQQ", bits = 4 }], [{ method = "HQQ", bits = 8 }]]\n')
LORA = "tiny-boolq_SFT_LoRa16_NoQuant"


def _study(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    (ws.model_dir("tiny")).mkdir()
    (ws.model_dir("tiny") / "config.json").write_text('{"model_type": "qwen3"}')
    (ws.experiments_dir / "grid.toml").write_text(STUDY)
    return ws, load_study(ws.experiments_dir / "grid.toml")


def test_run_queues_each_job_once_with_dependencies_and_nothing_the_second_time(tmp_path):
    ws, study = _study(tmp_path)
    inventory = FakeInventory.with_gpus(0)
    plan = plan_study(ws, study, inventory=inventory)
    assert [run.name for run in plan.runs] == [LORA, LORA.replace("LoRa", "DoRa")]  # ptq axis: one training
    assert plan.root == "tiny" and plan.to_dict()["total_jobs"] == 13
    assert {job.status for job in plan.jobs.values()} == {"missing"}
    first = run_study(ws, study, inventory=inventory)
    assert len(first["queued"]) == 13 and first["skipped"] == [] and first["pending"] == 13
    with JobStore(ws) as store:
        jobs = {(j.kind, j.target): j for j in store.list()}
    hqq4 = LORA.replace("NoQuant", "HQQ_w4_g64_headfp16")
    assert jobs[("quantize", hqq4)].depends_on == [jobs[("train", LORA)].id]
    assert jobs[("eval", hqq4)].depends_on == [jobs[("quantize", hqq4)].id]
    assert jobs[("eval", "tiny")].depends_on == []
    second = run_study(ws, study, inventory=inventory)
    assert second["queued"] == [] and sorted(second["skipped"]) == sorted(r.name for r in plan.runs)
    assert second["pending"] == 13


def test_a_failed_job_is_queued_again_and_what_waits_on_it_follows_the_new_one(tmp_path):
    ws, study = _study(tmp_path)
    inventory = FakeInventory.with_gpus(0)
    run_study(ws, study, inventory=inventory)
    with JobStore(ws) as store:
        train = next(j for j in store.list() if j.kind == "train" and j.target == LORA)
        assert store.claim(train.id, [])
        store.finish(train.id, 1, error="boom")  # its queued dependents fail with it
    plan = plan_study(ws, study, inventory=inventory)
    statuses = {key: job.status for key, job in plan.jobs.items()}
    assert statuses[f"train:{LORA}"] == "failed" and statuses[f"eval:{LORA}"] == "failed"
    again = run_study(ws, study, inventory=inventory)
    assert len(again["queued"]) == 6  # the training, its 2 PTQ outputs and their 3 evaluations
    with JobStore(ws) as store:
        latest = {(j.kind, j.target): j for j in store.list()}
    assert latest[("train", LORA)].id in again["queued"]
    assert latest[("eval", LORA)].depends_on == [latest[("train", LORA)].id]


def test_a_training_done_with_other_settings_counts_as_done_and_says_what_changed(tmp_path):
    import json

    ws, study = _study(tmp_path)
    run = study.runs[0]
    preset = run.config.to_dict()
    preset["train"]["learning_rate"] = 0.5
    ws.model_dir(run.name).mkdir()
    (ws.model_dir(run.name) / "training_metadata.json").write_text(json.dumps({"training_parameters": {"preset": preset}}))
    plan = plan_study(ws, study, inventory=FakeInventory.with_gpus(0))
    train = plan.jobs[f"train:{run.name}"]
    assert train.status == "done" and train.stale == [f"train.learning_rate: 0.5 → {run.config.train.learning_rate!r}"]
    assert plan.jobs[f"train:{study.runs[1].name}"].stale == []
