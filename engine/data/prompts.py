"""The one prompt builder, shared by training, evaluation, PTQ calibration and any generation (any process).

System prompt first, then the user turn (the question, and the context under a ``Context:``
separator where the task has one); the training completion is the gold answer in ``\\boxed{…}``.
The model's own chat template is used when it has one; otherwise a plain ``System: / User: /
Assistant:`` template. Vendor templates have traps this module handles once for every caller:

- a template that rejects the ``system`` role (Gemma 2) gets the system instruction folded into the
  first user turn (``system_placement = "user"``);
- a template that reads ``date_string`` (Llama 3.x) gets the fixed :data:`DATE_STRING`, so an item renders
  to the same text on any day; one that reads ``enable_thinking`` (Qwen3) gets ``False``;
- a template that writes the BOS token into the text (Llama 3, Gemma, Mistral) must not get a second
  one from the tokenizer: :func:`tokenize_prompts` is the one way to tokenize rendered text;
- a generation prompt that opens a reasoning block (DeepSeek-R1 distills end with ``<think>\\n``) gets
  a training completion that closes it first, so training continues exactly the evaluation prompt.

:func:`stop_token_ids` gives the model's end-of-turn tokens and :func:`prompt_format` the record that
``training_metadata.json`` and the metrics file carry (compared with :func:`format_differences`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from engine.data.tasks import Item, TaskSpec
from engine.data.kinds import BOOL_WORDS, DIGIT_TO_LETTER

PLAIN_TEMPLATE_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
UNANSWERABLE = "unanswerable"
#: The date every template that reads ``date_string`` gets (Llama 3.x's own fallback when no clock is given).
DATE_STRING = "26 Jul 2024"
#: Reasoning-block markers: a generation prompt whose last opening marker is not closed opens a block.
REASONING_OPEN, REASONING_CLOSE = "<think>", "</think>"
#: The ``prompt_format`` fields that must agree for two runs to have seen the same prompts.
COMPARED_FIELDS = ("chat_template_sha256", "system_placement", "date_string", "enable_thinking", "bos_in_text",
                   "reasoning_block")
_PROBE_SYSTEM, _PROBE_USER, _PROBE_ANSWER = "S-probe", "U-probe", "A-probe"


def build_messages(task: TaskSpec, item: Item) -> list[dict[str, str]]:
    """The system and user messages for one item (before any folding a template needs)."""
    user = item.question.strip()
    if task.has_context and item.context:
        user = f"{user}\n\nContext:\n{item.context.strip()}"
    return [{"role": "system", "content": task.system_prompt}, {"role": "user", "content": user}]


def number_answer_text(value: float) -> str:
    """``1008.0`` → ``1008``; ``0.5`` → ``0.5`` (no exponent for ordinary values)."""
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:.10g}"


def answer_text(task: TaskSpec, answer: Any) -> str:
    """The gold answer as the text that goes inside ``\\boxed{}`` for training."""
    if task.kind == "boolq":
        if isinstance(answer, str):
            word = answer.strip().lower()
            return "True" if BOOL_WORDS.get(word) is True or word == "1" else "False"
        return "True" if bool(answer) else "False"
    if task.kind == "mcq4":
        text = str(answer).strip().upper()
        return DIGIT_TO_LETTER.get(text, text)
    if task.kind == "math_numeric":
        try:
            return number_answer_text(float(answer))
        except (TypeError, ValueError):
            return str(answer).strip()
    text = "" if answer is None else str(answer).strip()
    return text or UNANSWERABLE


def completion_text(task: TaskSpec, answer: Any) -> str:
    """The assistant's training answer: ``\\boxed{answer}``."""
    return "\\boxed{" + answer_text(task, answer) + "}"


# ------------------------------------------------------------------------------------------ template style


@dataclass(frozen=True)
class TemplateStyle:
    """How one chat template is driven: keyword arguments, where the system prompt goes, what it writes."""

    template_sha256: str  # "plain" without a chat template
    system_placement: str  # "system" | "user"
    date_string: str | None  # passed when the template reads it
    enable_thinking: bool | None  # passed (False) when the template reads it
    kwargs: tuple[tuple[str, Any], ...]


