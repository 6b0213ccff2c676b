"""Load any model folder for inference: full, adapter (base + PEFT adapter), bitsandbytes, GPTQ/AWQ, HQQ (job process).

The kind is detected from the folder's files — ``quantization_metadata.json``, ``adapter_config.json``,
``training_metadata.json`` and ``config.json``'s ``quantization_config`` — never from its name.
``trust_remote_code`` is on only when the preset that produced the model asked for it.
PTQ outputs (any folder with ``quantization_metadata.json``) and GPTQ/AWQ/HQQ checkpoints are loaded by
``engine.runs.ptq_backends.load_quantized``; bitsandbytes checkpoints without that file by
``from_pretrained``, which reads their ``quantization_config``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.runs.hub import HubUnavailableError, require_model
from engine.models.folder import BACKEND_KINDS, TOKENIZER_FILES, ModelKind, ModelLoadError, detect_kind
from engine.models.resolve import looks_like_local_path
from engine.runs.bnb import nf4_config


@dataclass
class LoadedModel:
    """A model ready for ``generate`` with its left-padding tokenizer."""

    model: Any
    tokenizer: Any
    kind: str
    info: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str | None = None) -> str:
    """``device`` as given, else ``cuda`` when a GPU is visible, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str):
    """Weights dtype: the stored one on a GPU (``auto``), float32 on the CPU (bf16 matmuls are slow there)."""
    import torch

    return "auto" if device.startswith("cuda") else torch.float32


def _compute_dtype(device: str):
    import torch

    from engine.runs.device import bf16_supported

    if device.startswith("cuda") and bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.startswith("cuda") else torch.float32


