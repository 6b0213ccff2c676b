"""``llmtui doctor --smoke`` (CLI process; imports torch): llmtui's own training, PTQ and evaluation paths, for real.

On a tiny model built on the fly (:mod:`engine.runs.tiny`, no download) in a scratch workspace, each step
calls the code a user's run calls — :func:`engine.runs.train.train`, :func:`engine.runs.quantize.quantize_model`,
:func:`engine.runs.loading.load_for_inference`, and the job queue's worker running ``llmtui eval`` and
``llmtui train`` as job processes — and reports a :class:`engine.doctor.check.Check` (pass / fail / skipped)
with its seconds. Without a CUDA device the CUDA-only rows say ``skipped: no CUDA device`` and the CPU
paths run. The in-process steps run on the first GPU of ``gpus`` (all NVML GPUs by default), the queue rows
on all of them, and NVML is read while a job runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.doctor.check import FAIL, PASS, SKIPPED, Check
from engine.jobs.gpu import GpuInventory, NvmlInventory, SelectedGpus
from engine.jobs.job_folder import JobStatus
from engine.models.folder import TRAINING_METADATA
from engine.workspace import Workspace

STEPS = 5
EVAL_ITEMS = 16
TRAIN_ROWS = 64
CALIBRATION_SAMPLES = 8
#: A quantized model whose logits differ more than this from its source (relative L2) is broken.
MAX_QUANT_ERROR = 0.5
#: How long the queue rows may take altogether (first CUDA kernel builds included).
QUEUE_TIMEOUT_S = 900.0
#: NVML sees a job on its GPU when its process is listed there or the GPU's memory rose this much.
NVML_MEMORY_RISE = 64 << 20
NO_CUDA = "no CUDA device"
PROMPTS = ["System: Read the passage and answer the question with True or False inside \\boxed{}.\n"
           "User: is the cup red\n\nContext:\nThe cup is red.\nAssistant:",
           "User: What is 2 + 3?\nAssistant:"]
TRAIN_OVERRIDES = [f"train.max_steps={STEPS}", "train.per_device_train_batch_size=4", "train.logging_steps=1",
                   "train.max_length=128", "eval.after=false"]


class Skip(Exception):
    """A step that does not apply here; the message says why."""


@dataclass
class Smoke:
    """The scratch workspace, what the steps produced so far, and where they may run."""

    ws: Workspace
    cuda: bool
    inventory: GpuInventory
    gpus: list[int]  # NVML indexes the queue rows may use
    outputs: dict[str, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ helpers


def _preset(smoke: Smoke, name: str, extra: list[str]):
    from engine.presets.config import load_preset

    return load_preset(smoke.ws.experiments_dir / f"{name}.toml", TRAIN_OVERRIDES + extra)


def _need(smoke: Smoke, key: str, what: str) -> Path:
    if key not in smoke.outputs:
        raise Skip(f"needs the {what}, which did not pass above")
    return smoke.outputs[key]


def _train(smoke: Smoke, key: str, preset: str, extra: list[str], expect_type: str) -> str:
    """One training run through :func:`engine.runs.train.train`; checks steps, loss, dtype and the folder."""
    from engine.models.scan import inspect_model
    from engine.runs.device import bf16_supported
    from engine.runs.train import train

    result = train(smoke.ws, _preset(smoke, preset, extra))
    meta = result.metadata
    stats, hardware = meta["training_stats"], meta["hardware_info"]
    loss = stats.get("final_loss")
    problems = []
    if stats.get("total_steps") != STEPS:
        problems.append(f"ran {stats.get('total_steps')} steps, not {STEPS}")
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        problems.append(f"final loss {loss!r} is not a finite number")
    if result.model_type != expect_type:
        problems.append(f"saved a {result.model_type!r} folder, not {expect_type!r}")
    record = inspect_model(smoke.ws, Path(result.output_dir))
    if record.status == "broken":
        problems.append(f"the model scan calls the folder broken: {record.reason}")
    if smoke.cuda and not hardware["device"].startswith("cuda"):
        problems.append(f"trained on {hardware['device']} although CUDA is available")
    if smoke.cuda and bf16_supported() and hardware["dtype"] != "bfloat16":
        problems.append(f"trained in {hardware['dtype']} on a GPU with native bf16")
    if problems:
        raise AssertionError("; ".join(problems))
    smoke.outputs[key] = Path(result.output_dir)
    loss_text = f"{loss:.3f}" if isinstance(loss, (int, float)) else "?"
    return (f"{STEPS} steps on {hardware['device']}, {hardware['dtype']} weights, mixed precision "
            f"{hardware['mixed_precision']}, loss {loss_text}, {result.model_type} folder {result.model_name}")


def _logits(model: Any, tokenizer: Any):
    import torch

    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True).to(_device_of(model))
    with torch.no_grad():
        return model(**batch).logits.float().cpu(), batch["attention_mask"].bool().cpu()


def _device_of(model: Any):
    import torch

    return torch.device(getattr(model, "device", None) or next(model.parameters()).device)


def _generate(loaded: Any, tokens: int = 8) -> int:
    """Greedy generation on PROMPTS; returns how many new tokens the longest row got."""
    import torch

    batch = loaded.tokenizer(PROMPTS, return_tensors="pt", padding=True).to(_device_of(loaded.model))
    with torch.no_grad():
        out = loaded.model.generate(**batch, max_new_tokens=tokens, do_sample=False)
    return int(out.shape[1] - batch["input_ids"].shape[1])


def _quantized_layer(model: Any) -> str:
    """The class of the first attention projection (``Linear`` would mean nothing was quantized)."""
    for name, module in model.named_modules():
        if name.endswith("self_attn.q_proj"):
            return type(module).__name__
    return "?"


# ------------------------------------------------------------------------------------------ the steps


def step_build(smoke: Smoke) -> str:
    from engine.runs.demo import DEMO_BASE, create_demo

    import torch

    create_demo(smoke.ws.root, train_rows=TRAIN_ROWS, test_rows=EVAL_ITEMS)
    smoke.outputs["base"] = smoke.ws.models_dir / DEMO_BASE
    device = f"cuda:0 = {torch.cuda.get_device_name(0)}" if smoke.cuda else "the CPU"
    queue = f"GPU {', '.join(map(str, smoke.gpus))}" if smoke.gpus else "no GPU"
    return (f"tiny Qwen3 and synthetic data in {smoke.ws.root} (no download); steps below run on {device}, "
            f"queue jobs on {queue}")


def step_train_full(smoke: Smoke) -> str:
    _need(smoke, "base", "tiny model")
    return _train(smoke, "full", "boolq-full", [], "full")


def step_train_lora(smoke: Smoke) -> str:
    _need(smoke, "base", "tiny model")
    return _train(smoke, "lora", "boolq-lora", ["quant.merge_after_train=false"], "adapter")


def step_train_qlora(smoke: Smoke) -> str:
    _need(smoke, "base", "tiny model")
    return _train(smoke, "qlora", "boolq-lora", ['quant.method="QLORA"', "quant.merge_after_train=false"],
                  "adapter") + " (bitsandbytes 4-bit NF4 base)"


def step_merge(smoke: Smoke) -> str:
    """QLoRA with ``merge_after_train``: the adapter applied to a full-precision reload of the base, merged."""
    from engine.runs.loading import load_for_inference

    _need(smoke, "base", "tiny model")
    detail = _train(smoke, "merged", "boolq-lora", ['quant.method="QLORA"', "quant.merge_after_train=true",
                                                    "peft.r=8"], "merged")
    loaded = load_for_inference(smoke.outputs["merged"])
    if loaded.kind != "full":
        raise AssertionError(f"the merged folder loads as {loaded.kind!r}, not as a full model")
    generated = _generate(loaded)
    return f"{detail}; reloads as a full model and generates {generated} tokens"


def _quantize(smoke: Smoke, method: str) -> str:
    """PTQ of the full fine-tune with llmtui's quantizer, then reload through the evaluation loader and generate."""
    from engine.runs.loading import load_for_inference
    from engine.runs.quantize import quantize_model

    source = _need(smoke, "full", "full fine-tune output")
    result = quantize_model(smoke.ws, source.name, method, samples=CALIBRATION_SAMPLES)
    device = result["metadata"]["device"]
    loaded = load_for_inference(result["output_dir"], device=device)
    layer = _quantized_layer(loaded.model)
    if layer == "Linear":
        raise AssertionError(f"{result['model_name']} reloads with plain Linear layers: nothing was quantized")
    reference = load_for_inference(source, device=device)
    got, mask = _logits(loaded.model, loaded.tokenizer)
    want, _ = _logits(reference.model, reference.tokenizer)
    del reference
    error = float((got[mask] - want[mask]).norm() / want[mask].norm())
    if not math.isfinite(error) or error > MAX_QUANT_ERROR:
        raise AssertionError(f"logits differ from the source by {error:.3f} (relative), more than {MAX_QUANT_ERROR}")
    generated = _generate(loaded)
    if generated < 1:
        raise AssertionError("generated no token")
    del loaded
    _release_cuda_memory()
    return (f"{result['quant_tag']} on {device} in {result['duration_s']:.1f} s; reloads with {layer} layers, logits "
            f"within {error:.3f} of the source, generates {generated} tokens")


