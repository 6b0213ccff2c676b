"""Hub ids on a machine that may have no network (a cluster's compute node); job process only.

Before transformers is handed a Hub id, :func:`require_model` checks the local cache and, when the id is not there, whether the Hub answers at all (one request, 5 s). A
missing id on an offline machine then fails at once with llmtui's own message instead of five retries
with back-off and the libraries' generic "couldn't connect".
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from engine.models.folder import ModelLoadError

REACH_TIMEOUT_S = 5.0


class HubUnavailableError(ModelLoadError):
    """A Hub id is not cached here and the Hub cannot be reached; the message says how to get it."""


def hub_reachable(endpoint: str | None = None, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the Hub answers one HEAD request (any HTTP status counts; proxies from the environment apply)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint or constants.ENDPOINT, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _is_local(ref: str) -> bool:
    return Path(ref).expanduser().is_dir()


def require_model(ref: str) -> None:
    """Return when ``ref`` is a folder, is in the Hub cache, or the Hub answers; else raise HubUnavailableError.

    When it is cached and the Hub does not answer, the libraries are told to stay offline (no retries).
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if _is_local(ref):
        return
    cached = isinstance(try_to_load_from_cache(ref, "config.json"), str)
    if hub_reachable():
        return
    if cached:
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True
        return
    raise HubUnavailableError(
        f"model {ref!r} is not in the Hugging Face cache on this machine ({constants.HF_HUB_CACHE}) and the Hub "
        f"cannot be reached from here: fetch it on a machine with network (`hf download {ref}`) and copy the "
        f"cache over, or set model.base to a local model folder")
