"""llmtui's side of the vLLM backend: find vLLM's interpreter, run the generation worker, send token ids (job process).

vLLM lives in its own environment (``./dev.sh setup-vllm``), named by ``LLMTUI_VLLM_PYTHON`` or by
``vllm_python`` in ``.llmtui/worker.toml``. The worker (``vllm_worker.py``) is started once per model
and generates each test set's token ids; prompts, stop rule, decoding and scoring stay in llmtui.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from engine.runs.generation import Generation, RowsDone, TextStop, cut_at_stop
from engine.jobs.settings import VLLM_PYTHON_ENV

WORKER_SCRIPT = Path(__file__).with_name("vllm_worker.py")
STDERR_TAIL_LINES = 15


class VLLMError(RuntimeError):
    """vLLM is not configured, cannot load the model, or its worker failed; the message says which."""


def vllm_unsupported(found: Any) -> str | None:
    """Why vLLM cannot load this model folder as it is (None when it can): only full-weight folders.

    Adapters (merge them first: ``[quant] merge_after_train``) and llmtui's quantized outputs
    (bitsandbytes, HQQ, and GPTQ/AWQ as saved by GPTQModel) are loaded by the built-in engine.
    """
    if found.kind == "full":
        return None
    what = {"adapter": "an adapter folder (merge it into its base first)"}.get(found.kind, f"a {found.kind} model")
    return f"vLLM backend: {what} is loaded by the built-in engine only"


def cpu_kv_cache_bytes(model_dir: Path, sequences: list[int], dtype: str) -> int | None:
    """The KV cache vLLM reserves on the CPU for ``sequences`` (:func:`engine.models.estimate.vllm_kv_cache_bytes`);
    None (vLLM's own default) when the folder's config.json cannot be read."""
    from engine.models.estimate import EstimateError, ModelShape, vllm_kv_cache_bytes

    try:
        shape = ModelShape.from_file(model_dir / "config.json")
    except EstimateError:
        return None
    return vllm_kv_cache_bytes(shape, sequences, 4 if dtype == "float32" else 2)


def _stderr_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-STDERR_TAIL_LINES:])


class VLLMBackend:
    """One vLLM worker process serving one model; ``generate`` takes token ids like the built-in engine."""

    name = "vllm"

    def __init__(self, python: str, model_dir: Path | str, tokenizer: Any, *, sequences: list[list[int]],
                 device: str, trust_remote_code: bool = False, dtype: str = "float32",
                 threads: int | None = None) -> None:
        """Start the worker and load the model. ``sequences``: per request to come (a test set), each prompt's
        positions plus the ceiling on new tokens. The longest is vLLM's ``max_model_len`` (it refuses a model whose
        context is shorter, a VLLMError, rather than generating past it); on the CPU the request that needs the
        most sizes the KV cache vLLM reserves. ``threads`` (CPU) replaces vLLM's binding of one thread per core."""
        if not Path(python).is_file():
            raise VLLMError(f"vLLM's interpreter {python} does not exist (set {VLLM_PYTHON_ENV} or vllm_python in "
                            f".llmtui/worker.toml; ./dev.sh setup-vllm builds one)")
        self.tokenizer, self.dtype = tokenizer, dtype
        self.vocab_size = len(tokenizer)
        env = dict(os.environ)
        kv_cache_bytes = None
        if device == "cpu":
            # One process: vLLM's engine core in a second one held its own torch and vLLM (+1.4 GB measured)
            # while this worker only hands it token ids.
            env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if "VLLM_CPU_KVCACHE_SPACE" not in env:
                kv_cache_bytes = cpu_kv_cache_bytes(Path(model_dir), max(sequences, key=sum), dtype)
        self.threads: int | str = env.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
        if threads and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # vLLM's own choice binds one spinning thread to each core, which thrashes on a shared machine
            # as torch's default does; unbound, its torch uses the threads llmtui chose from the free cores.
            env.update(VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS=str(threads))
            self.threads = threads
        env.pop("PYTHONPATH", None)  # llmtui's environment must not leak into vLLM's
        self._log = Path(tempfile.mkstemp(prefix="llmtui-vllm-", suffix=".log")[1])
        config = {"model": str(model_dir), "dtype": dtype, "max_model_len": max((max(r) for r in sequences if r), default=1),
                  "trust_remote_code": trust_remote_code, "seed": 0, "kv_cache_memory_bytes": kv_cache_bytes}
        with open(self._log, "w") as log:
            self._process = subprocess.Popen([python, str(WORKER_SCRIPT), json.dumps(config)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        ready = self._read()
        if "error" in ready:
            self.close()
            raise VLLMError(f"vLLM cannot load {model_dir}: {ready['error']}")
        self.versions = {"vllm": ready.get("vllm"), "torch": ready.get("torch")}

    def _read(self) -> dict[str, Any]:
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise VLLMError(f"the vLLM worker exited ({code}) without an answer:\n{_stderr_tail(self._log)}")
        return json.loads(line)

    def describe(self) -> dict[str, Any]:
        """The metrics file's ``eval_config.backend`` (a comparability setting)."""
        return {"name": "vllm", "version": self.versions["vllm"], "dtype": self.dtype, "threads": self.threads}

    def generate(self, token_ids: list[list[int]], max_new_tokens: int, *, eos_ids: list[int], brace_mask: Any,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_rows_done: RowsDone | None = None, text_stop: TextStop | None = None) -> list[Generation]:
        """Greedy generation of every prompt; rows are reported as the worker finishes them.

        Without ``text_stop`` the worker stops a row at its first closed box; with it (lm-eval's ``until``
        strings) it generates to EOS or the ceiling and the row is cut here where ``text_stop`` first holds.
        """
        request = {"prompts": token_ids, "max_new_tokens": max_new_tokens, "stop_token_ids": eos_ids,
                   "box_stop": text_stop is None}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        results: dict[int, Generation] = {}
        last = time.perf_counter()
        while True:
            message = self._read()
            if message.get("finished"):
                break
            now = time.perf_counter()
            done = []
            for index, tokens in message["done"]:
                length = cut_at_stop(self.tokenizer, tokens, eos_ids, brace_mask, text_stop)
                text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
                # each row's share of the wall time since the last rows finished
                done.append((index, Generation(text, length, (now - last) / len(message["done"]))))
            last = now
            results.update(done)
            if on_rows_done is not None:
                on_rows_done(done)
            if on_progress is not None:
                on_progress(len(results), len(token_ids))
        missing = [i for i in range(len(token_ids)) if i not in results]
        if missing:
            raise VLLMError(f"the vLLM worker did not return {len(missing)} of {len(token_ids)} prompts")
        return [results[index] for index in range(len(token_ids))]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.unlink(missing_ok=True)
