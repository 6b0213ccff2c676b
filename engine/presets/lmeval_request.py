"""The lm-evaluation-harness part of an evaluation request (any process): its CLI flags (shared by ``llmtui eval`` and
``llmtui queue add eval``), validation, the job's argv, and the preset's ``[eval] lm_eval_*`` keys.

The job process turns it into ``engine.runs.lmeval_run.LmEvalOptions``; nothing here imports lm-eval.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: lm-eval task, group and tag names: letters, digits, ``_ - . :``, and ``*`` patterns lm-eval expands.
TASK_NAME = re.compile(r"^[A-Za-z0-9_.:*-]+$")


class LmEvalRequestError(ValueError):
    """A value of the request is unusable; the message names the flag or key and the value."""


def non_negative(value: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be 0 or more")
    return number


def task_list(value: str | list[str]) -> list[str]:
    """``gsm8k,hellaswag`` (or a list) as task names, each checked; raises LmEvalRequestError naming a bad one."""
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if str(n).strip()]
    bad = [n for n in names if not TASK_NAME.match(n)]
    if bad:
        raise LmEvalRequestError(f"lm-eval task name {bad[0]!r} has characters a task name cannot have")
    return list(dict.fromkeys(names))


@dataclass
class LmEvalRequest:
    """Which lm-eval tasks to run and how; empty ``tasks`` means no lm-eval run."""

    tasks: list[str] = field(default_factory=list)
    num_fewshot: int | None = None  # None: each task's own
    apply_chat_template: bool = False
    force_unchanged_adapter: bool = False
    check_backends: int = 0

    def __bool__(self) -> bool:
        return bool(self.tasks)

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("lm-evaluation-harness tasks (the lm-eval extra: pip install 'llmtui[lm-eval]')")
        group.add_argument("--lm-eval", metavar="TASKS", default="",
                           help="comma-separated lm-eval tasks (its registry, or YAMLs in Datasets/lm-eval-tasks/) "
                                "instead of the built-in test sets; output in Testing/lm-eval/{model}/")
        group.add_argument("--num-fewshot", type=non_negative, default=None, metavar="N",
                           help="few-shot examples per prompt (default: each task's own)")
        group.add_argument("--apply-chat-template", action="store_true",
                           help="wrap each lm-eval prompt in the model's chat template")
        group.add_argument("--force-unchanged-adapter", action="store_true",
                           help="evaluate an adapter or fine-tune even when its logits equal its parent's")
        group.add_argument("--check-backends", type=non_negative, default=0, metavar="N",
                           help="also generate N generate_until items with vLLM (when configured) and record "
                                "the agreement rate")

    @classmethod
    def from_cli(cls, args: argparse.Namespace) -> LmEvalRequest:
        """From the flags :meth:`add_cli_arguments` added; the other lm-eval flags need ``--lm-eval``."""
        request = cls(tasks=task_list(args.lm_eval or ""), num_fewshot=args.num_fewshot,
                      apply_chat_template=args.apply_chat_template,
                      force_unchanged_adapter=args.force_unchanged_adapter, check_backends=args.check_backends)
        if not request.tasks and (request.num_fewshot is not None or request.apply_chat_template
                                  or request.force_unchanged_adapter or request.check_backends):
            raise LmEvalRequestError("--num-fewshot, --apply-chat-template, --force-unchanged-adapter and "
                                     "--check-backends apply to lm-eval tasks: give --lm-eval TASKS")
        return request

    @classmethod
    def from_section(cls, section: Any) -> LmEvalRequest:
        """From a preset's ``[eval]`` (``lm_eval_tasks``, ``lm_eval_num_fewshot`` (-1 = each task's own),
        ``lm_eval_apply_chat_template``)."""
        fewshot = section.lm_eval_num_fewshot
        return cls(tasks=task_list(list(section.lm_eval_tasks)), num_fewshot=None if fewshot < 0 else fewshot,
                   apply_chat_template=section.lm_eval_apply_chat_template)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LmEvalRequest:
        return cls(**(data or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def argv(self) -> list[str]:
        """The ``llmtui eval`` flags that ask for this request."""
        if not self.tasks:
            return []
        args = ["--lm-eval", ",".join(self.tasks)]
        if self.num_fewshot is not None:
            args += ["--num-fewshot", str(self.num_fewshot)]
        if self.apply_chat_template:
            args.append("--apply-chat-template")
        if self.force_unchanged_adapter:
            args.append("--force-unchanged-adapter")
        if self.check_backends:
            args += ["--check-backends", str(self.check_backends)]
        return args

    def describe(self) -> str:
        shots = "" if self.num_fewshot is None else f", {self.num_fewshot}-shot"
        return f"lm-eval {', '.join(self.tasks)}{shots}" + (", chat template" if self.apply_chat_template else "")
