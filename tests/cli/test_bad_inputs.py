"""The corpus of bad inputs, each run as a real ``llmtui`` subprocess: exit 2 with one line naming the file and
the field (or, for a model folder, a ``broken`` listing with the reason), never a traceback, and nothing
half-written in the workspace.

Before issue 22 many of these were tracebacks (``TypeError`` for ``--set model.base.x=1``, ``OverflowError`` /
``MemoryError`` / ``AttributeError`` for corrupt safetensors headers, ``MarkupError`` for names with ``[``,
``UnicodeDecodeError`` for non-UTF-8 files) or silently accepted (``nan``/``inf`` numbers).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 1048576\n"


@dataclass
class Case:
    args: list[str]
    #: workspace-relative path → bytes to write before the command (a ``Models/`` path under a copied model)
    files: dict[str, bytes] = field(default_factory=dict)
    #: substrings that must all appear on ONE line of stderr (file, field, value)
    expect: tuple[str, ...] = ()
    #: a model folder the case breaks: ``llmtui models --json`` must list it as broken with this reason text
    broken: tuple[str, str] | None = None
    copy_model: str | None = None  # copy Models/tiny-qwen3 to this name first
    remove: tuple[str, ...] = ()  # workspace-relative files to delete (after the copy)


def _preset(**train: str) -> bytes:
    lines = "".join(f"{k} = {v}\n" for k, v in train.items())
    return (b'[model]\nbase = "tiny-qwen3"\n[data]\ndataset = "boolq"\n[train]\n' + lines.encode())


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


BOOLQ_TASK = b'[mytask]\nkind = "boolq"\n'
PRESET = "experiments/boolq-full.toml"

CASES: dict[str, Case] = {
    # --- presets and --set values (plan validates without running anything)
    "set-nan-learning-rate": Case(["plan", PRESET, "--set", "train.learning_rate=nan"],
                                  expect=("boolq-full.toml", "train.learning_rate", "nan", "finite")),
    "set-inf-epochs": Case(["plan", PRESET, "--set", "train.num_train_epochs=inf"],
                           expect=("boolq-full.toml", "train.num_train_epochs", "inf")),
    "set-into-a-value": Case(["plan", PRESET, "--set", "model.base.x=1"],
                             expect=("boolq-full.toml", "model.base", "not a section")),
    "set-negative-steps": Case(["plan", PRESET, "--set", "train.max_steps=-5"],
                               expect=("boolq-full.toml", "train.max_steps", "-5")),
    "set-text-for-number": Case(["plan", PRESET, "--set", "train.learning_rate=fast"],
                                expect=("boolq-full.toml", "train.learning_rate", "number")),
    "set-overflowing-float": Case(["plan", PRESET, "--set", "eval.limit=1e400"],
                                  expect=("boolq-full.toml", "eval.limit")),
    "set-without-equals": Case(["plan", PRESET, "--set", "train.max_steps"],
                               expect=("boolq-full.toml", "--set", "section.key=value")),
    "set-unknown-key": Case(["plan", PRESET, "--set", "train.learnin_rate=1e-4"],
                            expect=("boolq-full.toml", "train.learnin_rate")),
    "preset-nan-in-file": Case(["plan", "experiments/bad.toml"], {"experiments/bad.toml": _preset(learning_rate="nan")},
                               expect=("bad.toml", "train.learning_rate", "nan")),
    "preset-inf-in-file": Case(["plan", "experiments/bad.toml"],
                               {"experiments/bad.toml": _preset(num_train_epochs="-inf")},
                               expect=("bad.toml", "train.num_train_epochs", "inf")),
    "preset-not-utf8": Case(["plan", "experiments/bad.toml"], {"experiments/bad.toml": b"[train]\nx = \"\xff\xfe\"\n"},
                            expect=("bad.toml", "file", "cannot be read")),
    "preset-not-toml": Case(["plan", "experiments/bad.toml"], {"experiments/bad.toml": b"[train\nmax_steps = 3\n"},
                            expect=("bad.toml", "toml", "not valid TOML")),
    "preset-wrong-type": Case(["plan", "experiments/bad.toml"], {"experiments/bad.toml": _preset(max_steps='"ten"')},
                              expect=("bad.toml", "train.max_steps", "integer")),
    "preset-section-not-table": Case(["plan", "experiments/bad.toml"], {"experiments/bad.toml": b"train = 3\n"},
                                     expect=("bad.toml", "train")),
    "preset-missing": Case(["plan", "experiments/none.toml"], expect=("none.toml", "not found", "looked in")),
    "train-nan-learning-rate": Case(["train", PRESET, "--set", "train.learning_rate=nan"],
                                    expect=("boolq-full.toml", "train.learning_rate", "nan")),
    "queue-add-train-inf": Case(["queue", "add", "train", PRESET, "--set", "train.warmup_ratio=inf"],
                                expect=("boolq-full.toml", "train.warmup_ratio", "inf")),
    # --- Datasets/datasets.toml
    "datasets-max-new-tokens-text": Case(["plan", PRESET], {"Datasets/datasets.toml": BOOLQ_TASK + b'max_new_tokens = "abc"\n'},
                                         expect=("datasets.toml", "mytask.max_new_tokens", "'abc'")),
    "datasets-max-new-tokens-negative": Case(["plan", PRESET], {"Datasets/datasets.toml": BOOLQ_TASK + b"max_new_tokens = -3\n"},
                                             expect=("datasets.toml", "mytask.max_new_tokens", "-3")),
    "datasets-max-new-tokens-nan": Case(["plan", PRESET], {"Datasets/datasets.toml": BOOLQ_TASK + b"max_new_tokens = nan\n"},
                                        expect=("datasets.toml", "mytask.max_new_tokens", "nan")),
    "datasets-not-utf8": Case(["plan", PRESET], {"Datasets/datasets.toml": BOOLQ_TASK + b'system_prompt = "\xff"\n'},
                              expect=("datasets.toml", "UTF-8")),
    "datasets-unknown-kind": Case(["plan", PRESET], {"Datasets/datasets.toml": b'[mytask]\nkind = "poem"\n'},
                                  expect=("datasets.toml", "mytask.kind", "'poem'")),
    "datasets-has-context-text": Case(["plan", PRESET], {"Datasets/datasets.toml": BOOLQ_TASK + b'has_context = "yes"\n'},
                                      expect=("datasets.toml", "mytask.has_context", "'yes'")),
    "datasets-file-stem-escapes": Case(["plan", PRESET], {"Datasets/datasets.toml": BOOLQ_TASK + b'file_stem = "../x"\n'},
                                       expect=("datasets.toml", "mytask.file_stem", "../x")),
    # --- .llmtui/worker.toml (read by the worker before it starts)
    "worker-poll-nan": Case(["worker", "--foreground"], {".llmtui/worker.toml": b"poll_interval_s = nan\n"},
                            expect=("worker.toml", "poll_interval_s", "nan")),
    "worker-poll-zero": Case(["worker", "--foreground"], {".llmtui/worker.toml": b"poll_interval_s = 0\n"},
                             expect=("worker.toml", "poll_interval_s", "0")),
    "worker-grace-inf": Case(["worker", "--foreground"], {".llmtui/worker.toml": b"cancel_grace_s = inf\n"},
                             expect=("worker.toml", "cancel_grace_s", "inf")),
    "worker-fraction-above-one": Case(["worker", "--foreground"], {".llmtui/worker.toml": b"busy_gpu_memory_fraction = 3\n"},
                                      expect=("worker.toml", "busy_gpu_memory_fraction", "3")),
    "worker-parallel-negative": Case(["worker", "--foreground"], {".llmtui/worker.toml": b"max_parallel = -1\n"},
                                     expect=("worker.toml", "max_parallel", "-1")),
    "worker-slurm-newline": Case(["worker", "--foreground"],
                                 {".llmtui/worker.toml": b'[slurm]\npartition = "gpu\\nrm -rf ~"\n'},
                                 expect=("worker.toml", "slurm.partition", "one line")),
    "worker-vllm-python-newline": Case(["worker", "--foreground"],
                                       {".llmtui/worker.toml": b'vllm_python = "/x\\n/y"\n'},
                                       expect=("worker.toml", "vllm_python", "one line")),
    "worker-not-utf8": Case(["worker", "--foreground"], {".llmtui/worker.toml": b'vllm_python = "\xff"\n'},
                            expect=("worker.toml", "cannot be read")),
    "worker-unknown-key": Case(["worker", "--foreground"], {".llmtui/worker.toml": b"poll_intervall_s = 1\n"},
                               expect=("worker.toml", "poll_intervall_s")),
    # --- lm-eval output folders (results --import reads everything before it writes anything)
    "lmeval-samples-not-utf8": Case(["results", "--import", "lm-out"], {
        "lm-out/results_2024-01-01T00-00-00.json": json.dumps({
            "results": {"boolq": {"acc,none": 0.5}}, "config": {"model_args": "pretrained=/m/tiny"},
            "model_name": "/m/tiny"}).encode(),
        "lm-out/samples_boolq_2024-01-01T00-00-00.jsonl": b'{"doc_id": 0, "x": "\xff"}\n'},
        expect=("samples_boolq_2024-01-01T00-00-00.jsonl", "UTF-8")),
    "lmeval-no-results": Case(["results", "--import", "lm-out"], {"lm-out/notes.txt": b"nothing\n"},
                              expect=("lm-out", "results_")),
    "lmeval-results-a-list": Case(["results", "--import", "lm-out"],
                                  {"lm-out/results_2024-01-01T00-00-00.json": b"[1, 2]\n"},
                                  expect=("results_2024-01-01T00-00-00.json",)),
    # --- names with markup and control characters
    "name-markup-queue": Case(["queue", "add", "eval", "a[/bold]b"], expect=("a[/bold]b", "not a model name")),
    "name-newline-queue": Case(["queue", "add", "eval", "bad\nname"], expect=("bad\\nname", "not a model name")),
    "name-markup-compare": Case(["compare", "x[/red]", "tiny-qwen3"], expect=("x[/red]",)),
    "name-markup-chat": Case(["chat", "m[/x]", "-m", "hi"], expect=("m[/x]", "not found")),
    "name-markup-quantize-out": Case(["queue", "add", "quantize", "tiny-qwen3", "--method", "hqq", "--out", "../[/x]"],
                                     expect=("../[/x]",)),
    # --- model folders: listed as broken with the reason, the rest listed
    "safetensors-lfs-pointer": Case(["models", "--json"], {"Models/lfs/model.safetensors": LFS_POINTER},
                                    copy_model="lfs", broken=("lfs", "Git LFS pointer")),
    "safetensors-truncated": Case(["models", "--json"], {"Models/trunc/model.safetensors": _safetensors(
        b'{"w": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, 16384]}}', b"\0" * 100)},
        copy_model="trunc", broken=("trunc", "truncated")),
    "safetensors-2-to-63": Case(["models", "--json"], {"Models/huge/model.safetensors": struct.pack("<Q", 2 ** 63) + b"{}"},
                                copy_model="huge", broken=("huge", "header length")),
    "safetensors-json-list": Case(["models", "--json"], {"Models/list/model.safetensors": _safetensors(b"[1, 2]")},
                                  copy_model="list", broken=("list", "JSON list")),
    "safetensors-random": Case(["models", "--json"], {"Models/rand/model.safetensors": bytes(range(256)) * 16},
                               copy_model="rand", broken=("rand", "model.safetensors")),
    "safetensors-not-json": Case(["models", "--json"], {"Models/nj/model.safetensors": _safetensors(b"{\xff\xfe")},
                                 copy_model="nj", broken=("nj", "not JSON")),
    "safetensors-bad-offsets": Case(["models", "--json"], {"Models/off/model.safetensors": _safetensors(
        b'{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [8, 0]}}')},
        copy_model="off", broken=("off", "data_offsets")),
    "tokenizer-files-missing": Case(["models", "--json"], copy_model="notok",
                                    remove=("Models/notok/tokenizer.json", "Models/notok/tokenizer_config.json"),
                                    broken=("notok", "no tokenizer files")),
    "tokenizer-config-not-json": Case(["models", "--json"], {"Models/tokcfg/tokenizer_config.json": b"{not json"},
                                      copy_model="tokcfg", broken=("tokcfg", "tokenizer_config.json")),
    "config-json-a-list": Case(["models", "--json"], {"Models/cfglist/config.json": b"[]"},
                               copy_model="cfglist", broken=("cfglist", "config.json")),
    "remote-code-folder": Case(["models", "--json"], {"Models/remote/config.json": json.dumps(
        {"model_type": "qwen3", "auto_map": {"AutoConfig": "planted.Config"}}).encode()},
        copy_model="remote", broken=("remote", "--trust-remote-code")),
    # --- metrics files: an unreadable one is reported, the others still listed
    "metrics-not-json": Case(["results"], {"Testing/metrics/bad-model.json": b"{ not json"},
                             expect=("unreadable", "bad-model.json")),
    "metrics-a-list": Case(["results"], {"Testing/metrics/list-model.json": b"[1, 2]"},
                           expect=("unreadable", "list-model.json")),
}


def _snapshot(root: Path) -> dict[str, int]:
    """Every file under the workspace except llmtui's own state (which a command may create) → size."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and ".llmtui" not in p.relative_to(root).parts}


