"""Power of a paired accuracy comparison: hand-computed values, a simulation that reaches the stated power,
and ``llmtui power`` with D given, defaulted and estimated from parent → child predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.files import write_json
from engine.results.stats import DEFAULT_DISCORDANCE, detectable_difference, items_needed
from engine.workspace import Workspace
from metrics_fixtures import boxed, write_evaluation
from tui.cli.main import main

Z_975 = 1.959963984540054  # z(1 - 0.05 / 2)
Z_80 = 0.8416212335729143  # z(0.8)


def test_hand_computed_values():
    # n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2 with d = 0.05, psi = 0.2:
    # (1.95996 * 0.447214 + 0.841621 * 0.444410)^2 / 0.0025 = 1.250546^2 / 0.0025 = 625.5 → 626
    assert items_needed(0.05, 0.2) == 626
    # d = sqrt(psi) (z_a sqrt(n) + z_b sqrt(n - z_a^2 + z_b^2)) / (n + z_b^2), n = 1000, psi = 0.1:
    # 0.316228 * (61.9806 + 26.5733) / 1000.7083 = 0.027983
    assert detectable_difference(1000, 0.1) == pytest.approx(0.027983, abs=1e-6)
    # Stricter alpha and more power need more items; both round-trip.
    assert items_needed(0.05, 0.2, alpha=0.01, power=0.9) > 626
    for n in (50, 300, 5000):
        delta = detectable_difference(n, 0.3)
        assert items_needed(delta, 0.3) == n
    # Closed form against its definition at another point.
    delta = detectable_difference(400, 0.15, alpha=0.01, power=0.9)
    z_a, z_b = 2.5758293035489004, 1.2815515655446004
    assert (z_a * math.sqrt(0.15) + z_b * math.sqrt(0.15 - delta ** 2)) ** 2 / delta ** 2 == pytest.approx(400)


def test_impossible_requests():
    assert detectable_difference(10, 0.05) is None  # needs more than the 5 % of items that can differ
    with pytest.raises(ValueError, match="at most the discordance"):
        items_needed(0.3, 0.2)
    with pytest.raises(ValueError, match="discordance"):
        detectable_difference(100, 0)
    with pytest.raises(ValueError, match="alpha"):
        items_needed(0.05, 0.2, alpha=1.5)


@pytest.mark.parametrize("n, psi", [(626, 0.2), (300, 0.12)])
def test_simulated_paired_samples_reach_the_stated_power(n, psi):
    """4,000 simulated comparisons at the detectable difference: McNemar's (normal) test rejects in about
    80 % of them (binomial standard error 0.6 points; tolerance 3 points)."""
    delta = detectable_difference(n, psi)
    rng = np.random.default_rng(12)
    # Per item: only A right with probability (psi - delta) / 2, only B right (psi + delta) / 2.
    counts = rng.multinomial(n, [(psi - delta) / 2, (psi + delta) / 2, 1 - psi], size=4000)
    b, c = counts[:, 0], counts[:, 1]
    z = np.divide(c - b, np.sqrt(b + c), out=np.zeros(len(b)), where=(b + c) > 0)
    rejected = np.abs(z) > Z_975
    assert rejected.mean() == pytest.approx(0.8, abs=0.03)
    # With no real difference the same test rejects about 5 % of the time.
    null = rng.multinomial(n, [psi / 2, psi / 2, 1 - psi], size=4000)
    z0 = np.divide(null[:, 1] - null[:, 0], np.sqrt(null[:, 0] + null[:, 1]), out=np.zeros(4000),
                   where=null[:, :2].sum(axis=1) > 0)
    assert (np.abs(z0) > Z_975).mean() == pytest.approx(0.05, abs=0.015)


def test_cli_items_and_difference(tmp_path, capsys):
    ws = Workspace(tmp_path / "ws").init()
    assert main(["-w", str(ws.root), "power", "--items", "1000", "--discordance", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "1000 items: minimum detectable accuracy difference 0.0280 (2.80 points" in out
    assert "D = 0.1 (given)" in out
    assert main(["-w", str(ws.root), "power", "--difference", "0.05", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["items"] == 626 and data["discordance"] == DEFAULT_DISCORDANCE
    assert "the default" in data["discordance_source"]
    with pytest.raises(SystemExit):
        main(["-w", str(ws.root), "power", "--difference", "0.5", "--discordance", "0.2"])
    assert "at most the discordance" in capsys.readouterr().err


def make_model(ws: Workspace, name: str, *, base: str | None = None, source: str | None = None) -> None:
    folder = ws.models_dir / name
    folder.mkdir(parents=True)
    write_json(folder / "config.json", {"model_type": "qwen3"})
    if base:
        write_json(folder / "training_metadata.json", {"model_info": {"base_model": f"Models/{base}"}})
    if source:
        write_json(folder / "quantization_metadata.json", {"method": "HQQ", "quant_tag": "HQQ_w4",
                                                           "source_model": source})


def test_cli_estimates_discordance_from_parent_child_predictions(tmp_path, capsys):
    ws = Workspace(tmp_path / "ws").init()
    make_model(ws, "base")
    make_model(ws, "tuned", base="base")
    make_model(ws, "tuned-q4", source="tuned")  # not evaluated yet: the plan is for it
    golds = [i % 2 == 0 for i in range(40)]
    right_base = [i % 4 != 0 for i in range(40)]  # 30 right
    right_tuned = [i % 5 != 0 for i in range(40)]  # 32 right
    for name, right in (("base", right_base), ("tuned", right_tuned)):
        write_evaluation(ws, name, {"test-boolq.parquet": [boxed(g if r else not g) for g, r in zip(golds, right)]},
                         {"test-boolq.parquet": golds})
    discordant = sum(a != b for a, b in zip(right_base, right_tuned))
    assert main(["-w", str(ws.root), "power", "--items", "500", "--models", "tuned-q4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["discordance"] == pytest.approx(discordant / 40)
    assert data["pairs"] == ["base → tuned"]
    assert data["difference"] == pytest.approx(detectable_difference(500, discordant / 40))
