"""``llmtui demo``: a complete workspace that works offline on a CPU (CLI process)."""

from __future__ import annotations

from pathlib import Path

from engine.demo_layout import DEMO_BASE
from engine.files import write_text
from engine.workspace import Workspace

DEMO_PRESETS = {
    "boolq-full": """# Full fine-tuning of the tiny demo model on synthetic BoolQ (learns to ~100 % in a minute or two on 2 CPU cores).
[model]
base = "Models/tiny-qwen3"

[data]
dataset = "boolq"

[peft]
method = "NoPeft"

[train]
learning_rate = 2e-3
per_device_train_batch_size = 16
gradient_accumulation_steps = 1
max_steps = 500
warmup_ratio = 0.0
lr_scheduler_type = "cosine"
logging_steps = 10
gradient_checkpointing = false
max_length = 128

[eval]
after = true
datasets = ["boolq"]
""",
    "boolq-lora": """# LoRA on the tiny demo model, merged after training (measured: 96 % held-out accuracy after 800 steps;
# 200 steps at a linear schedule stayed at chance). Its time is CPU time, so it depends on the cores free:
# 800 steps of 16 examples took about 1 minute on 2 idle cores and 9 minutes on 2 cores busy with other work.
# Jobs (3) shows the steps per second and the ETA while it runs.
[model]
base = "Models/tiny-qwen3"

[data]
dataset = "boolq"

[peft]
method = "LoRa"
r = 16
alpha = 32
dropout = 0.0
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[quant]
merge_after_train = true

[train]
learning_rate = 5e-3
per_device_train_batch_size = 16
gradient_accumulation_steps = 1
max_steps = 800
warmup_ratio = 0.0
lr_scheduler_type = "cosine"
logging_steps = 10
gradient_checkpointing = false
max_length = 128

[eval]
after = true
datasets = ["boolq"]
""",
    "arc-qlora-gptq": """# QLoRA on synthetic ARC, merged, then GPTQ 4-bit, then evaluation of both outputs.
[model]
base = "Models/tiny-qwen3"

[data]
dataset = "arc"

[peft]
method = "LoRa"
r = 16
alpha = 32
dropout = 0.0

[quant]
method = "QLORA"
merge_after_train = true

[train]
learning_rate = 5e-3
per_device_train_batch_size = 8
gradient_accumulation_steps = 1
max_steps = 50
warmup_ratio = 0.0
logging_steps = 5
gradient_checkpointing = false
max_length = 128

[[ptq]]
method = "GPTQ"
bits = 4
group_size = 64
samples = 32

[eval]
after = true
datasets = ["arc"]
""",
    "base-snapshot": """# A snapshot of the base model with metadata and no training (the legacy scripts' dataset = "none").
[model]
base = "Models/tiny-qwen3"

[data]
dataset = "none"

[eval]
after = true
""",
}


#: Study files (``llmtui study plan|run|show``), written beside the presets.
DEMO_STUDIES = {
    "demo-study": """# A study: LoRA and DoRA on synthetic BoolQ (boolq-lora's 800 steps), each followed by HQQ 4- and 8-bit PTQ,
# every model evaluated on 100 items (the base model too). `llmtui study run demo-study`, then `llmtui study show
# demo-study` (about 15 minutes on 2 busy CPU cores).
[study]
base = "boolq-lora.toml"

[study.set]
"eval.limit" = 100
ptq = [{ method = "HQQ", bits = 4, group_size = 64 }, { method = "HQQ", bits = 8, group_size = 64 }]

[study.axes]
"peft.method" = ["LoRa", "DoRa"]
""",
}


def create_demo(root: Path | str, train_rows: int = 1000, test_rows: int = 100) -> Workspace:
    """Create the demo workspace at ``root``: layout, synthetic datasets, a tiny base model, presets.

    Files already there are kept; the base model is built only when ``Models/tiny-qwen3`` is absent.
    """
    from engine.files import staged_dir
    from engine.data.synthetic import corpus_for_tokenizer, write_synthetic_datasets
    from engine.runs.tiny import build_tiny_model

    ws = Workspace(Path(root).resolve()).init()
    if not any(ws.datasets_dir.glob("*.parquet")):
        write_synthetic_datasets(ws.datasets_dir, train_rows, test_rows)
    base_dir = ws.models_dir / DEMO_BASE
    if not base_dir.exists():
        with staged_dir(base_dir) as tmp:
            build_tiny_model(tmp, corpus_for_tokenizer(ws.datasets_dir))
    for name, text in {**DEMO_PRESETS, **DEMO_STUDIES}.items():
        path = ws.experiments_dir / f"{name}.toml"
        if not path.exists():
            write_text(path, text)
    return ws