def _run(ws_root: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("LLMTUI_EVENTS", None)
    return subprocess.run([sys.executable, "-m", "tui.cli", "-w", str(ws_root), *args], capture_output=True,
                          text=True, timeout=240, env=env, cwd=cwd)


def test_the_corpus_is_at_least_forty():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, demo_ws):
    case = CASES[name]
    root = demo_ws.root
    if case.copy_model:
        shutil.copytree(root / "Models" / "tiny-qwen3", root / "Models" / case.copy_model)
    for relative in case.remove:
        (root / relative).unlink()
    for relative, data in case.files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    before = _snapshot(root)
    done = _run(root, case.args, cwd=root)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    if case.broken:
        model, reason = case.broken
        assert done.returncode == 0, done.stderr
        records = {r["name"]: r for r in json.loads(done.stdout)}
        assert records[model]["status"] == "broken" and reason in records[model]["reason"], records[model]
        assert records["tiny-qwen3"]["status"] != "broken"  # the rest is still listed, as it was
        return
    if name.startswith("metrics-"):
        assert done.returncode == 0  # reported, and the readable ones still listed
    else:
        assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if all(part in line for part in case.expect)]
    assert lines, f"no single stderr line names {case.expect}:\n{done.stderr}"
    assert _snapshot(root) == before  # nothing written, nothing half-imported


