"""Shared fixtures: a demo workspace (tiny model + synthetic data) built once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest



def _shared(name: str) -> Path:
    """``shared/NAME`` beside the checkout (or beside a folder above it, as for a git worktree)."""
    for parent in Path(__file__).resolve().parents[1].parents:
        if (parent / "shared" / name).is_dir():
            return parent / "shared" / name
    return Path(__file__).resolve().parents[1].parent / "shared" / name


SHARED_DATASETS = _shared("datasets")
CHAT_TEMPLATES = _shared("chat-templates")
REAL_CONFIGS = _shared("real-configs")
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
#: The queue's tests run trivial ``python -c`` jobs; the workers they start accept them only with this set
#: (engine.jobs.process.ANY_COMMAND_ENV). tests/engine/jobs/test_faults.py removes it to test the refusal.
os.environ["LLMTUI_TEST_ANY_JOB_COMMAND"] = "1"
#: Taken out of the environment so that no evaluation in the suite starts vLLM unless a test asks for it.
VLLM_PYTHON_FROM_ENV = os.environ.pop("LLMTUI_VLLM_PYTHON", None)
#: Evaluations record their speeds for ``auto`` (engine.runs.backend_choice): the suite's go to a file of its
#: own, so that it neither reads the machine's records nor adds its tiny models' speeds to them.
os.environ["LLMTUI_EVAL_SPEEDS"] = os.path.join(tempfile.mkdtemp(prefix="llmtui-test-speeds-"), "eval_speeds.json")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> Path:
    """A demo workspace built once; copy it (``demo_ws``) before changing anything in it."""
    from engine.runs.demo import create_demo

    root = tmp_path_factory.mktemp("demo-template")
    create_demo(root, train_rows=1000, test_rows=100)
    return root


@pytest.fixture
def demo_ws(demo_template, tmp_path):
    """A fresh copy of the demo workspace for one test."""
    from engine.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    return Workspace(root)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real benchmark files in ../shared/datasets (skipped with a reason where absent)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def trained_boolq_model(demo_template, tmp_path_factory) -> tuple[Path, str]:
    """``(workspace_root, model_name)``: the tiny demo model fully fine-tuned on synthetic BoolQ with the demo
    preset ``experiments/boolq-full.toml``, trained once per session (read-only by convention; copy the
    workspace before changing it). Its training events are in ``.llmtui/trained-boolq-events.jsonl``."""
    from engine.presets.config import load_preset
    from engine.runs.train import train
    from engine.workspace import Workspace

    root = tmp_path_factory.mktemp("trained-boolq") / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    ws = Workspace(root)
    config = load_preset(ws.experiments_dir / "boolq-full.toml")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from threads, and they thrash on a busy machine
    try:
        result = train(ws, config, events_path=ws.state_dir / "trained-boolq-events.jsonl")
    finally:
        torch.set_num_threads(threads)
    return root, result.model_name


@pytest.fixture(scope="session")
def weak_arc_model(demo_template, tmp_path_factory) -> tuple[Path, str]:
    """``(workspace_root, model_name)``: the demo preset ``arc-qlora-gptq`` trained without its PTQ step (QLoRA,
    50 steps, merged into full weights): a weakly trained model whose answers run from 3 tokens (a box) to
    the ceiling (no box), as a real model's do on hard items. Read-only by convention."""
    from engine.presets.config import load_preset
    from engine.runs.train import train
    from engine.workspace import Workspace

    root = tmp_path_factory.mktemp("weak-arc") / "ws"
    shutil.copytree(demo_template, root, symlinks=True)
    ws = Workspace(root)
    config = load_preset(ws.experiments_dir / "arc-qlora-gptq.toml")
    config.ptq = []
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(ws, config)
    finally:
        torch.set_num_threads(threads)
    return root, result.model_name


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """vLLM's interpreter: ``$LLMTUI_VLLM_PYTHON``, else the one ``./dev.sh setup-vllm`` builds or finds cached."""
    if VLLM_PYTHON_FROM_ENV:
        return VLLM_PYTHON_FROM_ENV
    done = subprocess.run([str(Path(__file__).resolve().parents[1] / "dev.sh"), "setup-vllm"], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, f"./dev.sh setup-vllm failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def chat_templates() -> Path:
    """The vendors' chat templates in ../shared/chat-templates (skipped with a reason where absent)."""
    if not CHAT_TEMPLATES.is_dir():
        pytest.skip(f"real chat templates not found at {CHAT_TEMPLATES}")
    return CHAT_TEMPLATES


@pytest.fixture(scope="session")
def family_tokenizer(chat_templates):
    """``family_tokenizer(name)``: the family's tokenizer with its vendor template, built once per session
    (the Llama 3 and Mistral vocabularies come out of their wheels; skipped with the reason if unavailable)."""
    from engine.runs.tiny import FAMILIES, FamilyUnavailable, family_tokenizer as build

    built: dict = {}

    def get(name: str):
        if name not in built:
            family = FAMILIES[name]
            try:
                built[name] = build(family, (chat_templates / family.template_file).read_text(encoding="utf-8"),
                                    _family_corpus())
            except FamilyUnavailable as exc:
                built[name] = exc
        if isinstance(built[name], FamilyUnavailable):
            pytest.skip(str(built[name]))
        return built[name]

    return get


def _family_corpus() -> list[str]:
    """The texts the families' local BPE tokenizers are trained on: synthetic items and the system prompts."""
    from engine.data.synthetic import GENERATORS
    from engine.data.tasks import SYSTEM_PROMPTS

    import random

    rng = random.Random(0)
    texts = list(SYSTEM_PROMPTS.values()) + ["\\boxed{True} \\boxed{False} \\boxed{A} Context:"]
    for generate in GENERATORS.values():
        texts += [" ".join(str(v) for v in row.values()) for row in generate(200, rng)]
    return texts


#: A custom BoolQ-kind test set over the synthetic BoolQ files with a short generation budget, so evaluating
#: an untrained tiny model (which never closes a box) takes a few seconds.
QUICK_TASK = '[quick]\nkind = "boolq"\nfile_stem = "boolq"\nmax_new_tokens = 12\n'
#: A BoolQ-kind test set whose questions differ in length, so a batch of them needs padding.
VARIED_TASK = '[varied]\nkind = "boolq"\nmax_new_tokens = 12\n'
VARIED_QUESTIONS = ["is it red", "is the cup on the table red", "is the big old wooden box on the shelf blue",
                    "is the sky green", "is the small round stone that lies by the river under the bridge grey",
                    "is water wet"]


@pytest.fixture(scope="session")
def family_ws(chat_templates, tmp_path_factory):
    """``(workspace, base(name) -> model name)``: one workspace (small synthetic data sets and the ``quick``
    test set) where ``base(name)`` builds the family's tiny model in ``Models/tiny-NAME`` once per session."""
    from engine.data.synthetic import write_synthetic_datasets
    from engine.runs.tiny import FAMILIES, FamilyUnavailable, build_family_model
    from engine.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("families") / "ws").init()
    write_synthetic_datasets(ws.datasets_dir, train_rows=64, test_rows=8)
    (ws.datasets_dir / "datasets.toml").write_text(QUICK_TASK + VARIED_TASK)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": q, "answer": i % 2 == 0, "context": "It is what it is."} for i, q in enumerate(VARIED_QUESTIONS)]
    for split in ("train", "test"):
        pq.write_table(pa.Table.from_pylist(rows), ws.datasets_dir / f"{split}-varied.parquet")
    failures: dict = {}

    def base(name: str) -> str:
        folder = ws.models_dir / f"tiny-{name}"
        if name in failures:
            pytest.skip(failures[name])
        if not folder.exists():
            family = FAMILIES[name]
            try:
                build_family_model(folder, family, (chat_templates / family.template_file).read_text(encoding="utf-8"),
                                   _family_corpus())
            except FamilyUnavailable as exc:
                failures[name] = str(exc)
                pytest.skip(str(exc))
        return folder.name

    return ws, base


