"""Small synthetic datasets in the four task schemas that a tiny model can actually learn (CLI process (llmtui demo))."""

from __future__ import annotations

import random
from pathlib import Path

from engine.data.tasks import BUILTIN_TASKS, SYSTEM_PROMPTS

OBJECTS = ["cup", "ball", "car", "hat", "box", "door", "lamp", "book", "shoe", "kite", "bird", "fish"]
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "pink", "brown"]
NAMES = ["Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas"]
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Oslo", "Prague", "Dublin", "Athens"]
CATEGORIES = {
    "animal": ["cat", "dog", "horse", "cow", "sheep", "lion"],
    "fruit": ["apple", "pear", "plum", "grape", "lemon", "mango"],
    "tool": ["hammer", "saw", "drill", "wrench", "shovel", "chisel"],
    "vehicle": ["bus", "train", "truck", "bike", "boat", "plane"],
}


def boolq_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        obj, colour = rng.choice(OBJECTS), rng.choice(COLOURS)
        asked = colour if i % 2 == 0 else rng.choice([c for c in COLOURS if c != colour])
        rows.append({"question": f"is the {obj} {asked}", "context": f"The {obj} is {colour}.",
                     "answer": asked == colour})
    return rows


def arc_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        category = rng.choice(list(CATEGORIES))
        right = rng.choice(CATEGORIES[category])
        wrong = rng.sample([w for c, words in CATEGORIES.items() if c != category for w in words], 3)
        options = [right, *wrong]
        rng.shuffle(options)
        letters = "ABCD"
        question = f"Which of these is a {category}? " + " ".join(f"{l}. {o}" for l, o in zip(letters, options))
        rows.append({"question": question, "answer": letters[options.index(right)]})
    return rows


def math_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"question": f"What is {a} plus {b}?", "answer": float(a + b)})
    return rows


def squad_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        other = rng.choice([x for x in NAMES if x != name])
        answerable = i % 3 != 0
        asked = name if answerable else other
        rows.append({"question": f"Where does {asked} live?", "context": f"{name} lives in {city}.",
                     "answer": city if answerable else ""})
    return rows


#: One row generator per task kind.
GENERATORS = {"math_numeric": math_rows, "mcq4": arc_rows, "boolq": boolq_rows, "squad_v2": squad_rows}


def write_synthetic_datasets(datasets_dir: Path | str, train_rows: int = 1000, test_rows: int = 100,
                             seed: int = 0) -> list[Path]:
    """Write ``train-``/``test-`` Parquet files for the four built-in tasks; return their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets_dir = Path(datasets_dir)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # Ordered by file stem so that each task keeps its random stream (the seed offset) across versions.
    for offset, task in enumerate(sorted(BUILTIN_TASKS.values(), key=lambda t: t.file_stem)):
        for split, n in (("train", train_rows), ("test", test_rows)):
            rng = random.Random(seed * 1000 + offset * 10 + (split == "test"))
            path = datasets_dir / (task.train_file if split == "train" else task.test_file)
            pq.write_table(pa.Table.from_pylist(GENERATORS[task.kind](n, rng)), path)
            written.append(path)
    return written


def corpus_for_tokenizer(datasets_dir: Path | str) -> list[str]:
    """Every text the tiny model will see (rows, system prompts, template words) for tokenizer training."""
    import pyarrow.parquet as pq

    texts = list(SYSTEM_PROMPTS.values()) + ["System: User: Assistant: Context: \\boxed{True} \\boxed{False}",
                                             "\\boxed{unanswerable} \\boxed{A} \\boxed{B} \\boxed{C} \\boxed{D}"]
    for path in sorted(Path(datasets_dir).glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            texts.append(" ".join(str(v) for v in row.values()))
            texts.append("\\boxed{" + str(row.get("answer")) + "}")
    return texts
