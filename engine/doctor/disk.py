"""Doctor checks of disk space and the Hugging Face cache (CLI process)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.doctor.check import ERROR, OK, WARNING, Check, gib
from engine.doctor.facts import Facts

DISK_ERROR_BYTES = 2 << 30
DISK_WARNING_BYTES = 20 << 30


def _disk_check(name: str, path: Path, what: str) -> Check:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as exc:
        return Check(name, ERROR, f"cannot read free space at {path}: {exc}", "check the path and its permissions")
    detail = f"{gib(usage.free)} free of {gib(usage.total)} at {path}"
    if usage.free < DISK_ERROR_BYTES:
        return Check(name, ERROR, f"{detail}: too little for {what}", f"free space on {existing}")
    if usage.free < DISK_WARNING_BYTES:
        return Check(name, WARNING, f"{detail}: a 7B model takes ~15 GiB", f"free space on {existing}")
    return Check(name, OK, detail)


def check_disk_models(facts: Facts) -> Check:
    return _disk_check("disk models", facts.ws.models_dir, "new model folders")


def check_hf_cache(facts: Facts) -> list[Check]:
    """The Hugging Face cache: where it is, its free space, offline mode, whether a token is configured."""
    from huggingface_hub import constants, get_token

    cache = Path(constants.HF_HUB_CACHE)
    disk = _disk_check("disk hf cache", cache, "downloaded models")
    token = get_token()  # never printed: only whether one is there and where it comes from
    if token:
        source = "HF_TOKEN" if os.environ.get("HF_TOKEN") else f"the token file {constants.HF_TOKEN_PATH}"
        token_text = f"a token is configured (from {source})"
    else:
        token_text = "no token configured (gated models such as Llama need one: huggingface-cli login)"
    offline = "; HF_HUB_OFFLINE is set: only cached models load" if constants.HF_HUB_OFFLINE else ""
    return [disk, Check("hf cache", OK, f"cache at {cache}; {token_text}{offline}")]
