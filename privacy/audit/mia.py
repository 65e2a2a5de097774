"""``audit mia``: membership inference against a trained model, from its outputs only.

Two attacks on per-example outputs (the caller trains the models; this module only scores):

* **loss threshold** (Yeom et al. 2018): a lower loss says "member"; score = -loss.
* **offline LiRA** (Carlini et al. 2022, "Membership Inference Attacks From First
  Principles", the offline variant): shadow models trained on population data that excludes
  the targets give, per target, the distribution of its logit-scaled confidence
  phi = log(p / (1 - p)) on the true label when it is *out*; a Gaussian is fitted to it (a
  global variance when shadows are few, as the paper advises) and the score is the one-sided
  z-score (phi - mu_out) / sigma_out.

:func:`attack_metrics` gives the AUC and the TPR at 1% and 0.1% FPR, each with a bootstrap
interval (members and non-members resampled separately); :func:`plot_roc` draws the ROC on
log-log axes, where the low-FPR regime that matters is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError

__all__ = ["AttackMetrics", "attack_metrics", "logit_confidence", "lira_offline_scores",
           "plot_roc", "roc", "tpr_at_fpr"]


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) from raw logits, computed stably."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ConfigurationError("logits must be (n, classes) and labels (n,)")
    z = z - z.max(axis=1, keepdims=True)
    true = z[np.arange(z.shape[0]), y]
    others = z.copy()
    others[np.arange(z.shape[0]), y] = -np.inf
    log_rest = np.logaddexp.reduce(others, axis=1)
    return true - log_rest


def lira_offline_scores(target_phi: np.ndarray, shadow_phi: np.ndarray) -> np.ndarray:
    """Offline LiRA scores; ``shadow_phi`` is (shadows, n) from OUT models only."""
    s = np.asarray(shadow_phi, dtype=np.float64)
    t = np.asarray(target_phi, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != t.size or s.shape[0] < 2:
        raise ConfigurationError("shadow_phi must be (shadows >= 2, n) for n targets")
    mu = s.mean(axis=0)
    # Few shadows: one variance for every example (Carlini et al. 2022, section VI-B).
    sigma = float(np.sqrt(np.mean(s.var(axis=0, ddof=1)))) + 1e-12
    return (t - mu) / sigma


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every threshold, higher score = member."""
    from sklearn.metrics import roc_curve

    scores = np.concatenate([member_scores, nonmember_scores])
    truth = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    fpr, tpr, _ = roc_curve(truth, scores)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR of a threshold whose FPR is at most ``target``."""
    ok = fpr <= target + 1e-15
    return float(tpr[ok].max()) if ok.any() else 0.0


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.trapezoid(tpr, fpr))


@dataclass
class AttackMetrics:
    name: str
    members: int
    nonmembers: int
    auc: float
    auc_interval: tuple[float, float]
    tpr_1pct: float
    tpr_1pct_interval: tuple[float, float]
    tpr_01pct: float
    tpr_01pct_interval: tuple[float, float]
    fpr: np.ndarray
    tpr: np.ndarray

    def to_dict(self) -> dict:
        return {"attack": self.name, "members": self.members, "nonmembers": self.nonmembers,
                "auc": self.auc, "auc_95": list(self.auc_interval),
                "tpr_at_1pct_fpr": self.tpr_1pct, "tpr_at_1pct_fpr_95": list(self.tpr_1pct_interval),
                "tpr_at_0.1pct_fpr": self.tpr_01pct,
                "tpr_at_0.1pct_fpr_95": list(self.tpr_01pct_interval)}


def attack_metrics(name: str, member_scores: np.ndarray, nonmember_scores: np.ndarray, *,
                   bootstrap: int = 200, seed: int = 0) -> AttackMetrics:
    """AUC and TPR at 1% / 0.1% FPR with 95% bootstrap intervals."""
    a = np.asarray(member_scores, dtype=np.float64)
    b = np.asarray(nonmember_scores, dtype=np.float64)
    if a.size < 2 or b.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigurationError("need at least two finite member and non-member scores")
    fpr, tpr = roc(a, b)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        f, t = roc(rng.choice(a, a.size), rng.choice(b, b.size))
        draws.append((_auc(f, t), tpr_at_fpr(f, t, 0.01), tpr_at_fpr(f, t, 0.001)))
    d = np.asarray(draws)

    def ci(j: int) -> tuple[float, float]:
        return float(np.quantile(d[:, j], 0.025)), float(np.quantile(d[:, j], 0.975))

    return AttackMetrics(name=name, members=a.size, nonmembers=b.size, auc=_auc(fpr, tpr),
                         auc_interval=ci(0), tpr_1pct=tpr_at_fpr(fpr, tpr, 0.01),
                         tpr_1pct_interval=ci(1), tpr_01pct=tpr_at_fpr(fpr, tpr, 0.001),
                         tpr_01pct_interval=ci(2), fpr=fpr, tpr=tpr)


def plot_roc(results: list[AttackMetrics], path: str | Path, *, title: str) -> Path:
    """Log-log ROC curves of ``results`` with the chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    floor = 1.0 / max(max(r.nonmembers for r in results), 1) / 2
    grid = np.logspace(math.log10(floor), 0, 100)
    ax.plot(grid, grid, ":", color="gray", lw=1, label="chance")
    for r in results:
        f = np.clip(r.fpr, floor, 1)
        t = np.clip(r.tpr, floor, 1)
        ax.plot(f, t, lw=1.6, label=f"{r.name} (AUC {r.auc:.3f}, TPR@1% {r.tpr_1pct:.3f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.axvline(0.01, color="black", lw=0.6, ls="--")
    ax.axvline(0.001, color="black", lw=0.6, ls="--")
    ax.set_xlabel("false positive rate (log)")
    ax.set_ylabel("true positive rate (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="lower right")
    ax.grid(alpha=0.25, which="both")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