def step_gptq(smoke: Smoke) -> str:
    return _quantize(smoke, "gptq")


def step_awq(smoke: Smoke) -> str:
    return _quantize(smoke, "awq")


def step_hqq(smoke: Smoke) -> str:
    return _quantize(smoke, "hqq")


def step_int8(smoke: Smoke) -> str:
    return _quantize(smoke, "int8")


def step_nf4(smoke: Smoke) -> str:
    return _quantize(smoke, "nf4")


# ------------------------------------------------------------------------------------------ the queue


@dataclass
class _Watch:
    """What NVML showed on a job's GPUs while it ran."""

    baseline: dict[int, int] = field(default_factory=dict)  # GPU index → memory used before the jobs
    peak: dict[int, int] = field(default_factory=dict)
    utilization: dict[int, float] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)  # GPU indexes where a job's process was listed
    samples: int = 0


@dataclass
class QueueRun:
    """The jobs the queue rows queued, and what happened to them."""

    eval_job: int | None = None
    second_eval_job: int | None = None
    dp_job: int | None = None
    jobs: dict[int, Any] = field(default_factory=dict)
    watch: dict[int, _Watch] = field(default_factory=dict)
    error: str = ""


def run_queue(smoke: Smoke) -> QueueRun:
    """Queue the evaluation jobs (and with 2+ GPUs a data-parallel training job), run them with the worker's own
    scheduling loop, and read NVML every ~0.2 s while they run."""
    from engine.jobs.enqueue import enqueue_eval, enqueue_pipeline
    from engine.presets.requests import EvalRequest
    from engine.jobs.process import descendants
    from engine.jobs.settings import WorkerSettings
    from engine.jobs.store import JobStore
    from engine.jobs.worker import Worker
    from engine.presets.config import load_preset

    run = QueueRun()
    source = smoke.outputs.get("full")
    if source is None:
        run.error = "needs the full fine-tune output, which did not pass above"
        return run
    _release_cuda_memory()  # before the baseline readings, so the jobs' own use stands out
    inventory = smoke.inventory
    readings = {r.index: r for r in inventory.gpus()}
    request = EvalRequest(datasets=["boolq"], limit=EVAL_ITEMS)
    run.eval_job = enqueue_eval(smoke.ws, [source.name], request, inventory=inventory)[0].id
    if len(readings) >= 2:
        if "merged" in smoke.outputs:
            run.second_eval_job = enqueue_eval(smoke.ws, [smoke.outputs["merged"].name], request,
                                               inventory=inventory)[0].id
        overrides = TRAIN_OVERRIDES + ["train.gpus=2", "data.dataset=arc"]
        path = smoke.ws.experiments_dir / "boolq-full.toml"
        config = load_preset(path, overrides)
        run.dp_job = enqueue_pipeline(smoke.ws, config, path.read_text(encoding="utf-8"), overrides=overrides,
                                      inventory=inventory)[0].id
    ids = [job for job in (run.eval_job, run.second_eval_job, run.dp_job) if job is not None]
    # This process keeps a CUDA context on its GPU after the in-process steps (a few hundred MiB): on a small
    # GPU that is more than the default 10 % the scheduler calls busy, and the jobs would wait for it forever.
    settings = WorkerSettings(poll_interval_s=0.05, busy_gpu_memory_fraction=0.5)
    worker = Worker(smoke.ws, settings, inventory=inventory)
    baseline = {index: reading.memory_used for index, reading in readings.items()}
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    try:
        with JobStore(smoke.ws) as store:
            while True:
                worker.tick()
                jobs = {job_id: store.require(job_id) for job_id in ids}
                if all(job.finished for job in jobs.values()):
                    break
                if time.monotonic() > deadline:
                    run.error = f"the jobs did not finish within {QUEUE_TIMEOUT_S:.0f} s"
                    for job_id in jobs:
                        if not jobs[job_id].finished:
                            store.request_cancel(job_id)
                    worker.settings.cancel_grace_s = 2.0
                    while worker.running and time.monotonic() < deadline + 30:
                        worker.tick()
                        time.sleep(0.1)
                    break
                now = {r.index: r for r in inventory.gpus()}
                for job in jobs.values():
                    if job.status != JobStatus.RUNNING or not job.gpus_assigned:
                        continue
                    watch = run.watch.setdefault(job.id, _Watch(baseline={i: baseline.get(i, 0)
                                                                          for i in job.gpus_assigned}))
                    pids = {job.pid} | {p.pid for p in descendants(job.pid)} if job.pid else set()
                    watch.samples += 1
                    for index in job.gpus_assigned:
                        if index not in now:
                            continue
                        reading = now[index]
                        watch.peak[index] = max(watch.peak.get(index, 0), reading.memory_used)
                        watch.utilization[index] = max(watch.utilization.get(index, 0.0), reading.utilization)
                        if pids & {p.pid for p in reading.processes}:
                            watch.seen.add(index)
                time.sleep(0.2)
            run.jobs = {job_id: store.require(job_id) for job_id in ids}
    finally:
        worker.close()
    return run