def load_tokenizer(path: Path | str, *, trust_remote_code: bool = False, fallback: str | None = None,
                   padding_side: str | None = "left", pad_with_eos: bool = True):
    """THE tokenizer loader: ``path``'s tokenizer (or ``fallback``'s when ``path`` has none).

    The defaults set it up for batched generation (left padding, EOS as pad when there is no pad token);
    ``padding_side=None, pad_with_eos=False`` returns it unchanged (to save it beside a quantized model).
    Raises ModelLoadError naming ``path``.
    """
    from transformers import AutoTokenizer

    local = Path(path).expanduser()
    # A folder without tokenizer files would load as an empty tokenizer (vocabulary 1) and fail much later.
    own = not local.is_dir() or any((local / name).is_file() for name in TOKENIZER_FILES)
    if not own and not fallback:
        raise ModelLoadError(f"{path}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)})")
    sources = ([str(path)] if own else []) + ([fallback] if fallback else [])
    last_error: Exception | None = None
    for source in sources:
        try:
            require_model(source)
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            break
        except HubUnavailableError:
            raise
        except (OSError, ValueError) as exc:
            last_error = exc
    else:
        raise ModelLoadError(f"{path}: cannot load a tokenizer ({last_error})")
    if padding_side:
        tokenizer.padding_side = padding_side
    if pad_with_eos and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _safetensors_files(folder: Path) -> list[Path]:
    """The folder's model weight files when they are safetensors (one file or an index's shards), else []."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def load_converting_read(folder: Path | str, *, device: str, dtype: Any, trust_remote_code: bool = False,
                         quantization_config: Any = None):
    """A local safetensors model converted into ``dtype`` on the CPU, its weights read with ``pread`` tensor by
    tensor; None where this does not apply (not a local folder, no explicit dtype, the folder's own code asked
    for, another weights format, a class not in transformers).

    Why not ``from_pretrained(folder)``: it memory-maps the files, and every page read stays in the process's
    resident memory until the load ends — on the CPU, where bf16 weights become float32, that is a whole
    second (stored-dtype) copy at the peak (1B eval and chat: 8.6 GB where the float32 model and runtime need
    6.1; 1B LoRA's load likewise). Read with ``pread`` (the page cache is not the process's memory), each
    stored tensor lives only until its converted copy is made. The loading itself is still transformers'
    (``state_dict=``), bitsandbytes' on-the-fly ``quantization_config`` included. Used by
    :func:`load_for_inference` and training's base model load (QLoRA's on the CPU too).
    """
    from safetensors import safe_open
    from transformers import AutoConfig, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    folder = Path(folder)
    if trust_remote_code or dtype in (None, "auto") or not folder.is_dir():
        return None
    files = _safetensors_files(folder)
    if not files:
        return None
    config = AutoConfig.from_pretrained(str(folder))
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None:
        return None
    with contextlib.ExitStack() as stack:
        weights = {}
        for file in files:
            handle = stack.enter_context(safe_open(str(file), framework="pt", device="cpu", backend="pread"))
            weights.update((key, handle.get_slice(key)) for key in handle.keys())  # read when loaded, one by one
        model = model_class.from_pretrained(None, config=config, state_dict=weights, dtype=dtype,
                                            device_map={"": device}, quantization_config=quantization_config)
    if (folder / "generation_config.json").is_file():  # from_pretrained reads it from a folder, not a state dict
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    model.name_or_path = str(folder)
    return model


def _from_pretrained(source: str, *, device: str, trust_remote_code: bool, **kwargs):
    from transformers import AutoModelForCausalLM

    require_model(source)
    try:
        if device == "cpu" and set(kwargs) == {"dtype"}:
            model = load_converting_read(source, device=device, dtype=kwargs["dtype"],
                                         trust_remote_code=trust_remote_code)
            if model is not None:
                return model
        return AutoModelForCausalLM.from_pretrained(source, device_map={"": device},
                                                    trust_remote_code=trust_remote_code, **kwargs)
    except Exception as exc:  # corrupt weights raise backend-specific types (SafetensorError…); name the folder
        raise ModelLoadError(f"{source}: cannot load the model ({type(exc).__name__}: {exc})") from exc


def _check_base(model_dir: Path, base: str) -> str:
    if looks_like_local_path(base) and not Path(base).expanduser().is_dir():
        raise ModelLoadError(f"{model_dir}: the adapter's base model {base} is not a folder (moved or deleted?)")
    return base


def _load_adapter(model_dir: Path, found: ModelKind, device: str, *, quantized_base: bool):
    from peft import PeftModel

    base = _check_base(model_dir, found.base_model_path or "")
    kwargs: dict[str, Any] = {}
    if quantized_base:
        kwargs["quantization_config"] = nf4_config(_compute_dtype(device))
    else:
        kwargs["dtype"] = _dtype_for(device)
    base_model = _from_pretrained(base, device=device, trust_remote_code=found.trust_remote_code, **kwargs)
    try:
        return PeftModel.from_pretrained(base_model, str(model_dir))
    except Exception as exc:  # a mismatched or corrupt adapter: name the folder and the base
        raise ModelLoadError(f"{model_dir}: cannot apply the adapter to {base} ({type(exc).__name__}: {exc})") from exc


def load_for_inference(model_dir: Path | str, *, device: str | None = None,
                       trust_remote_code: bool = False) -> LoadedModel:
    """Load a model folder of any kind for generation, in eval mode, with a left-padding tokenizer.

    ``trust_remote_code`` is the user's choice (flag or preset key), never the folder's own metadata.
    """
    model_dir = Path(model_dir)
    found = detect_kind(model_dir, trust_remote_code=trust_remote_code)
    device = resolve_device(device)
    if device == "cpu":
        # blocks freed while loading and at the first forward (GPTQModel's AWQ kernel unpacks each module's
        # weights to int64 and repacks them there) went back to the heap, fragmented: 0.6B AWQ reload 3.14 →
        # 2.62 GB with them returned at once
        from engine.runs.device import return_freed_host_memory

        return_freed_host_memory()
    tokenizer_fallback = found.base_model_path if found.kind == "adapter" else None
    tokenizer = load_tokenizer(model_dir, trust_remote_code=found.trust_remote_code, fallback=tokenizer_fallback)
    if found.kind == "adapter":
        model = _load_adapter(model_dir, found, device, quantized_base=found.qlora)
    elif found.ptq_output or found.kind in BACKEND_KINDS:
        import os

        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
        from engine.runs.ptq_backends import load_quantized

        model = load_quantized(model_dir, found.quantization, device, trust_remote_code=found.trust_remote_code)
    elif found.kind == "bnb":
        model = _from_pretrained(str(model_dir), device=device, trust_remote_code=found.trust_remote_code)
    else:
        model = _from_pretrained(str(model_dir), device=device, trust_remote_code=found.trust_remote_code,
                                 dtype=_dtype_for(device))
    model.eval()
    info = {"device": device, "qlora_base_4bit": found.qlora, "base_model_path": found.base_model_path,
            "quantization": found.quantization, "trust_remote_code": found.trust_remote_code}
    return LoadedModel(model=model, tokenizer=tokenizer, kind=found.kind, info=info)


def load_full_precision(model_dir: Path | str, *, device: str = "cpu", dtype: Any = "auto",
                        trust_remote_code: bool = False):
    """``(model, tokenizer)`` in full precision; an adapter is merged into its (unquantized) base.

    For PTQ of a training output. Quantized folders raise ModelLoadError: they cannot be quantized again.
    """
    from peft import PeftModel

    model_dir = Path(model_dir)
    found = detect_kind(model_dir, trust_remote_code=trust_remote_code)
    if found.kind not in ("full", "adapter"):
        raise ModelLoadError(f"{model_dir}: already quantized ({found.kind}); quantize its full-precision source")
    tokenizer = load_tokenizer(model_dir, trust_remote_code=found.trust_remote_code,
                               fallback=found.base_model_path if found.kind == "adapter" else None)
    if found.kind == "full":
        model = _from_pretrained(str(model_dir), device=device, trust_remote_code=found.trust_remote_code,
                                 dtype=dtype)
    else:
        base = _check_base(model_dir, found.base_model_path or "")
        base_model = _from_pretrained(base, device=device, trust_remote_code=found.trust_remote_code, dtype=dtype)
        model = PeftModel.from_pretrained(base_model, str(model_dir)).merge_and_unload()
    model.eval()
    return model, tokenizer


def save_merged(adapter_dir: Path | str, out_dir: Path | str) -> Path:
    """Merge an adapter into its base (in place, in the stored dtype) and save it as a full model folder."""
    from engine.files import staged_dir

    model, tokenizer = load_full_precision(adapter_dir, device="cpu")
    with staged_dir(Path(out_dir), overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)
