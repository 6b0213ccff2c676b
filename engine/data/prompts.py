"""The one prompt builder, shared by training, evaluation and PTQ calibration (any process).

System prompt first, then the user turn (the question, and the context under a ``Context:``
separator where the task has one); the training completion is the gold answer in ``\\boxed{…}``.
The model's own chat template is used when it has one (with ``enable_thinking=False``, which Qwen3
templates read and others ignore); otherwise a plain ``System: / User: / Assistant:`` template.
"""

from __future__ import annotations

import math
from typing import Any

from engine.data.tasks import Item, TaskSpec
from engine.results.scoring import BOOL_WORDS, DIGIT_TO_LETTER

PLAIN_TEMPLATE_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
UNANSWERABLE = "unanswerable"


def build_messages(task: TaskSpec, item: Item) -> list[dict[str, str]]:
    """The system and user messages for one item."""
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


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


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
    """Render messages to text with the tokenizer's chat template, or the plain fallback."""
    if _has_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             enable_thinking=False)
    return _plain_render(messages, add_generation_prompt, getattr(tokenizer, "eos_token", None) or "")


def render_prompt(tokenizer: Any, task: TaskSpec, item: Item) -> str:
    """The exact text the model sees at evaluation (and as the training prompt)."""
    return render(tokenizer, build_messages(task, item), add_generation_prompt=True)


def render_example(tokenizer: Any, task: TaskSpec, item: Item) -> dict[str, str]:
    """A prompt/completion pair for SFT whose prompt is exactly :func:`render_prompt`'s text.

    The completion is what the template adds after the generation prompt for the assistant turn
    (answer and end-of-turn tokens); if the template does not render the prompt as a prefix of
    the full conversation, the completion is the boxed answer followed by the EOS token.
    """
    messages = build_messages(task, item)
    prompt = render(tokenizer, messages, add_generation_prompt=True)
    answer = completion_text(task, item.answer)
    full = render(tokenizer, [*messages, {"role": "assistant", "content": answer}], add_generation_prompt=False)
    if full.startswith(prompt) and answer in full[len(prompt):]:
        completion = full[len(prompt):]
    else:
        completion = " " + answer + (getattr(tokenizer, "eos_token", None) or "")
    return {"prompt": prompt, "completion": completion}
