"""Flipped items, the comparability guard and the detectable difference of a comparison, from predictions
files written through the real scorer (engine.results.scoring); expected values computed here from the
outputs given."""

from __future__ import annotations

import json
import math

import pytest

from engine.results.compare import compare
from engine.results.export import comparison_markdown, flips_text
from engine.workspace import Workspace
from metrics_fixtures import PROVENANCE, boxed, write_evaluation
from tui.cli.main import main

BOOLQ = "test-boolq.parquet"
SHA = "a" * 64
PROMPT_FORMAT = PROVENANCE["prompt_format"]


def provenance(**changes) -> dict:
    """The evaluator's provenance record; ``changes`` replace parts (``None`` drops a key)."""
    record = json.loads(json.dumps(PROVENANCE))
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    return record


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws").init()


def write_pair(ws, right_a, right_b, *, prov_a=None, prov_b=None, sha_a=SHA, sha_b=SHA) -> list[bool]:
    golds = [i % 3 == 0 for i in range(len(right_a))]
    prompts = [f"System: answer in a box. User: question number {i} " + "x" * 200 for i in range(len(golds))]
    for name, right, prov, sha in (("base", right_a, prov_a, sha_a), ("tuned", right_b, prov_b, sha_b)):
        outputs = [f"I think {boxed(g if ok else not g)} because" for g, ok in zip(golds, right)]
        write_evaluation(ws, name, {BOOLQ: outputs}, {BOOLQ: golds}, prompts={BOOLQ: prompts},
                         provenance=provenance() if prov is None else prov,
                         dataset_sha256={BOOLQ: sha} if sha else {})
    return golds


RIGHT_A = [True, True, False, True, False, True, True, False, True, True, True, False]
RIGHT_B = [True, False, True, True, False, False, True, True, True, False, True, True]


def test_flips_list_each_direction_with_whole_prompts_and_outputs(ws):
    golds = write_pair(ws, RIGHT_A, RIGHT_B)
    comparison = compare(ws, ["base", "tuned"])
    assert comparison.guard_warnings == [] and comparison.warnings == []
    [flips] = comparison.flips
    expected_a = [i for i, (a, b) in enumerate(zip(RIGHT_A, RIGHT_B)) if a and not b]
    expected_b = [i for i, (a, b) in enumerate(zip(RIGHT_A, RIGHT_B)) if b and not a]
    assert [item.index for item in flips.reference_only] == expected_a == [1, 5, 9]
    assert [item.index for item in flips.model_only] == expected_b == [2, 7, 11]
    item = flips.reference_only[0]
    word = lambda value: "True" if value else "False"  # noqa: E731
    assert item.gold == golds[1] and item.prompt.endswith("x" * 200)
    assert (item.reference.extracted, item.model.extracted) == (word(golds[1]), word(not golds[1]))
    assert item.model.output == f"I think {boxed(not golds[1])} because"
    # The JSON export carries whole prompts.
    data = comparison.to_dict()
    assert len(data["flips"][0]["reference_only"][0]["prompt"]) > 200


def test_flips_text_shortens_and_limits(ws):
    write_pair(ws, RIGHT_A, RIGHT_B)
    text = flips_text(compare(ws, ["base", "tuned"]), limit=2, width=100)
    assert "boolq: base right, tuned wrong: 3 items, first 2 shown" in text
    assert "boolq: tuned right, base wrong: 3 items, first 2 shown" in text
    assert "#1 " in text and "#5 " in text and "#9 " not in text
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "…" in text  # the 200-character prompts are shortened


def test_no_guard_warning_when_everything_matches_and_one_per_difference(ws):
    cases = {
        "prompt format": provenance(prompt_format={**PROMPT_FORMAT, "enable_thinking": True}),
        "decoding": provenance(eval_config={**provenance()["eval_config"], "max_new_tokens": {BOOLQ: 32}}),
        "answer extraction": provenance(extractor_version=2),
        "evaluation backend": provenance(eval_config={**provenance()["eval_config"],
                                                      "backend": {"name": "vllm", "dtype": "float32"}}),
    }
    expected_detail = {"prompt format": "enable_thinking False vs True", "decoding": "max_new_tokens 16 vs 32",
                       "answer extraction": "extractor_version 1 vs 2", "evaluation backend": "name hf vs vllm"}
    for aspect, changed in cases.items():
        write_pair(ws, RIGHT_A, RIGHT_B, prov_b=changed)
        dataset = compare(ws, ["base", "tuned"]).datasets[0]
        assert dataset.guard == {"tuned": [f"{aspect} differs: {expected_detail[aspect]}"]}, aspect
    # The example text of a prompt format and the backend's version/threads are not compared.
    same = provenance(prompt_format={**PROMPT_FORMAT, "example": "other"},
                      eval_config={**provenance()["eval_config"], "backend": {"name": "hf", "version": "9",
                                                                              "dtype": "float32", "threads": 8}})
    write_pair(ws, RIGHT_A, RIGHT_B, prov_b=same)
    assert compare(ws, ["base", "tuned"]).datasets[0].guard == {}


