"""``audit mia``: the attack metrics on known score sets, LiRA's scoring, the ROC plot and
the report; the command end to end on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.audit import attack_metrics, lira_offline_scores, logit_confidence, mia_report
from privacy.audit.mia import tpr_at_fpr



def test_perfect_separation() -> None:
    m = attack_metrics("x", np.arange(100, 200.0), np.arange(0, 100.0), bootstrap=20)
    assert m.auc == 1.0 and m.tpr_1pct == 1.0 and m.tpr_01pct == 1.0


def test_identical_distributions_are_chance() -> None:
    rng = np.random.default_rng(0)
    m = attack_metrics("x", rng.normal(size=3000), rng.normal(size=3000), bootstrap=50)
    assert abs(m.auc - 0.5) < 0.03 and m.auc_interval[0] < m.auc < m.auc_interval[1]
    assert m.tpr_1pct < 0.03


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), shift=st.floats(0, 3))
def test_metrics_are_probabilities_and_intervals_bracket(seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    m = attack_metrics("x", rng.normal(shift, 1, 200), rng.normal(0, 1, 200), bootstrap=30,
                       seed=seed)
    for value, (lo, hi) in ((m.auc, m.auc_interval), (m.tpr_1pct, m.tpr_1pct_interval)):
        assert 0 <= lo <= hi <= 1 and 0 <= value <= 1
    assert m.tpr_01pct <= m.tpr_1pct + 1e-12
    assert tpr_at_fpr(m.fpr, m.tpr, 1.0) == 1.0


def test_logit_confidence_matches_the_definition() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    phi = logit_confidence(logits, np.array([0, 2]))
    assert phi == pytest.approx(np.log(p[[0, 1], [0, 2]] / (1 - p[[0, 1], [0, 2]])))


def test_lira_scores_members_above_their_out_distribution() -> None:
    rng = np.random.default_rng(1)
    shadows = rng.normal(0, 1, size=(4, 400))
    target = shadows.mean(0) + np.r_[np.full(200, 2.0), np.zeros(200)]
    s = lira_offline_scores(target, shadows)
    assert s[:200].mean() > s[200:].mean() + 1.0


def test_report_and_log_roc(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    attacks = [attack_metrics("loss threshold", rng.normal(0.5, 1, 300), rng.normal(0, 1, 300),
                              bootstrap=20)]
    report = mia_report(attacks, subject="t", claimed=None, delta=1e-5, out=tmp_path,
                        members=300, nonmembers=300, shadows=2)
    assert (tmp_path / "mia_roc.png").read_bytes()[:4] == b"\x89PNG"
    assert report.passed and "loss threshold" in report.measured
    # A claim the attack beats is a failure: epsilon 0.01 allows TPR ~1% at 1% FPR.
    strong = [attack_metrics("loss threshold", rng.normal(4, 1, 300), rng.normal(0, 1, 300),
                             bootstrap=20)]
    bad = mia_report(strong, subject="t", claimed=0.01, delta=1e-5, out=tmp_path, members=300,
                     nonmembers=300, shadows=2)
    assert [c.name for c in bad.failed()] == ["loss threshold within claim"]


def test_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m"
    from cohort.registry import main

    code = main(["audit", "mia", "--sites", "3",
                           "--rounds", "2", "--local-epochs", "1", "--dp", "none",
                           "--shadows", "2", "--bootstrap", "20", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    data = json.loads((out / "audit.json").read_text())
    assert data["audit"] == "mia" and len([k for k in data["measured"] if "LiRA" in k]) >= 1
    assert (out / "mia_roc.png").exists() and (out / "audit.html").exists()
