"""THE reading of a ``.safetensors`` file's header, checked before anything trusts it; any process.

A header that lies (a Git LFS pointer checked in instead of the weights, a truncated download, a length
of 2^63 bytes, a JSON list, random bytes) becomes a :class:`SafetensorsError` whose message says what is
wrong, never an ``OverflowError``/``MemoryError``/``AttributeError`` from trusting it. Only the first
8 bytes and the header are read, never the tensors.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

#: safetensors' own ceiling on the header's size (its Rust reader refuses more).
MAX_HEADER_BYTES = 100 * 1024 * 1024
LFS_POINTER_PREFIX = b"version https://git-lfs"


class SafetensorsError(ValueError):
    """A ``.safetensors`` file cannot be what it claims; the message names the file and the fault."""


def read_header(path: Path | str) -> dict[str, Any]:
    """The file's JSON header (tensor name → {dtype, shape, data_offsets}), checked against the file's size."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(8)
            if head == LFS_POINTER_PREFIX[:8]:
                if (head + handle.read(len(LFS_POINTER_PREFIX) - 8)).startswith(LFS_POINTER_PREFIX):
                    raise SafetensorsError(f"{path.name}: a Git LFS pointer, not the weights (run `git lfs pull` "
                                           f"in the folder it was cloned from)")
                handle.seek(8)
            if len(head) < 8:
                raise SafetensorsError(f"{path.name}: {size} bytes, too short for a safetensors header (truncated)")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER_BYTES:
                raise SafetensorsError(f"{path.name}: header length {length} bytes is over safetensors' limit "
                                       f"of {MAX_HEADER_BYTES} (not a safetensors file, or corrupt)")
            if length > size - 8:
                raise SafetensorsError(f"{path.name}: header length {length} bytes but the file holds {size} "
                                       f"(truncated download?)")
            raw = handle.read(length)
    except OSError as exc:
        raise SafetensorsError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SafetensorsError(f"{path.name}: the header is not JSON (not a safetensors file, or corrupt)") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path.name}: the header is a JSON {type(header).__name__}, not an object")
    data_bytes = size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        shape = info.get("shape") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(o) for o in offsets)
                or offsets[0] > offsets[1] or not isinstance(shape, list) or not all(_count(d) for d in shape)):
            raise SafetensorsError(f"{path.name}: tensor {name!r} has no valid shape and data_offsets")
        if offsets[1] > data_bytes:
            raise SafetensorsError(f"{path.name}: tensor {name!r} ends at byte {offsets[1]} of the data but the "
                                   f"file holds {data_bytes} (truncated download?)")
    return header


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parameter_count(header: dict[str, Any]) -> int:
    """The number of values in every tensor a checked header lists."""
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total
