"""The prompt builder on the vendors' real chat templates and the real Llama 3 / Mistral vocabularies:
one BOS after tokenization, no clock date, the system instruction always present, the template's stop
tokens, the recorded prompt format, and training completions that continue the evaluation prompt."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from engine.data.prompts import (DATE_STRING, FolderTemplate, format_differences, prompt_format, render_example,
                                 render_prompt, stop_token_ids, template_style, tokenize_prompts)
from engine.data.tasks import Item, get_task

FAMILIES = ("llama3", "qwen3", "gemma2", "gemma3", "phi3", "mistral")
#: Families whose template writes BOS into the text while their tokenizer also adds one (the double-BOS trap).
BOS_IN_TEXT = {"llama3", "gemma2", "gemma3", "mistral"}
END_OF_TURN = {"llama3": "<|eot_id|>", "qwen3": "<|im_end|>", "gemma2": "<end_of_turn>", "gemma3": "<end_of_turn>",
               "phi3": "<|end|>", "mistral": "</s>"}
TASK = get_task("boolq")
ITEM = Item(0, "is the cup red", True, "The cup is blue.")


@pytest.mark.parametrize("name", FAMILIES)
def test_one_bos_no_date_system_present(family_tokenizer, name):
    tokenizer = family_tokenizer(name)
    prompt = render_prompt(tokenizer, TASK, ITEM)
    assert TASK.system_prompt in prompt and "is the cup red" in prompt
    for day in (date.today(), date.today() - timedelta(days=1), date.today() + timedelta(days=1)):
        assert day.strftime("%d %b %Y") not in prompt
    ids = tokenize_prompts(tokenizer, [prompt])[0]
    bos = tokenizer.bos_token_id
    if name in BOS_IN_TEXT:
        assert ids.count(bos) == 1 and ids[0] == bos
        assert tokenizer(prompt)["input_ids"][:2] == [bos, bos]  # the trap tokenize_prompts avoids is real
    else:
        assert bos is None or bos not in ids


def test_llama_date_is_the_fixed_one(family_tokenizer):
    prompt = render_prompt(family_tokenizer("llama3"), TASK, ITEM)
    assert f"Today Date: {DATE_STRING}\n" in prompt


def test_gemma_system_role_is_folded_into_the_user_turn(family_tokenizer):
    tokenizer = family_tokenizer("gemma2")
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                      tokenize=False)
    prompt = render_prompt(tokenizer, TASK, ITEM)
    assert prompt.startswith(f"<bos><start_of_turn>user\n{TASK.system_prompt}\n\nis the cup red")
    assert template_style(tokenizer).system_placement == "user"


def test_qwen3_answers_without_thinking(family_tokenizer):
    tokenizer = family_tokenizer("qwen3")
    assert render_prompt(tokenizer, TASK, ITEM).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert prompt_format(tokenizer)["enable_thinking"] is False


@pytest.mark.parametrize("name", FAMILIES)
def test_training_continues_the_evaluation_prompt(family_tokenizer, name):
    tokenizer = family_tokenizer(name)
    example = render_example(tokenizer, TASK, ITEM)
    assert example["prompt"] == render_prompt(tokenizer, TASK, ITEM)
    assert example["completion"].startswith("\\boxed{True}") and END_OF_TURN[name] in example["completion"]
    prompt_ids, full_ids = tokenize_prompts(tokenizer, [example["prompt"], example["prompt"] + example["completion"]])
    assert full_ids[:len(prompt_ids)] == prompt_ids  # the prompt ends on a token boundary
    if tokenizer.bos_token_id is not None:
        assert full_ids.count(tokenizer.bos_token_id) == (1 if name in BOS_IN_TEXT else 0)


@pytest.mark.parametrize("name", FAMILIES)
def test_stop_tokens_end_the_template_turn(family_tokenizer, name):
    tokenizer = family_tokenizer(name)
    stops = tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer))
    assert END_OF_TURN[name] in stops and tokenizer.eos_token in stops


@pytest.mark.parametrize("name", FAMILIES)
def test_prompt_format_record(family_tokenizer, name):
    tokenizer = family_tokenizer(name)
    record = prompt_format(tokenizer, TASK, ITEM)
    assert len(record["chat_template_sha256"]) == 64
    assert record["system_placement"] == ("user" if name.startswith("gemma") else "system")
    assert record["date_string"] == (DATE_STRING if name == "llama3" else None)
    assert record["enable_thinking"] == (False if name == "qwen3" else None)
    assert record["bos_in_text"] is (name in BOS_IN_TEXT)
    assert record["example"] == render_prompt(tokenizer, TASK, ITEM)
    other = {**record, "date_string": "30 Nov 2026", "example": "something else"}
    assert format_differences(record, other) == [f"date_string: {record['date_string']!r} != '30 Nov 2026'"]
    assert format_differences(record, {**record, "example": "x"}) == []


def test_folder_template_matches_the_loaded_tokenizer(family_tokenizer, tmp_path):
    """``llmtui plan`` reads the format from the folder's files without torch; it must agree with the tokenizer."""
    for name in FAMILIES:
        tokenizer = family_tokenizer(name)
        tokenizer.save_pretrained(tmp_path / name)
        from_files = FolderTemplate.read(tmp_path / name)
        assert prompt_format(from_files) == {**prompt_format(tokenizer), "example": None}
        assert render_prompt(from_files, TASK, ITEM) == render_prompt(tokenizer, TASK, ITEM)