def _template_text(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one renders chats
        template = template.get("default")
    return template if isinstance(template, str) and template.strip() else None


def _template_variables(template: str) -> set[str]:
    """The variables a template reads from its context (``date_string``, ``enable_thinking``…)."""
    import jinja2
    from jinja2 import meta

    try:
        return set(meta.find_undeclared_variables(jinja2.Environment().parse(template)))
    except jinja2.TemplateError:
        return set()


def _apply(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool,
           kwargs: tuple[tuple[str, Any], ...]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **dict(kwargs))


_STYLES: dict[tuple[str, str, str], TemplateStyle] = {}


def template_style(tokenizer: Any) -> TemplateStyle:
    """Probe the tokenizer's chat template once: which keywords it reads and whether it accepts a system turn."""
    template = _template_text(tokenizer)
    if template is None:
        return TemplateStyle("plain", "system", None, None, ())
    key = (template, str(getattr(tokenizer, "bos_token", None)), str(getattr(tokenizer, "eos_token", None)))
    if key in _STYLES:
        return _STYLES[key]
    variables = _template_variables(template)
    kwargs: dict[str, Any] = {}
    if "date_string" in variables:
        kwargs["date_string"] = DATE_STRING
    if "enable_thinking" in variables:
        kwargs["enable_thinking"] = False
    frozen = tuple(sorted(kwargs.items()))
    probe = [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": _PROBE_USER}]
    try:
        rendered = _apply(tokenizer, probe, True, frozen)
        placement = "system" if _PROBE_SYSTEM in rendered else "user"
    except Exception:  # noqa: BLE001 - templates raise through raise_exception (TemplateError) or jinja errors
        placement = "user"
    style = TemplateStyle(hashlib.sha256(template.encode("utf-8")).hexdigest(), placement,
                          kwargs.get("date_string"), kwargs.get("enable_thinking"), frozen)
    _STYLES[key] = style
    return style


def _fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system instruction moved to the start of the first user turn (templates without a system role)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{system}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def _plain_render(messages: list[dict[str, str]], add_generation_prompt: bool, eos: str) -> str:
    text = ""
    for message in messages:
        role = PLAIN_TEMPLATE_ROLES.get(message["role"], message["role"].title())
        if message["role"] == "assistant":
            text += f"{role}: {message['content']}{eos}\n"
        else:
            text += f"{role}: {message['content']}\n"
    return text + ("Assistant:" if add_generation_prompt else "")


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """Render messages to text with the tokenizer's chat template (as :func:`template_style` drives it),
    or the plain fallback."""
    style = template_style(tokenizer)
    if style.template_sha256 == "plain":
        return _plain_render(messages, add_generation_prompt, getattr(tokenizer, "eos_token", None) or "")
    if style.system_placement == "user":
        messages = _fold_system(messages)
    return _apply(tokenizer, messages, add_generation_prompt, style.kwargs)


def render_prompt(tokenizer: Any, task: TaskSpec, item: Item) -> str:
    """The exact text the model sees at evaluation (and as the training prompt)."""
    return render(tokenizer, build_messages(task, item), add_generation_prompt=True)


def opens_reasoning_block(prompt: str) -> bool:
    """True when the generation prompt ends inside an unclosed ``<think>`` block (DeepSeek-R1 distills)."""
    opened = prompt.rfind(REASONING_OPEN)
    return opened >= 0 and prompt.rfind(REASONING_CLOSE) < opened


def _turn_end(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """What the template writes after an assistant message's content (its end-of-turn text)."""
    full = render(tokenizer, [*messages, {"role": "assistant", "content": _PROBE_ANSWER}], add_generation_prompt=False)
    at = full.rfind(_PROBE_ANSWER)
    return full[at + len(_PROBE_ANSWER):] if at >= 0 else (getattr(tokenizer, "eos_token", None) or "")


def render_example(tokenizer: Any, task: TaskSpec, item: Item) -> dict[str, str]:
    """A prompt/completion pair for SFT whose prompt is exactly :func:`render_prompt`'s text.

    The completion is what the template adds after the generation prompt for the assistant turn
    (answer and end-of-turn tokens). When the template does not render the prompt as a prefix of the
    full conversation (a reasoning block the generation prompt opens and the assistant turn drops, a
    template that rewrites earlier turns) the completion is built from the template's own pieces:
    the block closed (``</think>``) where the prompt opened one, the boxed answer, the end-of-turn text.
    """
    messages = build_messages(task, item)
    prompt = render(tokenizer, messages, add_generation_prompt=True)
    answer = completion_text(task, item.answer)
    full = render(tokenizer, [*messages, {"role": "assistant", "content": answer}], add_generation_prompt=False)
    if full.startswith(prompt) and answer in full[len(prompt):]:
        return {"prompt": prompt, "completion": full[len(prompt):]}
    if template_style(tokenizer).template_sha256 == "plain":
        return {"prompt": prompt, "completion": " " + answer + (getattr(tokenizer, "eos_token", None) or "")}
    opening = f"{REASONING_CLOSE}\n\n" if opens_reasoning_block(prompt) else ""
    return {"prompt": prompt, "completion": opening + answer + _turn_end(tokenizer, messages)}


# ------------------------------------------------------------------------------------------ tokens


def _added_prefix(tokenizer: Any) -> list[int]:
    """The special token ids the tokenizer puts before any text (BOS for Llama, Gemma, Mistral; none for Qwen)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(special) - len(plain) + 1):
        if special[start:start + len(plain)] == plain:
            return list(special[:start])
    return []


def tokenize_prompts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered prompt (or prompt + completion) texts, as the model must receive them.

    The text is tokenized without the tokenizer's own special tokens; the tokens it would put in front
    (BOS) are added only where the text does not already start with them — a template that writes
    ``bos_token`` into the text gets exactly one BOS, the plain template on a BOS-adding tokenizer too.
    """
    if not texts:
        return []
    prefix = _added_prefix(tokenizer)
    rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [list(row) if not prefix or list(row[:len(prefix)]) == prefix else prefix + list(row) for row in rows]


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value if v is not None]


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """The token ids that end the model's turn: ``generation_config.eos_token_id`` (an int or a list, e.g.
    Llama 3.1's ``<|end_of_text|>``/``<|eom_id|>``/``<|eot_id|>``), the tokenizer's EOS, and the first token
    of the template's end-of-turn text when it is a special token (``<|eot_id|>``, ``<end_of_turn>``,
    ``<|im_end|>``, ``<|end|>``) — so generation stops where the template ends an assistant turn."""
    ids = _ids(getattr(generation_config, "eos_token_id", None))
    ids += _ids(getattr(tokenizer, "eos_token_id", None))
    if template_style(tokenizer).template_sha256 != "plain":
        try:
            end = _turn_end(tokenizer, [{"role": "user", "content": _PROBE_USER}]).lstrip()
        except Exception:  # noqa: BLE001 - a template that cannot render a bare turn adds no stop token
            end = ""
        special = set(_ids(getattr(tokenizer, "all_special_ids", None)))
        added = getattr(tokenizer, "added_tokens_encoder", None) or {}
        first = tokenizer(end, add_special_tokens=False)["input_ids"][:1] if end else []
        if first and (first[0] in special or first[0] in added.values()):
            ids += first
    return list(dict.fromkeys(ids))


# ------------------------------------------------------------------------------------------ the record


def prompt_format(tokenizer: Any, task: TaskSpec | None = None, item: Item | None = None) -> dict[str, Any]:
    """The ``prompt_format`` record of ``training_metadata.json`` and the metrics file.

    ``chat_template_sha256`` (or ``"plain"``), ``system_placement`` (``"system"``/``"user"``),
    ``date_string`` and ``enable_thinking`` (the values passed; None when the template does not read them),
    ``bos_in_text`` (the template writes BOS), ``reasoning_block`` (the generation prompt opens one) and
    ``example`` (one item's rendered prompt; None without an item).
    """
    style = template_style(tokenizer)
    example = render_prompt(tokenizer, task, item) if task is not None and item is not None else None
    probe = example if example is not None else render(
        tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": _PROBE_USER}], True)
    bos = getattr(tokenizer, "bos_token", None)
    return {
        "chat_template_sha256": style.template_sha256,
        "system_placement": style.system_placement,
        "date_string": style.date_string,
        "enable_thinking": style.enable_thinking,
        "bos_in_text": bool(bos) and probe.startswith(bos),
        "reasoning_block": opens_reasoning_block(probe),
        "example": example,
    }


def format_differences(trained: dict[str, Any] | None, evaluated: dict[str, Any] | None) -> list[str]:
    """``field: a != b`` for every compared field (not ``example``) where two prompt formats differ."""
    if not isinstance(trained, dict) or not isinstance(evaluated, dict):
        return []
    return [f"{name}: {trained.get(name)!r} != {evaluated.get(name)!r}" for name in COMPARED_FIELDS
            if name in trained and trained.get(name) != evaluated.get(name)]


# ------------------------------------------------------------------------------------------ without torch


class FolderTemplate:
    """A model folder's chat template and special tokens, rendered as transformers renders them, without
    loading the tokenizer (which imports torch): what ``llmtui plan`` shows before any training."""

    def __init__(self, chat_template: str | None, special_tokens: dict[str, str]):
        self.chat_template = chat_template
        self.special_tokens = special_tokens
        self.bos_token = special_tokens.get("bos_token")
        self.eos_token = special_tokens.get("eos_token")

    @classmethod
    def read(cls, folder: Any) -> "FolderTemplate | None":
        """The folder's ``chat_template.jinja`` (or ``tokenizer_config.json``'s ``chat_template``) and special
        tokens; None when the folder has no tokenizer configuration."""
        import json
        from pathlib import Path

        folder = Path(folder)
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(config, dict):
            return None
        template = config.get("chat_template")
        jinja_file = folder / "chat_template.jinja"
        if jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        tokens = {}
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = config.get(name)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                tokens[name] = value
        return cls(template if isinstance(template, (str, dict)) else None, tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = False, **kwargs: Any) -> str:
        return _jinja_template(_template_text(self)).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **{**self.special_tokens, **kwargs})


def _jinja_template(template: str):
    """``template`` compiled the way transformers compiles chat templates (a sandbox with trimmed blocks, loop
    controls, ``raise_exception``, an HTML-safe ``tojson`` and ``strftime_now``); engine.data may not import
    transformers, and tests check that both render the same."""
    import json
    from datetime import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env.from_string(template)


def folder_prompt_format(folder: Any) -> dict[str, Any] | None:
    """The prompt format a model folder's template gives (``example`` None), read without torch; None when the
    folder has no tokenizer configuration."""
    template = FolderTemplate.read(folder)
    return None if template is None else prompt_format(template)
