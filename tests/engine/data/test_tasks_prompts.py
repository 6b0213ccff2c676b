"""Task registry, Parquet loading with clear errors, and the one prompt builder."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data.tasks import BUILTIN_TASKS, DatasetError, get_task, load_items, task_registry
from engine.data.prompts import answer_text, build_messages, completion_text, render_example, render_prompt


def test_builtin_registry_keeps_the_legacy_file_names():
    assert {t.test_file for t in BUILTIN_TASKS.values()} == {
        "test-OpenMathInstruct-2.parquet", "test-ai2_arc.parquet", "test-boolq.parquet", "test-squad_v2.parquet"}
    assert {n: t.kind for n, t in BUILTIN_TASKS.items()} == {
        "openmath": "math_numeric", "squad": "squad_v2", "arc": "mcq4", "boolq": "boolq"}
    assert get_task("test-ai2_arc.parquet").name == "arc"


def test_real_files_load_with_their_types(shared_datasets):
    boolq = load_items(shared_datasets, get_task("boolq"), "test")
    assert len(boolq) == 200 and isinstance(boolq[0].answer, bool) and boolq[0].context
    math = load_items(shared_datasets, get_task("openmath"), "train", limit=5)
    assert len(math) == 5 and isinstance(math[0].answer, float) and math[0].context is None
    arc = load_items(shared_datasets, get_task("arc"), "test")
    assert {answer_text(get_task("arc"), i.answer) for i in arc} <= set("ABCD")
    squad = load_items(shared_datasets, get_task("squad"), "test")
    assert sum(1 for i in squad if i.answer == "") == 98


def test_missing_file_and_column_are_named(tmp_path):
    with pytest.raises(DatasetError, match="test-boolq.parquet: file not found"):
        load_items(tmp_path, get_task("boolq"), "test")
    pq.write_table(pa.table({"question": ["q"], "answer": [True], "title": ["t"]}), tmp_path / "test-boolq.parquet")
    with pytest.raises(DatasetError, match=r"test-boolq.parquet: missing column 'context'"):
        load_items(tmp_path, get_task("boolq"), "test")
    (tmp_path / "test-ai2_arc.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="test-ai2_arc.parquet: not a readable Parquet file"):
        load_items(tmp_path, get_task("arc"), "test")


def test_custom_dataset_registration(tmp_path):
    (tmp_path / "datasets.toml").write_text('[mytask]\nkind = "boolq"\nsystem_prompt = "Say True or False."\n')
    pq.write_table(pa.table({"question": ["is it"], "answer": [False], "context": ["no"], "extra": [1]}),
                   tmp_path / "test-mytask.parquet")
    task = task_registry(tmp_path)["mytask"]
    assert task.kind == "boolq" and task.test_file == "test-mytask.parquet" and not task.builtin
    items = load_items(tmp_path, task, "test")
    assert items[0].answer is False
    (tmp_path / "datasets.toml").write_text('[bad]\nkind = "essay"\n')
    with pytest.raises(DatasetError, match="bad.kind = 'essay'"):
        task_registry(tmp_path)


def test_messages_put_system_first_and_context_after_separator():
    from engine.data.tasks import Item

    task = get_task("boolq")
    messages = build_messages(task, Item(0, "is the sky blue", True, "The sky is blue."))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == task.system_prompt
    assert messages[1]["content"] == "is the sky blue\n\nContext:\nThe sky is blue."
    assert completion_text(task, True) == "\\boxed{True}"
    assert completion_text(get_task("arc"), "3") == "\\boxed{C}"
    assert completion_text(get_task("openmath"), 1008.0) == "\\boxed{1008}"
    assert completion_text(get_task("squad"), "") == "\\boxed{unanswerable}"


class _NoTemplate:
    chat_template = None
    eos_token = "<eos>"


def test_plain_template_fallback():
    from engine.data.tasks import Item

    task = get_task("openmath")
    item = Item(0, "What is 1 plus 1?", 2.0)
    assert render_prompt(_NoTemplate(), task, item) == f"System: {task.system_prompt}\nUser: What is 1 plus 1?\nAssistant:"
    example = render_example(_NoTemplate(), task, item)
    assert example["completion"] == " \\boxed{2}<eos>\n"


def test_tiny_template_prompt_is_a_token_prefix(demo_template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_template / "Models" / "tiny-qwen3")
    for name in BUILTIN_TASKS:
        task = get_task(name)
        for item in load_items(demo_template / "Datasets", task, "train", limit=20):
            example = render_example(tokenizer, task, item)
            assert example["prompt"] == render_prompt(tokenizer, task, item)
            assert example["completion"].startswith(" \\boxed{")
            prompt_ids = tokenizer(example["prompt"])["input_ids"]
            full_ids = tokenizer(example["prompt"] + example["completion"])["input_ids"]
            assert full_ids[: len(prompt_ids)] == prompt_ids
