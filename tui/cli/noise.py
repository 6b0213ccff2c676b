"""Third-party chatter kept off a person's terminal (CLI process): import warnings and progress bars.

``llmtui demo``, ``eval``, ``quantize``… print only what llmtui means to say. A job process (the worker
sets ``LLMTUI_EVENTS``) keeps the libraries' output in its log, and ``llmtui --verbose …`` shows it.
Applied before the ML stack is imported: the settings are read at import time.
"""

from __future__ import annotations

import logging
import os

#: Loggers whose warnings are about the libraries, not the user's work (seen on the first `llmtui demo`).
QUIET_LOGGERS = ("torch.utils._pytree", "bitsandbytes", "transformers", "huggingface_hub", "accelerate", "peft",
                 "gptqmodel", "torchao")


def is_job_process() -> bool:
    """True in a job the worker (or Slurm) started: its output is the job's log, where the noise may stay."""
    return bool(os.environ.get("LLMTUI_EVENTS"))


def quiet_third_party() -> None:
    """Silence the libraries' warnings and progress bars in this process (not in its children's job logs)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