def _release_cuda_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _job_failure(smoke: Smoke, job: Any) -> str:
    return f"job #{job.id} ended {job.status}: {job.error or 'no error recorded'} (log: {smoke.ws.root / job.log_path})"


def step_eval_hf(smoke: Smoke, queue: QueueRun) -> str:
    import json

    if queue.eval_job is None:
        raise Skip(queue.error)
    job = queue.jobs.get(queue.eval_job)
    if job is None or job.status != JobStatus.DONE:
        raise AssertionError(_job_failure(smoke, job) if job else queue.error)
    metrics = json.loads(smoke.ws.metrics_file(job.target).read_text(encoding="utf-8"))
    total = metrics["summary"]["total_samples"]
    if total != EVAL_ITEMS:
        raise AssertionError(f"the metrics file counts {total} items, not {EVAL_ITEMS}")
    took = (job.ended_at or 0) - (job.started_at or 0)
    where = f"GPU {','.join(map(str, job.gpus_assigned))}" if job.gpus_assigned else "the CPU"
    return (f"{total} BoolQ items as queue job #{job.id} (worker → llmtui eval) on {where} in {took:.1f} s, "
            f"device {metrics['eval_config']['device']}, {metrics['throughput']['items_per_second'] or 0:.0f} items/s")


def step_eval_vllm(smoke: Smoke, queue: QueueRun) -> str:
    """The same 16 items through the vLLM backend; its outputs must equal the built-in engine's job above."""
    from engine.jobs.settings import VLLM_NOT_CONFIGURED, configured_vllm_python
    from engine.runs.evaluate import EvalOptions, evaluate_model

    if not configured_vllm_python(smoke.ws):
        raise Skip(VLLM_NOT_CONFIGURED)
    job = queue.jobs.get(queue.eval_job) if queue.eval_job is not None else None
    if job is None or job.status != JobStatus.DONE:
        raise Skip("needs the built-in engine's evaluation, which did not pass above")
    predictions = smoke.ws.predictions_folder(job.target)
    built_in = {path.name: path.read_text(encoding="utf-8") for path in sorted(predictions.glob("*.jsonl"))}
    began = time.perf_counter()
    metrics = evaluate_model(smoke.ws, job.target, EvalOptions(datasets=["boolq"], limit=EVAL_ITEMS, force=True,
                                                               backend="vllm"))
    took = time.perf_counter() - began
    backend = metrics["eval_config"]["backend"]
    if backend.get("name") != "vllm":
        raise AssertionError(f"evaluated with {backend.get('name')!r}, not vllm")
    differing = 0
    for name, text in built_in.items():
        ours = [json.loads(line)["output"] for line in text.splitlines() if line.strip()]
        theirs = [json.loads(line)["output"] for line in (predictions / name).read_text(encoding="utf-8").splitlines()
                  if line.strip()]
        differing += sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    if differing:
        raise AssertionError(f"vLLM's outputs differ from the built-in engine's on {differing} of {EVAL_ITEMS} items")
    return (f"{EVAL_ITEMS} BoolQ items through vLLM {backend.get('version')} ({backend.get('dtype')}) in {took:.1f} s "
            "(start included), outputs identical to the built-in engine's")


