"""Study files for tests and benchmarks: an inline BoolQ LoRA r 16 base preset on a model in Models/ and given axes."""

from __future__ import annotations


def study_text(base: str, axes: str) -> str:
    """A study whose base preset trains ``Models/{base}`` on BoolQ and evaluates on it; ``axes`` is the body of
    ``[study.axes]`` (TOML lines)."""
    return (f'[model]\nbase = "Models/{base}"\n[data]\ndataset = "boolq"\n[peft]\nr = 16\n'
            f'[eval]\nafter = true\ndatasets = ["boolq"]\n\n[study]\n[study.axes]\n{axes}')
