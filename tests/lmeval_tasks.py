"""Local lm-evaluation-harness task folders built from ../shared/datasets for tests and bench (never committed).

``write_task_folder(folder, shared, rows)`` writes small parquet slices and three task YAMLs into ``folder``,
their ``data_files`` relative to it (as in a workspace's ``Datasets/lm-eval-tasks/``):
``llmtui_boolq`` and ``llmtui_arc`` (multiple choice, loglikelihood; ARC's options are split out of the
question so its choices are multi-token texts), ``llmtui_openmath`` (generate_until with a regex filter) and
``llmtui_arc_generate`` (ARC as generate_until: the question with its options, the boxed letter read by a regex).
"""

from __future__ import annotations

import re
from pathlib import Path

BOOLQ = """task: llmtui_boolq
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: boolq-test.parquet
    train: boolq-train.parquet
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "{{context}}\\nQuestion: {{question}}?\\nAnswer:"
doc_to_choice: ["no", "yes"]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

ARC = """task: llmtui_arc
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: arc-test.parquet
    train: arc-train.parquet
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "Question: {{stem}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

OPENMATH = """task: llmtui_openmath
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: openmath-test.parquet
    train: openmath-train.parquet
test_split: test
fewshot_split: train
output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{target}}"
generation_kwargs:
  until: ["\\n\\n", "Question:"]
  max_gen_toks: {max_gen_toks}
  do_sample: false
filter_list:
  - name: number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9][0-9,]*(?:\\\\.[0-9]+)?)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

ARC_GENERATE = """task: llmtui_arc_generate
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: arc-generate-test.parquet
    train: arc-generate-train.parquet
test_split: test
fewshot_split: train
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: {max_gen_toks}
  do_sample: false
filter_list:
  - name: letter
    filter:
      - function: regex
        regex_pattern: '\\\\boxed\\{([A-D1-4])\\}'
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

_OPTION = re.compile(r"\s(?=[A-D1-4]\.\s)")


def _arc_rows(frame):
    """ARC questions with inline options ("… A. x B. y …") as stem, choice texts and the answer's index."""
    rows = []
    for question, answer in zip(frame["question"], frame["answer"]):
        parts = _OPTION.split(question)
        stem, options = parts[0], [p[3:].strip() for p in parts[1:]]
        labels = [p[0] for p in parts[1:]]
        if len(options) >= 2 and answer in labels:
            rows.append({"stem": stem, "choices": options, "label": labels.index(answer)})
    return rows


def write_task_folder(folder: Path, shared: Path, rows: int = 6, *, max_gen_toks: int = 48,
                      train_rows: int = 20) -> Path:
    """Write the three tasks into ``folder`` (created): ``rows`` test items each, few-shot pools of ``train_rows``."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("test", rows), ("train", train_rows)):
        boolq = pd.read_parquet(shared / f"{split}-boolq.parquet").head(count)
        boolq.assign(label=boolq["answer"].astype(int)).drop(columns="answer").to_parquet(
            folder / f"boolq-{split}.parquet")
        arc = pd.DataFrame(_arc_rows(pd.read_parquet(shared / f"{split}-ai2_arc.parquet")))
        arc.head(count).to_parquet(folder / f"arc-{split}.parquet")
        pd.read_parquet(shared / f"{split}-ai2_arc.parquet").head(count).to_parquet(
            folder / f"arc-generate-{split}.parquet")
        math = pd.read_parquet(shared / f"{split}-OpenMathInstruct-2.parquet").head(count)
        math.assign(target=[f"{a:g}" for a in math["answer"]]).drop(columns="answer").to_parquet(
            folder / f"openmath-{split}.parquet")
    (folder / "llmtui_boolq.yaml").write_text(BOOLQ)
    (folder / "llmtui_arc.yaml").write_text(ARC)
    (folder / "llmtui_openmath.yaml").write_text(OPENMATH.replace("{max_gen_toks}", str(max_gen_toks)))
    (folder / "llmtui_arc_generate.yaml").write_text(ARC_GENERATE.replace("{max_gen_toks}", str(max_gen_toks)))
    return folder