def step_nvml(smoke: Smoke, queue: QueueRun) -> str:
    if not smoke.gpus:
        raise Skip(NO_CUDA)
    if queue.eval_job is None:
        raise Skip(queue.error)
    job = queue.jobs.get(queue.eval_job)
    watch = queue.watch.get(queue.eval_job)
    if job is None or not job.gpus_assigned:
        raise AssertionError(f"the evaluation job was given no GPU although NVML lists {len(smoke.gpus)}")
    if watch is None or not watch.samples:
        raise AssertionError(f"no NVML reading was taken while job #{job.id} ran")
    parts, seen = [], False
    for index in job.gpus_assigned:
        rise = watch.peak.get(index, 0) - watch.baseline.get(index, 0)
        listed = index in watch.seen
        seen = seen or listed or rise >= NVML_MEMORY_RISE
        parts.append(f"GPU {index}: memory +{rise / (1 << 20):.0f} MiB, utilization up to "
                     f"{watch.utilization.get(index, 0.0):.0f} %, job process listed: {'yes' if listed else 'no'}")
    if not seen:
        raise AssertionError(f"NVML did not see job #{job.id} on its GPU ({'; '.join(parts)})")
    return f"{watch.samples} readings while job #{job.id} ran; " + "; ".join(parts)


def step_data_parallel(smoke: Smoke, queue: QueueRun) -> str:
    import json

    if len(smoke.gpus) < 2:
        raise Skip(f"needs 2 CUDA devices ({len(smoke.gpus)} here)" if smoke.gpus else NO_CUDA)
    if queue.dp_job is None:
        raise Skip(queue.error)
    job = queue.jobs.get(queue.dp_job)
    if job is None or job.status != JobStatus.DONE:
        raise AssertionError(_job_failure(smoke, job) if job else queue.error)
    meta = json.loads((smoke.ws.model_dir(job.target) / TRAINING_METADATA).read_text(encoding="utf-8"))
    hardware = meta["hardware_info"]
    if smoke.cuda:  # each rank reports the peak of the GPU it used
        ranks = sorted({gpu["rank"] for gpu in hardware["vram_peaks"]["per_gpu"]})
        where = f"GPU memory peaks from ranks {ranks}"
    else:  # GPUs that torch cannot use (the tests' stand-ins): the ranks ran on the CPU
        ranks = list(range(len(hardware["peak_rss_gb_per_rank"])))
        where = f"{len(ranks)} CPU ranks"
    if hardware["world_size"] != 2 or ranks != [0, 1]:
        raise AssertionError(f"world size {hardware['world_size']}, {where}: expected 2 ranks")
    return (f"queue job #{job.id} on GPUs {job.gpus_assigned}: {meta['training_stats']['total_steps']} steps, world "
            f"size 2 (accelerate launch), {where}, {hardware['device']} {hardware['dtype']}")


