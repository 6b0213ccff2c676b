"""engine.presets.lmeval_request: the lm-eval flags of ``llmtui eval`` and ``queue add eval``, the job's argv,
and ``[eval] lm_eval_*`` in presets becoming an eval job of their own."""

from __future__ import annotations

import json
import shlex

import pytest

from engine.jobs.enqueue import enqueue_eval, enqueue_pipeline
from engine.presets.config import ConfigError, config_from_dict
from engine.presets.lmeval_request import LmEvalRequest, LmEvalRequestError
from engine.presets.plan import make_plan
from engine.workspace import Workspace
from tui.cli.main import build_parser


def _eval_args(argv: list[str]):
    return build_parser().parse_args(["eval", "Models/m", *argv])


def test_the_job_argv_parses_back_to_the_same_request():
    request = LmEvalRequest(tasks=["gsm8k", "hellaswag"], num_fewshot=5, apply_chat_template=True,
                            force_unchanged_adapter=True, check_backends=16)
    assert LmEvalRequest.from_cli(_eval_args(request.argv())) == request
    assert LmEvalRequest.from_cli(_eval_args([])) == LmEvalRequest() and LmEvalRequest().argv() == []
    assert LmEvalRequest.from_cli(_eval_args(["--lm-eval", "gsm8k, gsm8k,arc_easy"])).tasks == ["gsm8k", "arc_easy"]


@pytest.mark.parametrize("argv, message", [
    (["--num-fewshot", "3"], "give --lm-eval TASKS"),
    (["--lm-eval", "gsm8k;rm"], "lm-eval task name 'gsm8k;rm' has characters"),
])
def test_bad_requests_are_named(argv, message):
    with pytest.raises(LmEvalRequestError, match=message):
        LmEvalRequest.from_cli(_eval_args(argv))


def test_a_negative_few_shot_count_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exited:
        _eval_args(["--lm-eval", "gsm8k", "--num-fewshot", "-1"])
    assert exited.value.code == 2 and "'-1' must be 0 or more" in capsys.readouterr().err


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws").init()
    (ws.models_dir / "m").mkdir(parents=True)
    (ws.models_dir / "m" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    return ws


def test_queue_add_eval_runs_llmtui_eval_with_the_lm_eval_flags(ws):
    request = LmEvalRequest(tasks=["llmtui_boolq"], num_fewshot=2)
    [job] = enqueue_eval(ws, ["m"], limit=4, lm_eval=request)
    command = job.command if isinstance(job.command, list) else shlex.split(job.command)
    assert command[command.index("eval"):] == ["eval", str(ws.model_dir("m")), "--lm-eval", "llmtui_boolq",
                                               "--num-fewshot", "2", "--limit", "4"]
    assert job.options["lm_eval"] == request.to_dict() and "lm-eval llmtui_boolq, 2-shot" in job.description


def test_a_preset_with_lm_eval_tasks_adds_an_lm_eval_job_per_output(ws):
    preset = {"model": {"base": "Models/m"}, "data": {"dataset": "boolq"},
              "eval": {"after": True, "datasets": ["boolq"], "lm_eval_tasks": ["llmtui_arc", "llmtui_boolq"],
                       "lm_eval_apply_chat_template": True}}
    config = config_from_dict(preset)
    steps = [s for s in make_plan(config, ws).steps if s.kind == "eval"]
    assert [s.options.get("lm_eval", {}).get("tasks") for s in steps] == [None, ["llmtui_arc", "llmtui_boolq"]]
    jobs = enqueue_pipeline(ws, config, "")
    commands = [" ".join(j.command) if isinstance(j.command, list) else j.command for j in jobs if j.kind == "eval"]
    assert "--lm-eval" not in commands[0]
    assert "--lm-eval llmtui_arc,llmtui_boolq --apply-chat-template" in commands[1]
    with pytest.raises(ConfigError, match="eval.lm_eval_tasks: lm-eval task name 'a b' has characters"):
        config_from_dict({**preset, "eval": {"lm_eval_tasks": ["a b"]}})