def test_results_import_of_non_utf8_samples_copies_nothing(demo_ws):
    """Before: the results file was copied, then reading the samples raised UnicodeDecodeError (half an import)."""
    case = CASES["lmeval-samples-not-utf8"]
    for relative, data in case.files.items():
        (demo_ws.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (demo_ws.root / relative).write_bytes(data)
    done = _run(demo_ws.root, case.args, cwd=demo_ws.root)
    assert done.returncode == 2
    assert not (demo_ws.root / "Testing" / "lm-eval").exists() or not any((demo_ws.root / "Testing" / "lm-eval").rglob("*.json"))


def test_corrupt_weights_are_listed_as_broken_by_every_command(demo_ws):
    """Before: one such folder crashed ``models``, ``eval --untested``, ``queue add eval --untested`` and ``doctor``
    with OverflowError / AttributeError / MemoryError; now each lists it as broken and goes on with the rest."""
    names = {"safetensors-lfs-pointer": "lfs", "safetensors-2-to-63": "huge", "safetensors-json-list": "list",
             "safetensors-truncated": "trunc", "safetensors-random": "rand"}
    for case_name, model in names.items():
        case = CASES[case_name]
        shutil.copytree(demo_ws.root / "Models" / "tiny-qwen3", demo_ws.root / "Models" / model)
        for relative, data in case.files.items():
            (demo_ws.root / relative).write_bytes(data)
    evaluated = _run(demo_ws.root, ["eval", "--untested", "--limit", "1", "--datasets", "boolq", "--json"],
                     cwd=demo_ws.root)
    assert "Traceback" not in evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["evaluated"] == ["tiny-qwen3"] and {b["model"] for b in report["broken"]} == set(names.values())
    queued = _run(demo_ws.root, ["queue", "add", "eval", "--untested", "--force", "--json"], cwd=demo_ws.root)
    assert "Traceback" not in queued.stderr and queued.returncode == 0
    assert all(f"broken, not queued: {model}" in queued.stderr for model in names.values())
    _run(demo_ws.root, ["worker", "stop"], cwd=demo_ws.root)
    doctor = _run(demo_ws.root, ["doctor", "--json"], cwd=demo_ws.root)
    assert "Traceback" not in doctor.stderr
    row = next(c for c in json.loads(doctor.stdout) if c["name"] == "model folders")
    assert row["status"] == "warning" and "5 of 6" in row["detail"]
