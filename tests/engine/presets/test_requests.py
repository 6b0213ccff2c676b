"""The typed job requests: one owner of each setting's default, rule, flag, preset key and argv."""

from __future__ import annotations

import pytest

from engine.presets.config import load_preset_text
from engine.presets.requests import AUTO, EvalRequest, QuantizeRequest, default_bits
from engine.workspace import Workspace
from tui.cli.main import build_parser


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_llmtui_eval_and_queue_add_eval_read_the_same_flags_into_the_same_request():
    flags = ["--datasets", "boolq,arc", "--limit", "7", "--batch-size", "16", "--backend", "hf", "--threads", "2",
             "--report-to", "tensorboard", "--force"]
    direct = EvalRequest.from_flags(parse("eval", "m", *flags))
    queued = EvalRequest.from_flags(parse("queue", "add", "eval", "m", *flags))
    assert direct == queued == EvalRequest(datasets=["boolq", "arc"], limit=7, batch_size=16, backend="hf", threads=2,
                                           report_to=["tensorboard"], force=True)
    # The argv a queued job runs is read back into the same request by the job process's parser.
    assert EvalRequest.from_flags(parse("eval", "m", *direct.argv())) == direct
    assert EvalRequest().argv() == []  # defaults are left to the job process


def test_auto_has_one_spelling_everywhere():
    for command in (["eval", "m"], ["queue", "add", "eval", "m"]):
        assert EvalRequest.from_flags(parse(*command)).batch_size == AUTO
        assert EvalRequest.from_flags(parse(*command, "--batch-size", "auto")).batch_size == AUTO
        with pytest.raises(SystemExit) as refused:
            parse(*command, "--batch-size", "0")
        assert refused.value.code == 2
    config = load_preset_text("[eval]\nbatch_size = 0\n")  # a preset saved before: read as the one spelling
    assert config.eval.batch_size == AUTO and config.eval.request().batch_size == AUTO
    assert 'batch_size = "auto"' in config.to_toml()
    assert load_preset_text('[eval]\nbatch_size = "auto"\n').eval.batch_size == AUTO
    assert load_preset_text("[eval]\nbatch_size = 4\n").eval.batch_size == 4


def test_number_flags_say_what_is_wrong_with_their_own_words(capsys):
    with pytest.raises(SystemExit):
        parse("eval", "m", "--threads", "-1")
    error = capsys.readouterr().err
    assert "argument --threads: -1 is below the minimum 0" in error and "all items" not in error
    with pytest.raises(SystemExit):
        parse("queue", "add", "eval", "m", "--limit", "lots")
    assert "'lots' is not a whole number" in capsys.readouterr().err


def test_default_bits_are_chosen_per_method_in_one_place(tmp_path):
    """Bug: ``queue add quantize --method int8`` was refused ("INT8 supports bits 8") while ``llmtui quantize``
    took it: the queue's parser and the preset defaulted bits to 4 for every method."""
    from engine.jobs.enqueue import enqueue_quantize
    from engine.presets.naming import ptq_output_name, ptq_spec
    from fake_gpus import FakeInventory

    assert [default_bits(m) for m in ("GPTQ", "AWQ", "HQQ", "INT8", "NF4")] == [4, 4, 4, 8, 4]
    for command in (["quantize", "m"], ["queue", "add", "quantize", "m"]):
        request = QuantizeRequest.from_flags(parse(*command, "--method", "int8"))
        assert request.problems() == [] and request.resolved_bits() == 8
    ws = Workspace(tmp_path)
    ws.models_dir.mkdir(parents=True)
    (ws.models_dir / "src").mkdir()
    request = QuantizeRequest.from_flags(parse("queue", "add", "quantize", "src", "--method", "int8"))
    job = enqueue_quantize(ws, "src", request, inventory=FakeInventory([]))  # NVML cannot exist here
    assert job.command[job.command.index("--bits") + 1] == "8"
    assert job.target == ptq_output_name("src", ptq_spec("INT8", 8))
    per_channel = QuantizeRequest(method="GPTQ", group_size=0).argv()  # 0 is a value, not "unset"
    assert per_channel[per_channel.index("--group-size") + 1] == "0"
    step = load_preset_text('[[ptq]]\nmethod = "INT8"\n').ptq[0]  # a preset step without bits, likewise
    assert step.resolved_bits() == 8
    with pytest.raises(Exception, match="GPTQ supports bits 2, 3, 4, 8, not 5"):
        load_preset_text('[[ptq]]\nmethod = "GPTQ"\nbits = 5\n')
