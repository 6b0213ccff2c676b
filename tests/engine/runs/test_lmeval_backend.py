"""engine.runs.lmeval_backend: the ``llmtui`` lm-eval model class against lm-eval's own ``hf`` backend, in real
lm-eval runs on local task YAMLs built from ../shared/datasets (BoolQ and ARC as multiple-choice loglikelihood
tasks, OpenMath as generate_until with a regex filter), on full, adapter and HQQ folders."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.lmeval_tasks import write_task_folder

pytest.importorskip("lm_eval")
TASKS = ["llmtui_boolq", "llmtui_arc", "llmtui_openmath"]
LIMIT = 6


@pytest.fixture(scope="module")
def lm_ws(demo_template, shared_datasets, tmp_path_factory):
    """A demo workspace with the three tasks in Datasets/lm-eval-tasks/ and an lm-eval TaskManager for them."""
    from engine.runs.lmeval_run import load_tasks, tasks_folder
    from engine.workspace import Workspace

    root = tmp_path_factory.mktemp("lmeval") / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    ws = Workspace(root)
    write_task_folder(tasks_folder(ws), shared_datasets, rows=LIMIT)
    return ws, load_tasks(ws, TASKS)


def _evaluate(ws, manager, lm, tasks=TASKS):
    import lm_eval

    from engine.runs.lmeval_run import in_tasks_folder

    with in_tasks_folder(ws):
        return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=1, limit=LIMIT, log_samples=True,
                                       task_manager=manager, bootstrap_iters=0)


def _assert_same_samples(ours: dict, theirs: dict) -> None:
    """Per sample: the same doc, the same generated text, loglikelihoods within 1e-4 and the same is-greedy flags;
    and the same task metrics."""
    for task in TASKS:
        mine, hf = ours["samples"][task], theirs["samples"][task]
        assert [s["doc_id"] for s in mine] == [s["doc_id"] for s in hf] and len(mine) == LIMIT
        for a, b in zip(mine, hf):
            assert a["doc_hash"] == b["doc_hash"]
            if task == "llmtui_openmath":  # the regex filter's answer
                assert a["filtered_resps"] == b["filtered_resps"]
            for (ra,), (rb,) in zip(a["resps"], b["resps"]):
                if isinstance(ra, str):
                    assert ra == rb, f"{task} doc {a['doc_id']}: {ra!r} != {rb!r}"
                else:
                    assert abs(float(ra[0]) - float(rb[0])) <= 1e-4 and ra[1] == rb[1], (task, a["doc_id"], ra, rb)
        metrics = {k: v for k, v in ours["results"][task].items() if "stderr" not in k}
        assert metrics == {k: v for k, v in theirs["results"][task].items() if "stderr" not in k}


def _spy_shared_contexts(monkeypatch) -> list[int]:
    """Record how many shared-context groups the KV-cache path scored (it must carry ARC's multi-token answers)."""
    from engine.runs.lmeval_backend import LlmtuiLM

    scored: list[int] = []
    original = LlmtuiLM._score_shared

    def spy(self, requests, groups):
        scored.append(len(groups))
        return original(self, requests, groups)

    monkeypatch.setattr(LlmtuiLM, "_score_shared", spy)
    return scored


@pytest.mark.slow
def test_llmtui_matches_hf_per_sample_on_a_full_folder(lm_ws, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from engine.runs.lmeval_backend import LlmtuiLM

    ws, manager = lm_ws
    model = str(ws.model_dir("tiny-qwen3"))
    theirs = _evaluate(ws, manager, HFLM(pretrained=model, device="cpu", dtype="float32", batch_size=4))
    scored = _spy_shared_contexts(monkeypatch)
    ours = _evaluate(ws, manager, LlmtuiLM(pretrained=model, device="cpu", batch_size=4))
    _assert_same_samples(ours, theirs)
    assert sum(scored) >= LIMIT  # every ARC item's context computed once for its choices
    answers = [s["resps"][0][0] for s in ours["samples"]["llmtui_openmath"]]
    assert all("\n\n" not in a and "Question:" not in a for a in answers)
    assert any(a.strip() for a in answers)


@pytest.mark.slow
def test_adapter_folder_gives_the_answers_hf_gives_with_peft(lm_ws, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from engine.runs.lmeval_backend import LlmtuiLM

    ws, manager = lm_ws
    adapter = _make_adapter(ws, "lm-lora", zero_b=False)
    base = str(ws.model_dir("tiny-qwen3"))
    theirs = _evaluate(ws, manager, HFLM(pretrained=base, peft=str(adapter), device="cpu", dtype="float32",
                                         batch_size=4))
    without = _evaluate(ws, manager, HFLM(pretrained=base, device="cpu", dtype="float32", batch_size=4),
                        tasks=["llmtui_arc"])
    ours = _evaluate(ws, manager, LlmtuiLM(pretrained=str(adapter), device="cpu", batch_size=4))
    _assert_same_samples(ours, theirs)
    # the adapter was applied: ARC's loglikelihoods are not the base model's
    assert any(abs(a["resps"][0][0][0] - b["resps"][0][0][0]) > 1e-3
               for a, b in zip(ours["samples"]["llmtui_arc"], without["samples"]["llmtui_arc"]))


@pytest.mark.slow
def test_hqq_folder_runs_where_hf_cannot(lm_ws):
    from lm_eval.models.huggingface import HFLM

    from engine.runs.lmeval_backend import LlmtuiLM
    from engine.runs.quantize import quantize_model

    ws, manager = lm_ws
    out = Path(quantize_model(ws, "tiny-qwen3", "hqq", out_name="tiny-qwen3-hqq")["output_dir"])
    with pytest.raises(Exception):  # noqa: B017 - whatever lm-eval's loader raises on a folder it cannot read
        HFLM(pretrained=str(out), device="cpu", dtype="float32", batch_size=4)
    ours = _evaluate(ws, manager, LlmtuiLM(pretrained=str(out), device="cpu", batch_size=4))
    for task in TASKS:
        assert len(ours["samples"][task]) == LIMIT
        values = [v for k, v in ours["results"][task].items() if "," in k and "stderr" not in k]
        assert values and all(math.isfinite(float(v)) for v in values)
    lls = [r[0][0] for s in ours["samples"]["llmtui_arc"] for r in s["resps"]]
    assert all(math.isfinite(x) and x < 0 for x in lls)


# ------------------------------------------------------------------------------------------ the job


def _make_adapter(ws, name: str, *, zero_b: bool) -> Path:
    """A LoRA adapter on the tiny model: B all zero (PEFT's initialisation: a no-op) or random (it changes things)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = ws.model_dir("tiny-qwen3")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=zero_b))
    if zero_b:
        assert all(float(p.detach().abs().max()) == 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    out = ws.models_dir / name
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


@pytest.mark.slow
def test_the_adapter_check_stops_a_no_op_adapter_and_records_a_real_ones_effect(lm_ws):
    from engine.results.lmeval import read_results_file, results_files
    from engine.runs.evaluate import EvalOptions
    from engine.runs.lmeval_run import AdapterUnchanged, run_lm_eval

    ws, manager = lm_ws
    options = EvalOptions(lm_eval_tasks=["llmtui_boolq"], limit=2, device="cpu")
    noop = _make_adapter(ws, "noop-lora", zero_b=True)
    with pytest.raises(AdapterUnchanged, match=r"the adapter changed nothing: noop-lora's logits equal its parent "
                                               r"tiny-qwen3's on 4 prompts"):
        run_lm_eval(ws, noop.name, options, manager=manager)
    assert not (ws.lm_eval_dir / "noop-lora").exists()
    forced = run_lm_eval(ws, noop.name, EvalOptions(lm_eval_tasks=["llmtui_boolq"], limit=2, device="cpu",
                                                    force_unchanged_adapter=True), manager=manager)
    assert forced["results"]["llmtui"]["adapter_effect"]["changed"] is False

    real = _make_adapter(ws, "real-lora", zero_b=False)
    run = run_lm_eval(ws, real.name, options, manager=manager)
    effect = run["results"]["llmtui"]["adapter_effect"]
    assert effect["changed"] is True and effect["max_abs_logit_diff"] > 1e-3 and effect["parent"] == "tiny-qwen3"
    # lm-eval's own files, where engine.results.lmeval reads them, with the effect in the results file
    [results_path] = results_files(ws.lm_eval_dir / "real-lora")
    saved = json.loads(results_path.read_text())
    assert saved["llmtui"]["adapter_effect"]["changed"] is True and saved["config"]["model"] == "llmtui"
    record = read_results_file(results_path)
    assert record.name == "real-lora" and record.error is None
    dataset = record.datasets["lm-eval:llmtui_boolq"]
    assert dataset.total_samples == 2 and dataset.samples_path is not None and "acc" in dataset.metrics
    assert sorted(p.name for p in ws.lm_eval_dir.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_a_trained_fine_tune_passes_the_adapter_check(trained_boolq_model, tmp_path):
    from engine.runs.lmeval_run import adapter_effect
    from engine.runs.loading import load_for_inference
    from engine.workspace import Workspace

    root, name = trained_boolq_model
    ws = Workspace(root)
    loaded = load_for_inference(ws.model_dir(name), device="cpu")
    effect = adapter_effect(ws, ws.model_dir(name), loaded, "cpu")
    assert effect["parent"] == "tiny-qwen3" and effect["changed"] is True and effect["mean_kl"] > 0


def test_a_task_whose_data_is_missing_fails_before_the_model_loads(lm_ws, monkeypatch):
    from engine.runs.evaluate import EvalOptions
    from engine.runs.lmeval_run import LmEvalError, run_lm_eval, tasks_folder

    ws, _ = lm_ws
    folder = tasks_folder(ws)
    (folder / "broken.yaml").write_text((folder / "llmtui_boolq.yaml").read_text()
                                        .replace("task: llmtui_boolq", "task: llmtui_broken")
                                        .replace("boolq-test.parquet", "gone.parquet"))

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the task's data was checked")

    monkeypatch.setattr("engine.runs.loading.load_for_inference", no_loading)
    try:
        with pytest.raises(LmEvalError, match=r"lm-eval task llmtui_broken: cannot read its dataset parquet "
                                              r"\(.*gone\.parquet.*\).*gone\.parquet"):
            run_lm_eval(ws, "tiny-qwen3", EvalOptions(lm_eval_tasks=["llmtui_broken"]))
    finally:
        (folder / "broken.yaml").unlink()


@pytest.mark.slow  # indexes lm-eval's whole registry (a minute on a busy machine) before saying the name is unknown
def test_an_unknown_task_is_named(lm_ws):
    from engine.runs.lmeval_run import LmEvalError, load_tasks

    with pytest.raises(LmEvalError, match=r"unknown lm-eval task\(s\) no_such_task: neither in lm-eval's registry "
                                          r"nor in .*Datasets/lm-eval-tasks"):
        load_tasks(lm_ws[0], ["no_such_task"])
