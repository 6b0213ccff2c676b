"""The shape every result is read into — :class:`ResultRecord` (one metrics file, or one model's lm-eval runs) and
its :class:`DatasetResult` per test set — shared by the readers of llmtui's files (:mod:`engine.results.metrics_files`)
and of lm-eval's (:mod:`engine.results.lmeval`) (any process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DatasetResult:
    """One test set's results, every rate a fraction in [0, 1]."""

    file: str
    name: str
    kind: str | None
    total_samples: int | None = None
    correct: int | None = None
    incorrect: int | None = None
    format_success_rate: float | None = None
    #: Scalar metrics by llmtui's names, ``accuracy`` first.
    metrics: dict[str, float | None] = field(default_factory=dict)
    #: Non-scalar metric data as written (per-class scores, confusion matrices).
    details: dict[str, Any] = field(default_factory=dict)
    latency_mean_s: float | None = None
    latency_sum_s: float | None = None
    tokens_mean: float | None = None
    #: SHA-256 of the test file as evaluated (None in files written before llmtui recorded it).
    dataset_sha256: str | None = None
    #: lm-evaluation-harness results: the per-sample file, and what must match for a paired comparison
    #: (task config hash, few-shot count…; see engine.results.lmeval).
    samples_path: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


@dataclass
class ResultRecord:
    """One metrics file, normalised. ``error`` is set when the file could not be read at all."""

    path: Path
    name: str
    source: str  # "llmtui" | "legacy" (the legacy scripts' files) | "unreadable"
    raw_model_name: Any = None
    evaluated_at: str | None = None
    datasets: dict[str, DatasetResult] = field(default_factory=dict)
    overall_accuracy: float | None = None
    total_samples: int | None = None
    latency_mean_s: float | None = None
    eval_peak_vram_reserved_gb: float | None = None
    eval_peak_vram_allocated_gb: float | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    llmtui_version: str | None = None
    #: The scoring rules' version (engine.results.scoring.EXTRACTOR_VERSION) at evaluation time.
    extractor_version: int | None = None
    #: The prompt format record and the evaluation settings as written (for the comparability guard).
    prompt_format: dict[str, Any] | None = None
    eval_config: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def quant_tag(self) -> str | None:
        tag = self.quantization.get("quant_tag") or self.quantization.get("method")
        return tag if isinstance(tag, str) else None

    def dataset(self, name_or_file: str) -> DatasetResult | None:
        """The result for a test set given by file name (``test-boolq.parquet``) or name (``boolq``)."""
        found = self.datasets.get(name_or_file)
        if found is None:
            found = next((d for d in self.datasets.values() if d.name == name_or_file), None)
        return found
