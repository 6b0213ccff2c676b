"""bitsandbytes (job process): THE 4-bit NF4 config (QLoRA training, loading a QLoRA adapter's base, NF4 PTQ),
and a bitsandbytes build that cannot load, found in an exception chain and said clearly."""

from __future__ import annotations

from typing import Any


def nf4_config(compute_dtype: Any, *, double_quant: bool = True):
    """THE 4-bit NF4 bitsandbytes config: QLoRA's base (double quant) when training, loading a QLoRA adapter's
    base, and NF4 PTQ (``double_quant=False``)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype)


def bitsandbytes_failure(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (causes and contexts) raised by or about bitsandbytes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = f"{type(current).__module__} {current}".lower()
        if "bitsandbytes" in text or "libbitsandbytes" in text:
            found = current
        current = current.__cause__ or current.__context__
    return found


def bnb_message(exc: BaseException, *, qlora: bool) -> str:
    what = "quant.method = 'QLORA': bitsandbytes cannot load the 4-bit NF4 base" if qlora else \
        "bitsandbytes is installed but cannot be loaded (transformers/peft import it)"
    fix = " or set quant.method = 'NoQuant'" if qlora else " or uninstall it"
    return (f"{what} ({type(exc).__name__}: {exc}). Install a bitsandbytes build that matches this machine's "
            f"CUDA (pip install -U bitsandbytes){fix}")