def step_scheduler(smoke: Smoke, queue: QueueRun) -> str:
    if len(smoke.gpus) < 2:
        raise Skip(f"needs 2 CUDA devices ({len(smoke.gpus)} here)" if smoke.gpus else NO_CUDA)
    if queue.second_eval_job is None:
        raise Skip(queue.error or "needs the merged model, which did not pass above")
    first, second = queue.jobs.get(queue.eval_job), queue.jobs.get(queue.second_eval_job)
    for job in (first, second):
        if job is None or job.status != JobStatus.DONE:
            raise AssertionError(_job_failure(smoke, job) if job else queue.error)
    a, b = set(first.gpus_assigned), set(second.gpus_assigned)
    if not a or not b or a & b:
        raise AssertionError(f"jobs #{first.id} and #{second.id} were given GPUs {sorted(a)} and {sorted(b)}")
    overlap = min(first.ended_at, second.ended_at) - max(first.started_at, second.started_at)
    together = f"ran side by side for {overlap:.1f} s" if overlap > 0 else "ran one after the other"
    return f"jobs #{first.id} → GPU {sorted(a)}, #{second.id} → GPU {sorted(b)}; {together}"


# ------------------------------------------------------------------------------------------ the run


#: Steps run in this process, in order (each may use what the earlier ones produced).
IN_PROCESS: tuple[tuple[str, Callable[[Smoke], str]], ...] = (
    ("smoke workspace", step_build),
    ("train full fine-tune", step_train_full),
    ("train LoRA", step_train_lora),
    ("train QLoRA", step_train_qlora),
    ("merge QLoRA adapter", step_merge),
    ("quantize GPTQ", step_gptq),
    ("quantize AWQ", step_awq),
    ("quantize HQQ", step_hqq),
    ("quantize INT8", step_int8),
    ("quantize NF4", step_nf4),
)
#: Rows read from the one queue run (the worker's loop running job processes).
QUEUED: tuple[tuple[str, Callable[[Smoke, QueueRun], str]], ...] = (
    ("eval HF (queue job)", step_eval_hf),
    ("NVML during a job", step_nvml),
    ("data-parallel 2 GPUs", step_data_parallel),
    ("scheduler 2 jobs", step_scheduler),
)


