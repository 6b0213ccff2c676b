"""The lm-eval settings of :class:`engine.presets.requests.EvalRequest`: the flags of ``llmtui eval`` and ``queue add
eval``, the job's argv, their rules, and ``[eval] lm_eval_tasks`` in presets becoming an eval job of their own."""

from __future__ import annotations

import json
import shlex

import pytest

from engine.jobs.enqueue import enqueue_eval, enqueue_pipeline
from engine.presets.config import ConfigError, config_from_dict
from engine.presets.plan import make_plan
from engine.presets.requests import EvalRequest
from engine.workspace import Workspace
from tui.cli.main import build_parser


def _eval_args(argv: list[str]):
    return build_parser().parse_args(["eval", "Models/m", *argv])


def test_the_job_argv_parses_back_to_the_same_request():
    request = EvalRequest(lm_eval_tasks=["gsm8k", "hellaswag"], num_fewshot=5, apply_chat_template=True,
                          force_unchanged_adapter=True, check_backends=16, limit=8)
    assert request.argv()[request.argv().index("--lm-eval"):][:2] == ["--lm-eval", "gsm8k,hellaswag"]
    assert EvalRequest.from_flags(_eval_args(request.argv())) == request
    assert EvalRequest.from_flags(_eval_args([])).lm_eval_tasks == []
    assert "--lm-eval" not in EvalRequest().argv() and "--num-fewshot" not in EvalRequest().argv()


@pytest.mark.parametrize("request_, message", [
    (EvalRequest(num_fewshot=3), "num_fewshot, apply_chat_template, force_unchanged_adapter and check_backends "
                                 "apply to lm-eval tasks"),
    (EvalRequest(lm_eval_tasks=["gsm8k"], datasets=["boolq"]), "lm-eval tasks run instead of the built-in test sets"),
])
def test_settings_that_need_each_other_are_named(request_, message):
    [problem] = request_.lm_eval_problems()
    assert problem.where == "eval.lm_eval_tasks" and message in problem.message


def test_bad_flags_exit_2_naming_the_value(capsys):
    for argv, message in ((["--lm-eval", "gsm8k;rm"], "lm-eval task name 'gsm8k;rm' has characters"),
                          (["--lm-eval", "gsm8k", "--num-fewshot", "-2"], "-2 is below the minimum -1")):
        with pytest.raises(SystemExit) as exited:
            _eval_args(argv)
        assert exited.value.code == 2 and message in capsys.readouterr().err


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws").init()
    (ws.models_dir / "m").mkdir(parents=True)
    (ws.models_dir / "m" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    return ws


def _command(job) -> list[str]:
    return job.command if isinstance(job.command, list) else shlex.split(job.command)


def test_queue_add_eval_runs_llmtui_eval_with_the_lm_eval_flags(ws):
    request = EvalRequest(lm_eval_tasks=["llmtui_boolq"], num_fewshot=2, limit=4)
    [job] = enqueue_eval(ws, ["m"], request)
    command = _command(job)
    assert command[command.index("--lm-eval"):command.index("--lm-eval") + 2] == ["--lm-eval", "llmtui_boolq"]
    assert command[command.index("--num-fewshot") + 1] == "2" and command[command.index("--limit") + 1] == "4"
    assert job.options["lm_eval_tasks"] == ["llmtui_boolq"] and "lm-eval llmtui_boolq" in job.description


def test_a_preset_with_lm_eval_tasks_adds_an_lm_eval_job_per_output(ws):
    preset = {"model": {"base": "Models/m"}, "data": {"dataset": "boolq"},
              "eval": {"after": True, "datasets": ["boolq"], "lm_eval_tasks": ["llmtui_arc", "llmtui_boolq"],
                       "apply_chat_template": True}}
    config = config_from_dict(preset)
    steps = [s for s in make_plan(config, ws).steps if s.kind == "eval"]
    assert [(s.options["datasets"], s.options["lm_eval_tasks"]) for s in steps] == [
        (["boolq"], []), ([], ["llmtui_arc", "llmtui_boolq"])]
    commands = [_command(j) for j in enqueue_pipeline(ws, config, "") if j.kind == "eval"]
    assert "--lm-eval" not in commands[0] and "--apply-chat-template" not in commands[0]
    assert commands[1][commands[1].index("--lm-eval") + 1] == "llmtui_arc,llmtui_boolq"
    assert "--apply-chat-template" in commands[1] and "--datasets" not in commands[1]
    with pytest.raises(ConfigError, match="eval.lm_eval_tasks: lm-eval task name 'a b' has characters"):
        config_from_dict({**preset, "eval": {"lm_eval_tasks": ["a b"]}})
