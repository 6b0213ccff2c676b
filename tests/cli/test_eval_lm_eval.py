"""``llmtui eval --lm-eval`` as a real child process on the demo workspace: lm-eval's own output in
Testing/lm-eval/{model}/, read back by ``llmtui results``; ``--untested`` then finds nothing left; a task whose
data is gone fails with one line naming it (exit 2)."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.lmeval_tasks import write_task_folder

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow


def _llmtui(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=900)


def test_eval_lm_eval_writes_lm_evals_output_that_results_reads(demo_template, shared_datasets, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    write_task_folder(root / "Datasets" / "lm-eval-tasks", shared_datasets, rows=3)
    done = _llmtui("-w", str(root), "eval", "tiny-qwen3", "--lm-eval", "llmtui_boolq,llmtui_openmath",
                   "--limit", "3", "--num-fewshot", "1", "--check-backends", "2", "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["evaluated"] == ["tiny-qwen3"] and report["failed"] == []
    assert set(report["results"]["tiny-qwen3"]) == {"llmtui_boolq", "llmtui_openmath"}
    assert report["llmtui"]["tiny-qwen3"]["adapter_effect"] is None  # the base has no parent
    assert report["llmtui"]["tiny-qwen3"]["threads"]["reason"].endswith("cores idle")  # chosen as evaluation's
    # the suite's children see no LLMTUI_VLLM_PYTHON (tests/conftest.py): the agreement is recorded as not measured
    assert report["llmtui"]["tiny-qwen3"]["backend_agreement"]["measured"] is False
    assert report["llmtui"]["tiny-qwen3"]["backend_agreement"]["reason"].startswith("vLLM is not configured")
    names = sorted(p.name.split("_2")[0] for p in (root / "Testing" / "lm-eval" / "tiny-qwen3").iterdir())
    assert names == ["results", "samples_llmtui_boolq", "samples_llmtui_openmath"]

    results = _llmtui("-w", str(root), "results", "--json")
    assert results.returncode == 0, results.stderr
    table = json.loads(results.stdout)
    [row] = [r for r in table["rows"] if r["model"] == "tiny-qwen3"]
    assert row["lm-eval:llmtui_boolq__acc"] == report["results"]["tiny-qwen3"]["llmtui_boolq"]["acc,none"]
    assert row["lm-eval:llmtui_openmath__total_samples"] == 3

    again = _llmtui("-w", str(root), "eval", "--untested", "--lm-eval", "llmtui_boolq", "--limit", "3")
    assert again.returncode == 0 and "every model has results for llmtui_boolq" in again.stdout

    (root / "Datasets" / "lm-eval-tasks" / "boolq-test.parquet").unlink()
    gone = _llmtui("-w", str(root), "eval", "tiny-qwen3", "--lm-eval", "llmtui_boolq")
    assert gone.returncode == 2
    assert gone.stderr.strip().splitlines()[-1].startswith(
        "error: lm-eval task llmtui_boolq: cannot read its dataset parquet")
    assert "Traceback" not in gone.stderr
