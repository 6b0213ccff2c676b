"""engine.results.metrics_files (the tolerant metrics-file reader, the results table) and engine.results.export for it."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from engine.files import write_json
from engine.results.export import results_csv, results_json, results_latex, results_markdown
from engine.models.resolve import model_name_from
from engine.results.metrics_files import LEGACY_SUMMARY_COLUMNS, load_metrics_file, results_table, scan_results, training_peaks
from engine.workspace import Workspace
from metrics_fixtures import boxed, legacy_boolq_dataset, legacy_metrics, write_evaluation
from tui.cli.main import main

LEGACY_NAME = "Qwen3-8B-openmath_SFT_LoRa256_QLORA_w4_headbf16"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws").init()


@pytest.fixture
def mixed_ws(ws) -> Workspace:
    """Two llmtui-format results (with predictions) and one old-script file."""
    golds = {"test-boolq.parquet": [True, False] * 5, "test-ai2_arc.parquet": list("ABCD") * 2}
    write_evaluation(ws, "tiny-base", {
        "test-boolq.parquet": [boxed(g if i % 3 else not g) for i, g in enumerate(golds["test-boolq.parquet"])],
        "test-ai2_arc.parquet": [boxed("A")] * 8,
    }, golds, peak_gb=(3.0, 2.5))
    write_evaluation(ws, "tiny-sft", {
        "test-boolq.parquet": [boxed(g) for g in golds["test-boolq.parquet"]],
        "test-ai2_arc.parquet": [boxed(g) for g in golds["test-ai2_arc.parquet"]],
    }, golds, peak_gb=(2.0, 1.5))
    write_json(ws.metrics_dir / f"Models__{LEGACY_NAME}.json", legacy_metrics())
    write_json(ws.model_dir("tiny-sft") / "training_metadata.json",
               {"hardware_info": {"vram_peaks": {"overall": {"peak_reserved_gb": 5.5, "peak_allocated_gb": 4.25}}}})
    write_json(ws.model_dir(LEGACY_NAME) / "training_metadata.json",
               {"hardware_info": {"vram_peaks": {"overall_max_reserved_gb": 11.863,
                                                 "overall_max_allocated_gb": 7.608, "per_gpu": []}}})
    return ws


# --- reading old-script files ----------------------------------------------------------------------

def test_legacy_file_reads_like_ours(tmp_path):
    path = write_json(tmp_path / f"Models__{LEGACY_NAME}.json", legacy_metrics())
    record = load_metrics_file(path)
    assert record.error is None and record.warnings == []
    assert record.name == LEGACY_NAME  # from "Models\\Qwen3-8B-…", a Windows path
    assert record.source == "legacy"
    assert record.overall_accuracy == pytest.approx(0.5)  # 50.0 %
    assert record.latency_mean_s == pytest.approx(2.9713)
    assert (record.eval_peak_vram_reserved_gb, record.eval_peak_vram_allocated_gb) == (7.262, 6.023)
    assert record.quant_tag == "QLORA_w4_headbf16"
    assert set(record.datasets) == {"test-ai2_arc.parquet", "test-OpenMathInstruct-2.parquet",
                                    "test-squad_v2.parquet"}  # boolq is absent
    arc = record.dataset("ai2_arc")
    assert arc.kind == "mcq4" and arc.total_samples == 50 and arc.correct == 44
    assert arc.metrics == {"accuracy": pytest.approx(0.88), "macro_f1": 0.8803}
    assert arc.format_success_rate == pytest.approx(1.0)
    assert set(arc.details) == {"per_class", "confusion_matrix"}
    math = record.dataset("test-OpenMathInstruct-2.parquet")
    assert math.metrics == {"accuracy": pytest.approx(0.30), "avg_abs_diff": 116.962302}
    squad = record.dataset("squad_v2")
    assert squad.metrics == {"accuracy": pytest.approx(0.32), "EM": pytest.approx(0.32), "F1": pytest.approx(0.3973),
                             "HasAns_EM": pytest.approx(0.5517), "HasAns_F1": pytest.approx(0.6849),
                             "NoAns_accuracy": None, "AvNA": pytest.approx(0.56)}
    assert squad.format_success_rate is None and squad.tokens_mean is None  # nulls stay missing


def test_legacy_boolq_keys_are_renamed_to_ours(tmp_path):
    data = legacy_metrics()
    data["datasets"]["test-boolq.parquet"] = legacy_boolq_dataset()
    record = load_metrics_file(write_json(tmp_path / "m.json", data))
    boolq = record.dataset("boolq")
    assert boolq.metrics == {"accuracy": 0.5, "f1": 0.0, "macro_f1": 0.3333, "balanced_accuracy": 0.5, "mcc": 0.0}
    assert boolq.details == {"confusion_matrix": {"TP": 0, "TN": 1, "FP": 0, "FN": 1}}
    assert boolq.latency_mean_s == pytest.approx((0.294 + 0.3003) / 2)  # no mean: from per_prompt


def test_llmtui_file_keeps_its_fractions(mixed_ws):
    record = load_metrics_file(mixed_ws.metrics_file("tiny-sft"))
    assert record.source == "llmtui" and record.llmtui_version == "0.1.0" and record.warnings == []
    boolq = record.dataset("boolq")
    assert boolq.metrics["accuracy"] == 1.0 and boolq.metrics["mcc"] == 1.0
    assert boolq.format_success_rate == 1.0
    assert list(boolq.metrics)[0] == "accuracy"


@pytest.mark.parametrize(("raw", "name"), [
    ("Models\\Qwen3-8B-openmath_SFT_LoRa256_NoQuant", "Qwen3-8B-openmath_SFT_LoRa256_NoQuant"),
    ("C:\\Users\\me\\LLM-Training\\Models\\m1\\", "m1"),
    ("../Models/Qwen3-0.6B-base", "Qwen3-0.6B-base"),
    ("Qwen/Qwen3-0.6B", "Qwen3-0.6B"),
    ("plain-name", "plain-name"),
    ("", None), ("..", None), (None, None), (42, None),
])
def test_model_name_from_paths_and_hub_ids(raw, name):
    assert model_name_from(raw) == name


BAD_CONTENTS = [
    "", "{", "[]", "null", '"text"', "42", "\x00\x01\x02",
    json.dumps({"model_name": 5, "datasets": []}),
    json.dumps({"summary": "x", "hardware": [1], "quantization": 3, "datasets": {"test-boolq.parquet": 7}}),
    json.dumps({"datasets": {"test-boolq.parquet": {"accuracy": "high", "metrics": [1, 2], "total_samples": -3,
                                                    "latency_seconds": "slow", "tokens_generated": 5}}}),
    json.dumps({"datasets": {"test-x.parquet": {"type": None, "metrics": {"accuracy": True, "f1": "0.5",
                                                                          "mcc": {"a": 1}},
                                                "correct": 2.5}}}),
    '{"summary": {"overall_accuracy": NaN, "latency_seconds": {"per_prompt": ["a", null, Infinity]}}}',
    json.dumps({"model_name": "x", "evaluated_at": 12345, "llmtui_version": 1}),
    "[" * 100_000,  # nesting deeper than the JSON parser's recursion limit
]


@pytest.mark.parametrize("content", BAD_CONTENTS)
def test_nothing_in_a_file_crashes_the_reader(tmp_path, content):
    path = tmp_path / "odd-model.json"
    path.write_text(content, encoding="utf-8")
    record = load_metrics_file(path)
    assert record.name  # always something to show
    assert record.error or record.warnings or record.datasets == {}
    ws = Workspace(tmp_path)
    (tmp_path / "Testing" / "metrics").mkdir(parents=True)
    path.rename(ws.metrics_dir / path.name)
    table = results_table(ws)  # and the table is still built
    assert [c.key for c in table.columns][:len(LEGACY_SUMMARY_COLUMNS)] == list(LEGACY_SUMMARY_COLUMNS)


def test_warnings_and_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(BAD_CONTENTS[9], encoding="utf-8")
    record = load_metrics_file(bad)
    assert any("bad.json: datasets.test-boolq.parquet.accuracy should be a number, found 'high'" == w
               for w in record.warnings), record.warnings
    assert any("total_samples should be a whole number" in w for w in record.warnings)
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    assert load_metrics_file(broken).error.startswith("broken.json: cannot read as JSON")
    assert load_metrics_file(tmp_path / "missing.json").error.startswith("missing.json: cannot read")


def test_scan_sorts_skips_hidden_and_keeps_same_named_files_apart(ws):
    write_json(ws.metrics_dir / "b-model.json", {"model_name": "b-model", "datasets": {}})
    write_json(ws.metrics_dir / "A-model.json", {"model_name": "A-model", "datasets": {}})
    write_json(ws.metrics_dir / ".hidden.json", {"model_name": "hidden"})
    write_json(ws.metrics_dir / "Models__b-model.json", {"model_name": "Models\\b-model", "datasets": {}})
    records = scan_results(ws)
    assert [r.name for r in records] == ["A-model", "b-model", "Models__b-model"]
    assert any("names the same model as" in w for w in records[2].warnings)
    assert scan_results(Workspace(ws.root / "nowhere")) == []


def test_training_peaks_from_both_metadata_shapes(mixed_ws):
    assert training_peaks(mixed_ws, "tiny-sft") == (5.5, 4.25)
    assert training_peaks(mixed_ws, LEGACY_NAME) == (11.863, 7.608)
    assert training_peaks(mixed_ws, "tiny-base") == (None, None)  # no metadata
    (mixed_ws.model_dir("tiny-base")).mkdir(parents=True)
    (mixed_ws.model_dir("tiny-base") / "training_metadata.json").write_text("[1,", encoding="utf-8")
    assert training_peaks(mixed_ws, "tiny-base") == (None, None)  # unreadable
    assert training_peaks(mixed_ws, "../../etc") == (None, None)  # never escapes the workspace


# --- the results table -------------------------------------------------------------------------------

def test_table_starts_with_the_legacy_columns_then_the_rest(mixed_ws):
    table = results_table(mixed_ws)
    keys = [c.key for c in table.columns]
    assert keys[:len(LEGACY_SUMMARY_COLUMNS)] == list(LEGACY_SUMMARY_COLUMNS)
    rest = keys[len(LEGACY_SUMMARY_COLUMNS):]
    for key in ("quant_tag", "overall_accuracy", "ai2_arc__accuracy", "boolq__accuracy", "boolq__mcc",
                "squad_v2__EM", "OpenMathInstruct-2__accuracy"):
        assert key in rest
    assert "squad_v2__NoAns_accuracy" not in keys  # no file has a value for it
    rows = {row["model"]: row for row in table.rows}
    assert set(rows) == {"tiny-base", "tiny-sft", LEGACY_NAME}
    legacy = rows[LEGACY_NAME]
    assert legacy["squad_v2__F1"] == pytest.approx(0.3973) and legacy["boolq__accuracy"] is None
    assert (legacy["train_peak_vram_reserved_gb"], legacy["train_peak_vram_allocated_gb"]) == (11.863, 7.608)
    assert rows["tiny-sft"]["train_peak_vram_allocated_gb"] == 4.25
    assert rows["tiny-base"]["ai2_arc__accuracy"] == 0.25 and rows["tiny-sft"]["ai2_arc__accuracy"] == 1.0


def test_table_filters(mixed_ws):
    table = results_table(mixed_ws, models=["tiny-*"], datasets=["arc"])
    assert [row["model"] for row in table.rows] == ["tiny-base", "tiny-sft"]
    keys = [c.key for c in table.columns]
    assert "ai2_arc__macro_f1" in keys and "ai2_arc__accuracy" in keys
    assert not any(k.startswith(("boolq__", "squad_v2__", "OpenMathInstruct-2__")) for k in keys)
    narrow = results_table(mixed_ws, columns=["*__accuracy"])
    # the built-in test sets in THE task order (engine.data.tasks.DISPLAY_ORDER), as the Results screen shows them
    assert [c.key for c in narrow.columns] == ["model", "ai2_arc__accuracy", "boolq__accuracy", "squad_v2__accuracy",
                                               "OpenMathInstruct-2__accuracy"]
    missing = results_table(mixed_ws, models=["nobody"], datasets=["nothing"])
    assert missing.rows == []
    assert "no results match the model 'nobody'" in missing.warnings
    assert "no results for the dataset 'nothing'" in missing.warnings


# --- exports -------------------------------------------------------------------------------------------

def test_csv_export_round_trips(mixed_ws):
    table = results_table(mixed_ws)
    parsed = list(csv.reader(io.StringIO(results_csv(table))))
    assert parsed[0] == [c.key for c in table.columns]
    assert parsed[0][:11] == ["model", "train_peak_vram_reserved_gb", "train_peak_vram_allocated_gb",
                              "eval_peak_vram_reserved_gb", "eval_peak_vram_allocated_gb", "ai2_arc__macro_f1",
                              "ai2_arc__latency_mean_s", "OpenMathInstruct-2__avg_abs_diff",
                              "OpenMathInstruct-2__latency_mean_s", "squad_v2__F1", "squad_v2__latency_mean_s"]
    by_model = {line[0]: dict(zip(parsed[0], line)) for line in parsed[1:]}
    assert float(by_model[LEGACY_NAME]["OpenMathInstruct-2__avg_abs_diff"]) == 116.962302
    assert by_model[LEGACY_NAME]["boolq__accuracy"] == ""  # missing stays empty
    assert float(by_model["tiny-base"]["boolq__mcc"]) == table.rows[1 if table.rows[0]["model"] != "tiny-base"
                                                                    else 0]["boolq__mcc"]


def test_json_export(mixed_ws):
    table = results_table(mixed_ws)
    data = json.loads(results_json(table))
    assert data["columns"] == [c.key for c in table.columns]
    assert len(data["rows"]) == 3 and data["errors"] == []


def test_percentages_become_fractions_without_float_noise(tmp_path):
    metrics = legacy_metrics()
    metrics["datasets"]["test-squad_v2.parquet"]["metrics"]["F1"] = 24.54  # 24.54 / 100 = 0.24539999999999998
    metrics["datasets"]["test-ai2_arc.parquet"]["accuracy"] = 28.999999999999996
    ws = Workspace(tmp_path / "ws").init()
    write_json(ws.metrics_dir / f"{LEGACY_NAME}.json", metrics)
    text = results_json(results_table(ws))
    assert '"squad_v2__F1": 0.2454,' in text and '"ai2_arc__accuracy": 0.29,' in text


def test_markdown_export_renders_as_a_github_table(mixed_ws):
    table = results_table(mixed_ws, datasets=["arc"])
    lines = results_markdown(table).strip().splitlines()
    assert len(lines) == 2 + len(table.rows)
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert set(lines[1].replace("|", "").split()) <= {":---", "---:"}
    assert all(line.count(" | ") == len(table.columns) - 1 for line in lines)
    column = [c.key for c in table.columns].index("ai2_arc__accuracy")
    cells = {line.split(" | ")[0][2:]: line.split(" | ")[column] for line in lines[2:]}
    assert cells == {"tiny-base": "0.2500", "tiny-sft": "**1.0000**", LEGACY_NAME: "0.8800"}


def test_latex_export_is_booktabs_with_the_best_in_bold(mixed_ws):
    table = results_table(mixed_ws, datasets=["arc"])
    latex = results_latex(table)
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table}"):
        assert command in latex
    rows = {line.split(" & ")[0]: line.split(" & ") for line in latex.splitlines() if line.endswith(r"\\")
            and " & " in line}
    keys = [c.key for c in table.columns]
    sft, base = rows["tiny-sft"], rows["tiny-base"]
    legacy = rows[LEGACY_NAME.replace("_", r"\_")]
    accuracy = keys.index("ai2_arc__accuracy")
    assert sft[accuracy] == r"\textbf{1.0000}" and base[accuracy] == "0.2500"
    memory = keys.index("eval_peak_vram_allocated_gb")  # lower is better
    assert sft[memory] == r"\textbf{1.5000}" and legacy[memory] == "6.0230"
    latency = keys.index("ai2_arc__latency_mean_s")
    assert legacy[latency] == "2.6936"  # slowest, never bold
    assert r"\multicolumn{2}{c}{ai2\_arc}" in latex and r"\cmidrule(lr){6-7}" in latex
    assert not re.search(r"(?<!\\)_", latex.replace(r"\_", "")), "unescaped underscore"


# --- the CLI -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--csv", "--json", "--markdown", "--latex"])
def test_cli_exports_every_format(mixed_ws, capsys, flag):
    assert main(["-w", str(mixed_ws.root), "results", flag]) == 0
    out = capsys.readouterr().out
    assert LEGACY_NAME.replace("_", r"\_" if flag == "--latex" else "_") in out
    assert "tiny-sft" in out


def test_cli_writes_a_file_and_shows_a_table(mixed_ws, capsys, tmp_path):
    target = tmp_path / "out" / "results.csv"
    assert main(["-w", str(mixed_ws.root), "results", "--csv", "--models", "tiny-base,tiny-sft",
                 "-o", str(target)]) == 0
    lines = target.read_text().splitlines()
    assert lines[0].startswith("model,train_peak_vram_reserved_gb") and len(lines) == 3
    assert main(["-w", str(mixed_ws.root), "results"]) == 0
    screen = capsys.readouterr().out
    assert "tiny-sft" in screen and "macro_f1" in screen