@pytest.fixture
def tui_app():
    """Make the app as the Pilot tests run it: a fixed GPU list (NVML cannot exist here), no worker, fast polls.

    ``tui_app(ws)`` has one fake GPU; ``gpus=0`` none; any other ``LlmTuiApp`` option passes through.
    """
    from fake_gpus import FakeInventory
    from tui.app import LlmTuiApp

    def make(ws, *, gpus: int = 1, **options):
        options.setdefault("gpu_inventory", FakeInventory.with_gpus(gpus))
        options.setdefault("autostart_worker", False)
        options.setdefault("poll_interval_s", 0.1)
        return LlmTuiApp(ws, **options)

    return make


def _start_test_cluster(start, root, *, accounting: bool):
    """``start(root)``; skipped, saying what is missing, where the packages are not installed."""
    from slurm_cluster import PACKAGES, ClusterError, missing_commands

    missing = missing_commands(accounting=accounting)
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; apt-get install {' '.join(PACKAGES)})")
    try:
        return start(root)
    except ClusterError as exc:
        pytest.fail(f"the test Slurm cluster did not start: {exc}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node Slurm cluster (munged, slurmctld, slurmd from Debian's packages) on private ports,
    with ``SLURM_CONF`` pointing at its config for the whole test process; stopped after the session.
    Skipped, with the reason, only where the packages are not installed (``.ci/run`` installs them)."""
    from slurm_cluster import start_cluster

    cluster = _start_test_cluster(start_cluster, tmp_path_factory.mktemp("slurm"), accounting=False)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_two_node_cluster(tmp_path_factory):
    """A real two-node Slurm cluster with accounting: each ``slurmd`` in its own network namespace, with
    ``slurmctld`` and ``slurmdbd`` backed by a private MariaDB (``tests/slurm_cluster.py``); stopped and its
    namespaces removed after the session. Use it through ``two_nodes`` (which points ``SLURM_CONF`` at it)."""
    from slurm_cluster import start_two_node_cluster

    cluster = _start_test_cluster(start_two_node_cluster, tmp_path_factory.mktemp("slurm2"), accounting=True)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def two_nodes(slurm_two_node_cluster, monkeypatch):
    """The two-node cluster, with ``SLURM_CONF`` pointing at it for this test (and the processes it starts)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_two_node_cluster.conf))
    return slurm_two_node_cluster


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny models gain nothing from threads, and they thrash on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def queue_ws(tmp_path):
    """A fresh workspace for queue tests; afterwards its worker is stopped and any job process still running
    is killed with its group, so no test leaves a process behind."""
    import signal

    from engine.jobs.process import process_alive
    from engine.jobs.store import JobStore
    from engine.jobs.worker import stop_worker
    from engine.workspace import Workspace

    workspace = Workspace(tmp_path / "ws").init()
    yield workspace
    stop_worker(workspace)
    with JobStore(workspace) as store:
        for job in store.list(statuses=["running"]):
            if job.pid and process_alive(job.pid, job.pid_created):
                os.killpg(job.pid, signal.SIGKILL)