def test_plain_template_on_a_bos_adding_tokenizer_gets_one_bos(family_tokenizer):
    import copy

    tokenizer = copy.deepcopy(family_tokenizer("llama3"))
    tokenizer.chat_template = None
    prompt = render_prompt(tokenizer, TASK, ITEM)
    assert prompt.startswith("System: ") and prompt_format(tokenizer)["chat_template_sha256"] == "plain"
    ids = tokenize_prompts(tokenizer, [prompt])[0]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def _completion_closes_block(tokenizer, template: str) -> dict[str, str]:
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = template
    example = render_example(tokenizer, TASK, ITEM)
    assert prompt_format(tokenizer)["reasoning_block"] is True
    prompt_ids, full_ids = tokenize_prompts(tokenizer, [example["prompt"], example["prompt"] + example["completion"]])
    assert full_ids[:len(prompt_ids)] == prompt_ids
    return example


def test_reasoning_block_opened_by_the_generation_prompt_is_closed_in_training(family_tokenizer, chat_templates):
    """../shared/chat-templates has no DeepSeek-R1 distill template, so this derives one from the real Qwen3
    template whose generation prompt ends in an open ``<think>\\n`` the way R1 distills' does: the template's
    own assistant turn then closes the block before the answer."""
    original = (chat_templates / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    opened = original.replace("{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}")
    opened = opened.replace("{{- '<think>\\n\\n</think>\\n\\n' }}", "")
    assert opened != original
    example = _completion_closes_block(family_tokenizer("qwen3"), opened)
    assert example["prompt"].endswith("<|im_start|>assistant\n<think>\n")
    assert example["completion"] == "\n</think>\n\n\\boxed{True}<|im_end|>\n"


def test_reasoning_block_the_assistant_turn_drops_is_closed_by_the_builder(family_tokenizer):
    """R1 distills' templates render past assistant turns without their reasoning, so the full conversation
    does not start with the generation prompt; a hand-written template of that shape (not the vendor's file)
    checks the builder's own completion: close the block, the answer, the template's end of turn."""
    template = ("{{ bos_token or '' }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
                "{% elif m['role'] == 'user' %}{{ '<|im_start|>User:' + m['content'] }}"
                "{% else %}{{ '<|im_start|>Assistant:' + m['content'] + '<|im_end|>' }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>Assistant:<think>\\n' }}{% endif %}")
    example = _completion_closes_block(family_tokenizer("qwen3"), template)
    assert example["prompt"].endswith("<|im_start|>Assistant:<think>\n")
    assert example["completion"] == "</think>\n\n\\boxed{True}<|im_end|>"
