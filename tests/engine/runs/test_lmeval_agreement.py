"""engine.runs.lmeval_agreement: ``--check-backends N`` in real lm-eval runs on the demo model — vLLM (its own
environment, one start of ~90 s here) generating the same items, the agreement recorded in the results file
and named by the comparability guard; and, vLLM not configured, a clear warning and nothing recorded as
measured."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.events import EventWriter, read_events
from engine.jobs.settings import VLLM_NOT_CONFIGURED
from engine.results.compare import compare
from engine.results.lmeval import read_results_file
from engine.runs.evaluate import EvalOptions
from engine.workspace import Workspace
from tests.lmeval_tasks import write_task_folder

pytest.importorskip("lm_eval")
TASK = "llmtui_openmath"  # generate_until: vLLM's worker returns tokens, not log-probabilities
ITEMS = 3


@pytest.fixture
def lm_ws(demo_ws: Workspace, shared_datasets) -> Workspace:
    from engine.runs.lmeval_run import tasks_folder

    write_task_folder(tasks_folder(demo_ws), shared_datasets, rows=ITEMS, max_gen_toks=24)
    return demo_ws


def _check_backends(ws: Workspace, tmp_path) -> tuple[dict, list[dict]]:
    """One real lm-eval run with ``--check-backends ITEMS``: (the results file's content, the run's events)."""
    from engine.runs.lmeval_run import run_lm_eval

    events_path = tmp_path / "events.jsonl"
    with EventWriter(events_path) as events:
        run_lm_eval(ws, "tiny-qwen3", EvalOptions(lm_eval_tasks=[TASK], limit=ITEMS, num_fewshot=0,
                                                  check_backends=ITEMS, threads=1), events=events)
    [path] = (ws.lm_eval_dir / "tiny-qwen3").glob("results_*.json")
    return json.loads(path.read_text()), read_events(events_path)


def _guard_beside_an_hf_run(ws: Workspace) -> list[str]:
    """The guard's warnings for the task between the llmtui run and the same output relabelled as lm-eval's
    ``hf`` backend's (a second real run would differ only in that label: the guard compares the backends)."""
    [path] = (ws.lm_eval_dir / "tiny-qwen3").glob("results_*.json")
    other = ws.lm_eval_dir / "tiny-qwen3-hf"
    shutil.copytree(path.parent, other)
    [copy] = other.glob("results_*.json")
    data = json.loads(copy.read_text())
    data["config"]["model"], data["config"]["model_args"] = "hf", {"pretrained": "tiny-qwen3-hf"}
    del data["llmtui"]
    copy.write_text(json.dumps(data))
    dataset = next(d for d in compare(ws, ["tiny-qwen3-hf", "tiny-qwen3"]).datasets if d.name == f"lm-eval:{TASK}")
    return dataset.guard["tiny-qwen3"]


def test_without_vllm_the_run_says_so_and_records_no_agreement(lm_ws, tmp_path, monkeypatch):
    monkeypatch.delenv("LLMTUI_VLLM_PYTHON", raising=False)
    results, events = _check_backends(lm_ws, tmp_path)
    assert results["llmtui"]["backend_agreement"] == {"measured": False, "reason": VLLM_NOT_CONFIGURED}
    assert results["results"][TASK]["exact_match,number"] >= 0  # the run itself completed
    assert results["llmtui"]["threads"]["threads"] == 1 and results["llmtui"]["threads"]["reason"] == "requested"
    [warning] = [e for e in events if e["kind"] == "warning"]
    assert warning["message"] == f"--check-backends: agreement not measured: {VLLM_NOT_CONFIGURED}"
    [path] = (lm_ws.lm_eval_dir / "tiny-qwen3").glob("results_*.json")
    assert read_results_file(path).backend_agreement is None
    guard = _guard_beside_an_hf_run(lm_ws)
    assert guard == ["evaluation backend differs: model hf vs llmtui"]  # no agreement figure


@pytest.mark.slow
def test_vllm_agreement_lands_in_the_results_and_the_guard_names_it(lm_ws, tmp_path, vllm_python, monkeypatch):
    """fp32 on both sides, the same token ids and stop strings: every answer agrees."""
    monkeypatch.setenv("LLMTUI_VLLM_PYTHON", vllm_python)
    results, events = _check_backends(lm_ws, tmp_path)
    agreement = results["llmtui"]["backend_agreement"]
    assert {k: agreement[k] for k in ("measured", "items", "agreeing", "rate", "differing")} == \
        {"measured": True, "items": ITEMS, "agreeing": ITEMS, "rate": 1.0, "differing": []}
    assert agreement["other"]["name"] == "vllm" and agreement["other"]["dtype"] == "float32"
    assert not [e for e in events if e["kind"] == "warning"]
    [path] = (lm_ws.lm_eval_dir / "tiny-qwen3").glob("results_*.json")
    assert read_results_file(path).backend_agreement == agreement
    assert _guard_beside_an_hf_run(lm_ws) == [
        f"evaluation backend differs: model hf vs llmtui (tiny-qwen3's run measured {ITEMS}/{ITEMS} answers "
        "identical on the built-in engine and vllm)"]