def test_dataset_file_hash_difference_and_legacy_files(ws):
    write_pair(ws, RIGHT_A, RIGHT_B, sha_b="b" * 64)
    [warning] = compare(ws, ["base", "tuned"]).guard_warnings
    assert warning == f"boolq: tuned vs base: dataset file differs: sha256 {'a' * 12}… vs {'b' * 12}…"
    # A legacy file (no provenance at all) compares with "provenance unknown", statistics still computed.
    write_pair(ws, RIGHT_A, RIGHT_B, prov_b={}, sha_b=None)
    comparison = compare(ws, ["base", "tuned"])
    [warning] = comparison.guard_warnings
    assert warning.startswith("boolq: tuned vs base: provenance unknown: tuned's run does not record its "
                              "prompt format, decoding, dataset file, answer extraction, evaluation backend")
    assert comparison.datasets[0].metrics[0].pairs[0].p_value is not None
    assert "⚠ boolq" in comparison_markdown(comparison)


def connor_items(delta: float, psi: float, z_a: float = 1.959963984540054, z_b: float = 0.8416212335729143) -> float:
    return (z_a * math.sqrt(psi) + z_b * math.sqrt(psi - delta ** 2)) ** 2 / delta ** 2


def test_detectable_difference_beside_non_significant_accuracy(ws):
    # 60 items: 6 only base right, 9 only tuned right → p = 0.61, discordance 15/60.
    right_a = [True] * 30 + [True] * 6 + [False] * 9 + [False] * 15
    right_b = [True] * 30 + [False] * 6 + [True] * 9 + [False] * 15
    write_pair(ws, right_a, right_b)
    pair = next(m for m in compare(ws, ["base", "tuned"]).datasets[0].metrics if m.metric == "accuracy").pairs[0]
    assert (pair.b, pair.c, pair.significant) == (6, 9, False)
    # Solve Connor's sample-size formula for delta at n = 60, psi = 0.25 by bisection.
    low, high = 1e-6, 0.25
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if connor_items(mid, 0.25) > 60 else (low, mid)
    assert pair.detectable == pytest.approx(low, abs=1e-6)
    # by hand: 0.5 * (1.95996 * 7.74597 + 0.84162 * sqrt(60 - 3.84146 + 0.70833)) / 60.70833 = 0.17731
    assert pair.detectable == pytest.approx(0.17731, abs=1e-5)
    markdown = comparison_markdown(compare(ws, ["base", "tuned"]))
    assert f"detectable ±{pair.detectable:.3f}" in markdown


def test_significant_difference_has_no_detectable_and_tiny_discordance_says_none(ws):
    right_a = [False] * 10 + [True] * 10
    right_b = [True] * 20
    write_pair(ws, right_a, right_b)
    pair = compare(ws, ["base", "tuned"]).datasets[0].metrics[0].pairs[0]
    assert pair.significant and pair.detectable is None and not pair.undetectable
    right_b = list(right_a)
    right_b[0] = True  # one discordant item in 20: no difference is detectable
    write_pair(ws, right_a, right_b)
    pair = compare(ws, ["base", "tuned"]).datasets[0].metrics[0].pairs[0]
    assert pair.detectable is None and pair.undetectable


def test_cli_flips_strict_and_json(ws, capsys):
    write_pair(ws, RIGHT_A, RIGHT_B, prov_b=provenance(extractor_version=2))
    root = str(ws.root)
    assert main(["-w", root, "compare", "base", "tuned", "--flips", "--limit", "1"]) == 0
    captured = capsys.readouterr()
    assert "answer extraction differs: extractor_version 1 vs 2" in captured.err
    assert "boolq: base right, tuned wrong: 3 items, first 1 shown" in captured.out
    assert "⚠ boolq" in captured.out
    with pytest.raises(SystemExit) as exit_info:
        main(["-w", root, "compare", "base", "tuned", "--strict"])
    assert exit_info.value.code == 2
    assert "not comparable" in capsys.readouterr().err
    assert main(["-w", root, "compare", "base", "tuned", "--json", "--limit", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["warnings"] == ["boolq: tuned vs base: answer extraction differs: extractor_version 1 vs 2"]
    assert [i["index"] for i in data["flips"][0]["reference_only"]] == [1, 5]
    assert data["datasets"][0]["guard"] == {"tuned": ["answer extraction differs: extractor_version 1 vs 2"]}