def _timed(name: str, call: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail, status = call(), PASS
    except Skip as skip:
        detail, status = f"skipped: {skip}", SKIPPED
    except Exception as exc:  # a failing path is the finding: report it and go on
        lines = [line for line in traceback.format_exception_only(type(exc), exc)[-1].strip().splitlines() if line]
        detail, status = (lines[0] if lines else type(exc).__name__)[:500], FAIL
    return Check(name, status, detail, seconds=round(time.perf_counter() - started, 2))


@contextlib.contextmanager
def _one_gpu(index: int | None) -> Iterator[None]:
    """Make GPU ``index`` (NVML numbering) this process's only CUDA device, as the worker does for a 1-GPU job
    (with several visible, the trainer would wrap the model in DataParallel). torch reads the variables when
    CUDA initialises, which happens inside; they are restored afterwards for the queue rows."""
    saved = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    if index is not None:
        os.environ.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(index))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_smoke(root: Path, gpus: list[int] | None = None, inventory: GpuInventory | None = None,
              on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Run every smoke step in a scratch workspace at ``root``. ``gpus`` are the NVML indexes it may use (all by
    default): the in-process steps run on the first, the queue rows on all of them."""
    listed = inventory or NvmlInventory()
    indexes = frozenset(r.index for r in listed.gpus()) if gpus is None else frozenset(gpus)
    selected = SelectedGpus(listed, indexes)
    chosen = sorted(r.index for r in selected.gpus())
    checks: list[Check] = []

    def record(check: Check) -> None:
        checks.append(check)
        if on_check:
            on_check(check)

    with _one_gpu(chosen[0] if chosen else None):
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.init()  # now, while only the chosen GPU is visible
        smoke = Smoke(Workspace(Path(root).resolve()), cuda, selected, chosen)
        for name, step in IN_PROCESS:
            record(_timed(name, lambda step=step: step(smoke)))
    queue_started = time.perf_counter()
    queue = QueueRun()
    try:
        queue = run_queue(smoke)
    except Exception as exc:  # the rows below then say why
        queue.error = f"the queue run failed: {type(exc).__name__}: {exc}"
    queue_seconds = round(time.perf_counter() - queue_started, 2)
    for index, (name, step) in enumerate(QUEUED):
        check = _timed(name, lambda step=step: step(smoke, queue))
        if index == 0:
            check.seconds = queue_seconds  # the queue run's time is counted once, on its first row
        record(check)
        if index == 0:
            record(_timed("eval vLLM", lambda: step_eval_vllm(smoke, queue)))
    return checks
