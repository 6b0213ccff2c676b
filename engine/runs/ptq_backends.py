"""The PTQ backends' side that both quantizing and loading need (job process): importing a backend with one clear
error, its version, and loading a PTQ output folder — GPTQ and AWQ through GPTQModel, HQQ, INT8/NF4 through
bitsandbytes — for :func:`engine.runs.loading.load_for_inference`. Each backend is imported inside the
function that uses it."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from engine.models.folder import ModelLoadError
from engine.presets.naming import PTQ_METHODS

INSTALL_HINTS = {"gptqmodel": "pip install gptqmodel", "hqq": "pip install hqq",
                 "bitsandbytes": "pip install bitsandbytes"}


class QuantizeError(ValueError):
    """A quantization cannot run or failed in a known way; the message names the value or file at fault."""


def import_backend(module: str, method: str):
    """The backend module, or one clear :class:`QuantizeError` with the install hint."""
    if module == "gptqmodel":
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # a missing package raises ImportError; a broken one can raise anything
        raise QuantizeError(f"{method} needs the {module} package, which cannot be imported here "
                            f"({type(exc).__name__}: {exc}); install it with: {INSTALL_HINTS[module]}") from None
    if module == "gptqmodel":
        # GPTQModel logs a table per layer through its "logbar" logger; keep warnings and errors only.
        logging.getLogger("logbar").setLevel(logging.WARNING)
    return imported


def backend_version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))


def _restore_generation_config(model: Any, model_dir: Path) -> None:
    """GPTQModel rewrites the generation config on load; put back the one saved in the folder."""
    if (model_dir / "generation_config.json").is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(str(model_dir))


def load_quantized(model_dir: Path | str, metadata: dict[str, Any], device: str, *,
                   trust_remote_code: bool = False) -> Any:
    """Load a PTQ output folder for inference and return the transformers model (tokenizer: load it yourself).

    ``metadata`` is its ``quantization_metadata.json`` (or a ``quantization_config`` with ``method``).
    On the CPU the model computes in float32; on a GPU in the stored float16. Raises
    ``engine.runs.loading.ModelLoadError`` naming the folder when it cannot be loaded.
    """
    model_dir = Path(model_dir)
    method = str((metadata or {}).get("method", "")).upper()
    trust = trust_remote_code  # the user's choice, never the folder's metadata
    bits = (metadata or {}).get("weights_bits", (metadata or {}).get("bits", 4))
    loaders: dict[str, Callable[[], Any]] = {
        "GPTQ": lambda: _load_gptqmodel(model_dir, method, bits, device, trust),
        "AWQ": lambda: _load_gptqmodel(model_dir, method, bits, device, trust),
        "HQQ": lambda: _load_hqq(model_dir, device),
        "INT8": lambda: _load_bnb(model_dir, device, trust),
        "NF4": lambda: _load_bnb(model_dir, device, trust),
    }
    if method not in loaders:
        raise ModelLoadError(f"{model_dir}: quantization method {method or None!r} is not one of "
                             f"{', '.join(PTQ_METHODS)}")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the libraries print banners; keep the caller's stdout clean
            model = loaders[method]()
    except QuantizeError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{model_dir}: cannot load the {method} model ({type(exc).__name__}: {exc})") from None
    _restore_generation_config(model, model_dir)
    model.eval()
    return model


def _load_gptqmodel(model_dir: Path, method: str, metadata_bits: int, device: str, trust_remote_code: bool) -> Any:
    import_backend("gptqmodel", f"loading {method}")
    import torch
    from gptqmodel import BACKEND, GPTQModel

    options: dict[str, Any] = {}
    if not device.startswith("cuda"):
        # Torch kernels named outright: the automatic choice first compiles an AVX512 C++ extension (about
        # two minutes on a small machine). The fused kernels run 4-bit weights in float32; other bit widths
        # run on the plain torch kernel, which computes in bfloat16.
        if method == "AWQ":
            options = {"dtype": torch.float32, "backend": BACKEND.AWQ_TORCH_FUSED}
        elif int(metadata_bits) == 4:
            options = {"dtype": torch.float32, "backend": BACKEND.GPTQ_TORCH_FUSED}
        else:
            options = {"dtype": torch.bfloat16, "backend": BACKEND.GPTQ_TORCH}
    with contextlib.nullcontext() if device.startswith("cuda") else _without_disk_offload():
        return GPTQModel.load(str(model_dir), device=device, trust_remote_code=trust_remote_code, **options).model


@contextlib.contextmanager
def _without_disk_offload():
    """GPTQModel loads GPTQ and AWQ checkpoints with accelerate's ``offload_state_dict``: every CPU-placed
    tensor is first written to a memory-mapped file on disk and read back at the end, so the mapped copy and
    the loaded one are resident at once (+1.0 GB at 0.6B, measured). On the CPU the tensors stay where they
    are loaded anyway: load them without that detour."""
    from gptqmodel.models import loader

    original = loader.load_checkpoint_in_model_then_tie_weights

    def load_in_place(model, *args, **kwargs):
        kwargs.pop("offload_state_dict", None)
        kwargs.pop("offload_buffers", None)
        return original(model, *args, **kwargs)

    loader.load_checkpoint_in_model_then_tie_weights = load_in_place
    try:
        yield
    finally:
        loader.load_checkpoint_in_model_then_tie_weights = original


class _ReadOnce(dict):
    """The saved tensors as hqq's loader asks for them, by module name, each handed over once (the file's copy
    is dropped as soon as its module is built). A tied output head is handed nothing: hqq would build it as a
    second full copy of the embeddings in the compute dtype (0.6 GB in float32 for Qwen3-0.6B's 151,936 × 1,024);
    it is tied to the embeddings after loading instead."""

    def __init__(self, weights: dict, tied: tuple[str, ...] = ()):
        super().__init__(weights)
        self.tied = tied

    def __getitem__(self, key: str) -> Any:
        value = self.pop(key)
        return {} if key in self.tied else value


def _load_hqq(model_dir: Path, device: str) -> Any:
    import_backend("hqq", "loading HQQ")
    import json

    import torch
    from hqq.models.hf.base import AutoHQQHFModel

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    tied = ("lm_head",) if text.get("tie_word_embeddings", config.get("tie_word_embeddings")) else ()

    class StreamingHQQModel(AutoHQQHFModel):
        @classmethod
        def load_weights(cls, save_dir: str, map_location: Any = None) -> dict:
            return _ReadOnce(super().load_weights(save_dir, map_location), tied)

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    model = StreamingHQQModel.from_quantized(str(model_dir), compute_dtype=dtype, device=device)
    if tied:
        model.tie_weights()
    return model


def _load_bnb(model_dir: Path, device: str, trust_remote_code: bool) -> Any:
    import_backend("bitsandbytes", "loading INT8/NF4")
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), device_map={"": device},
                                                trust_remote_code=trust_remote_code)
