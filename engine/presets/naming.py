"""QuantizationSpec, quantization tags and model folder names, identical to the legacy scripts' rules (any process).

``{base}-{dataset}_{finetuning}_{peft}{r}_{quant_tag}``; a base snapshot is ``{base}-base``; a PTQ
output replaces the ``NoQuant`` tag of its source with the PTQ tag (``GPTQ_w4_g64_headfp16``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NO_QUANT_TAG = "NoQuant"
PTQ_METHODS = ("GPTQ", "AWQ", "HQQ", "INT8", "NF4")
TRAIN_QUANT_METHODS = ("NoQuant", "QLORA")

#: Backend library that implements each method.
BACKENDS = {
    "QLORA": "bitsandbytes",
    "GPTQ": "gptqmodel",
    "AWQ": "gptqmodel",
    "HQQ": "hqq",
    "INT8": "bitsandbytes",
    "NF4": "bitsandbytes",
}


@dataclass(frozen=True)
class QuantizationSpec:
    """What a quantized model is: enough to name it and to describe it in metadata."""

    method: str = "NoQuant"
    weights_bits: int = 16
    activations_bits: int = 16
    kv_bits: int = 16
    group_size: int | None = None
    symmetric: bool = True
    lm_head_dtype: str = "fp16"
    backend: str | None = None
    calibration: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def is_quantized(self) -> bool:
        return self.method != "NoQuant"

    @property
    def tag(self) -> str:
        """The folder-name tag: ``NoQuant``, ``QLORA_w4_headbf16``, ``GPTQ_w4_g64_headfp16``…"""
        if not self.is_quantized:
            return NO_QUANT_TAG
        parts = [self.method, f"w{self.weights_bits}"]
        if self.activations_bits < 16:
            parts.append(f"a{self.activations_bits}")
        if self.kv_bits < 16:
            parts.append(f"kv{self.kv_bits}")
        if self.group_size:
            parts.append(f"g{self.group_size}")
        parts.append(f"head{self.lm_head_dtype}")
        return "_".join(parts)

    def metadata(self) -> dict[str, Any]:
        """The spec as plain data for ``*_metadata.json`` (with the tag)."""
        data = asdict(self)
        data["quant_tag"] = self.tag
        data["has_quantization"] = self.is_quantized
        return data

    @classmethod
    def from_metadata(cls, data: dict[str, Any] | None) -> "QuantizationSpec":
        """Rebuild a spec from :meth:`metadata` output; unknown keys are ignored."""
        if not data:
            return cls()
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def qlora_spec() -> QuantizationSpec:
    """Training-time QLoRA: bitsandbytes NF4 with double quantization, lm head kept in bf16."""
    return QuantizationSpec(method="QLORA", weights_bits=4, lm_head_dtype="bf16",
                            backend="bitsandbytes", extras={"quant_type": "nf4", "double_quant": True})


def ptq_spec(method: str, bits: int = 4, group_size: int | None = 64,
             calibration: str | None = None) -> QuantizationSpec:
    """The spec of a post-training quantization step (method upper-case, as in presets)."""
    method = method.upper()
    if method not in PTQ_METHODS:
        raise ValueError(f"unknown PTQ method {method!r}; expected one of {', '.join(PTQ_METHODS)}")
    if method == "INT8":
        bits, group_size = 8, None
    elif method == "NF4":
        bits, group_size = 4, None
    return QuantizationSpec(method=method, weights_bits=bits, group_size=group_size,
                            lm_head_dtype="fp16", backend=BACKENDS[method],
                            symmetric=method not in ("HQQ", "AWQ"),
                            calibration=calibration if method in ("GPTQ", "AWQ") else None)


def base_short_name(base: str) -> str:
    """``Qwen/Qwen3-0.6B`` → ``Qwen3-0.6B``; a local folder → its last part."""
    return str(base).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def model_name(base: str, dataset: str, finetuning: str, peft_method: str, r: int,
               quant: QuantizationSpec, suffix: str = "") -> str:
    """The legacy scripts' output folder name for a training run. A ``suffix`` (a study's way to tell apart
    runs the legacy rule names alike, such as two learning rates) goes after the base's short name, where
    the folder-name pattern of engine.results.registry still reads every other part."""
    short = base_short_name(base) + (f"-{suffix}" if suffix else "")
    if dataset == "none":
        return f"{short}-base"
    peft = "NoPeft" if peft_method == "NoPeft" else f"{peft_method}{r}"
    return f"{short}-{dataset}_{finetuning}_{peft}_{quant.tag}"


def ptq_output_name(source_name: str, spec: QuantizationSpec) -> str:
    """Name of a PTQ output: the source name with its ``NoQuant`` tag replaced by the PTQ tag."""
    if source_name.endswith("_" + NO_QUANT_TAG):
        return source_name[: -len(NO_QUANT_TAG)] + spec.tag
    return f"{source_name}_{spec.tag}"
