"""lm-evaluation-harness output as llmtui results: the results table, paired statistics from samples files
(matched by doc_id, checked by doc_hash), the import command — on output produced by running lm-eval.

``lm_eval_output/`` was written by :func:`run_lm_eval` (``lm_eval --model hf --tasks tinycolors,tinyecho
--log_samples``, lm-eval 0.4.13, CPU) on the demo model and on a copy with noise added to its weights, with
the tasks :func:`write_task` defines; the slow test regenerates such output in the session and checks it
the same way.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.results.compare import compare
from engine.results.lmeval import import_output
from engine.results.metrics_files import results_table
from engine.workspace import Workspace
from metrics_fixtures import boxed, write_evaluation
from tui.cli.main import main

RECORDED = Path(__file__).parent / "lm_eval_output"
TASK = "lm-eval:tinycolors"
COLOURS = ["red", "blue", "green", "yellow"]


def samples_of(folder: Path) -> dict[int, dict]:
    """doc_id → sample, read straight from the samples file."""
    [path] = folder.glob("samples_tinycolors_*.jsonl")
    return {row["doc_id"]: row for row in map(json.loads, path.read_text().splitlines())}


def exact_mcnemar_p(b: int, c: int) -> float:
    k, n = min(b, c), b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def check_paired_statistics(ws: Workspace, output: Path, base: str, other: str) -> None:
    """compare() on the lm-eval task equals McNemar computed here from the two samples files."""
    folders = {json.loads(p.read_text())["model_name"].rsplit("/", 1)[-1]: p.parent
               for p in output.rglob("results_*.json")}
    a, b = samples_of(folders[base]), samples_of(folders[other])
    assert sorted(a) == sorted(b)
    only_a = sum(a[i]["acc"] == 1 and b[i]["acc"] == 0 for i in a)
    only_b = sum(a[i]["acc"] == 0 and b[i]["acc"] == 1 for i in a)
    comparison = compare(ws, [base, other])
    dataset = next(d for d in comparison.datasets if d.name == TASK)
    metric = next(m for m in dataset.metrics if m.metric == "acc")
    pair = metric.pairs[0]
    assert (pair.test, pair.b, pair.c, pair.n) == ("mcnemar", only_a, only_b, len(a))
    assert pair.p_value == pytest.approx(exact_mcnemar_p(only_a, only_b))
    assert metric.values[base] == pytest.approx(sum(s["acc"] for s in a.values()) / len(a))
    assert dataset.guard == {}  # same task config, harness version, backend and dtype
    [flips] = [f for f in comparison.flips if f.dataset == TASK]
    assert [f.index for f in flips.reference_only] == sorted(i for i in a if a[i]["acc"] == 1 and b[i]["acc"] == 0)
    if flips.reference_only:
        item = flips.reference_only[0]
        label = a[item.index]["doc"]["label"]
        assert item.gold == f"{label}: {COLOURS[label]}" and item.prompt.endswith("Answer:")
        assert item.reference.pred.endswith(COLOURS[label]) and "log-likelihoods" in item.model.output


@pytest.fixture
def imported(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws").init()
    import_output(ws, RECORDED)
    return ws


def test_results_table_shows_lm_eval_metrics_beside_llmtui_ones(imported):
    golds = [True, False, True]
    write_evaluation(imported, "tiny-qwen3", {"test-boolq.parquet": [boxed(g) for g in golds]},
                     {"test-boolq.parquet": golds})
    table = results_table(imported)
    rows = {row["model"]: row for row in table.rows}
    for results in RECORDED.rglob("results_*.json"):
        data = json.loads(results.read_text())
        name = data["model_name"].rsplit("/", 1)[-1]
        assert rows[name][f"{TASK}__acc"] == data["results"]["tinycolors"]["acc,none"]
        assert rows[name]["lm-eval:tinyecho__exact_match_first-word"] == \
            data["results"]["tinyecho"]["exact_match,first-word"]
    assert rows["tiny-qwen3"]["boolq__accuracy"] == 1.0  # one row holds llmtui's and lm-eval's results
    assert rows["tiny-qwen3-noisy"].get("boolq__accuracy") is None


def test_paired_statistics_from_samples(imported):
    check_paired_statistics(imported, RECORDED, "tiny-qwen3", "tiny-qwen3-noisy")


def test_generated_answers_keep_the_raw_output_and_the_filtered_answer(imported):
    [path] = RECORDED.glob("*tiny-qwen3/samples_tinyecho_*.jsonl")
    samples = {row["doc_id"]: row for row in map(json.loads, path.read_text().splitlines())}
    comparison = compare(imported, ["tiny-qwen3", "tiny-qwen3-noisy"])
    dataset = next(d for d in comparison.datasets if d.name == "lm-eval:tinyecho")
    metric = next(m for m in dataset.metrics if m.metric == "exact_match_first-word")
    both = [samples[i]["exact_match"] for i in sorted(samples)]
    assert metric.values["tiny-qwen3"] == pytest.approx(sum(both) / len(both))
    assert metric.pairs[0].test == "mcnemar" and metric.pairs[0].n == len(samples)
    from engine.results.lmeval import read_samples

    row = read_samples(path)[3]
    assert row["output"] == samples[3]["resps"][0][0] and row["pred"] == samples[3]["filtered_resps"][0]
    assert row["gold"] == samples[3]["target"] and row["metrics"] == {"exact_match_first-word": samples[3]["exact_match"]}


def test_documents_are_checked_by_hash(imported):
    [path] = (imported.lm_eval_dir / "tiny-qwen3-noisy").glob("samples_tinycolors_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[4]["doc_hash"] = "0" * 64
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = next(d for d in compare(imported, ["tiny-qwen3", "tiny-qwen3-noisy"]).datasets if d.name == TASK)
    assert dataset.unavailable["tiny-qwen3-noisy"].startswith("items differ: item 4 has a different doc_hash")
    assert dataset.guard["tiny-qwen3-noisy"][0].startswith("items differ")


def test_results_without_samples_compare_without_statistics(imported):
    for path in (imported.lm_eval_dir / "tiny-qwen3-noisy").glob("samples_*.jsonl"):
        path.unlink()
    dataset = next(d for d in compare(imported, ["tiny-qwen3", "tiny-qwen3-noisy"]).datasets if d.name == TASK)
    pair = dataset.metrics[0].pairs[0]
    assert pair.p_value is None and pair.delta == pytest.approx(0.3 - 1 / 3)
    assert pair.unavailable == f"{TASK}: no samples file beside its results (run lm-eval with --log_samples)"


def test_import_cli_and_errors(tmp_path, capsys):
    ws = Workspace(tmp_path / "ws").init()
    assert main(["-w", str(ws.root), "results", "--import", str(RECORDED), "--json"]) == 0
    captured = capsys.readouterr()
    assert "imported 6 file(s)" in captured.err
    data = json.loads(captured.out)
    assert f"{TASK}__acc" in data["columns"] and len(data["rows"]) == 2
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["-w", str(ws.root), "results", "--import", str(empty)])
    assert exit_info.value.code == 2
    assert "no results_*.json" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results_2026.json").write_text('{"not": "lm-eval"}')
    with pytest.raises(SystemExit):
        main(["-w", str(ws.root), "results", "--import", str(broken)])
    assert "not lm-evaluation-harness output" in capsys.readouterr().err


def write_task(folder: Path) -> Path:
    """Two local tasks over a jsonl file of 30 colour questions: ``tinycolors`` (multiple choice, acc) and
    ``tinyecho`` (generate until a newline, exact_match of the colour word)."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    items = folder / "items.jsonl"
    with items.open("w") as handle:
        for _ in range(30):
            colour = rng.choice(COLOURS)
            handle.write(json.dumps({"question": f"The cup is {colour}. What colour is the cup?",
                                     "choices": COLOURS, "label": COLOURS.index(colour), "colour": colour}) + "\n")
    source = ("dataset_path: json\ndataset_kwargs:\n  data_files:\n"
              f"    test: {items}\ntest_split: test\n")
    (folder / "tinycolors.yaml").write_text(
        "task: tinycolors\n" + source + "output_type: multiple_choice\n"
        'doc_to_text: "{{question}} Answer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    (folder / "tinyecho.yaml").write_text(
        "task: tinyecho\n" + source + "output_type: generate_until\n"
        'doc_to_text: "{{question}} Answer:"\ndoc_to_target: " {{colour}}"\n'
        "generation_kwargs:\n  until: [\"\\n\", \".\"]\n  max_gen_toks: 4\n  do_sample: false\n"
        "filter_list:\n  - name: first-word\n    filter:\n      - function: regex\n"
        "        regex_pattern: \"(\\\\w+)\"\n      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "    ignore_case: true\n    ignore_punctuation: true\n")
    return folder


def run_lm_eval(models: list[Path], task: Path, output: Path, cache: Path) -> None:
    """``lm_eval`` as a user runs it: HF backend on the CPU, both tasks, per-sample logs."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_DATASETS_CACHE": str(cache)}
    for model in models:
        subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                        f"pretrained={model},dtype=float32", "--tasks", "tinycolors,tinyecho", "--include_path",
                        str(task), "--device", "cpu", "--batch_size", "8", "--output_path", str(output),
                        "--log_samples"], check=True, env=env, capture_output=True, timeout=600)


@pytest.fixture(scope="session")
def lm_eval_run(demo_template, tmp_path_factory) -> Path:
    """lm-eval run for real on the demo model and a noisy copy of it (CPU, HF backend), once per session."""
    pytest.importorskip("lm_eval")
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("lm-eval")
    models = root / "Models"
    base = models / "tiny-qwen3"
    shutil.copytree(Path(demo_template) / "Models" / "tiny-qwen3", base)
    noisy = models / "tiny-qwen3-noisy"
    shutil.copytree(base, noisy)
    generator = torch.Generator().manual_seed(0)
    weights = {key: value + 0.5 * value.std() * torch.randn(value.shape, generator=generator)
               if value.dtype.is_floating_point and value.ndim > 1 else value
               for key, value in load_file(noisy / "model.safetensors").items()}
    save_file(weights, noisy / "model.safetensors", metadata={"format": "pt"})
    run_lm_eval([base, noisy], write_task(root / "task"), root / "out", root / "hf-cache")
    return root / "out"


@pytest.mark.slow
def test_live_lm_eval_run_imports_and_compares(lm_eval_run, tmp_path):
    ws = Workspace(tmp_path / "ws").init()
    written = import_output(ws, lm_eval_run)
    assert sorted(p.name.split("_")[0] for p in written) == ["results"] * 2 + ["samples"] * 4
    check_paired_statistics(ws, lm_eval_run, "tiny-qwen3", "tiny-qwen3-noisy")
