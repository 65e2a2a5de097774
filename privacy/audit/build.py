"""Turning the canary and membership results into reports (checks, claims, figures).

An audited lower bound above the claimed epsilon means the run leaks more than it claims: the
check fails (the noise was off, or the accounting is wrong). An estimate (client canaries) is
held to the same rule. Membership inference has no claim to compare with when the run used no
DP; its check is then that the attack does no better than chance beyond its interval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .canaries import ClientCanaryResult, ExampleCanaryResult
from .mia import AttackMetrics, plot_roc
from .report import AuditReport, Check

__all__ = ["canary_report", "mia_report", "plot_canaries"]


def plot_canaries(out: Path, example: ExampleCanaryResult | None,
                  client: ClientCanaryResult | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    if example is not None:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        s, inc = example.scores, example.included
        bins = np.linspace(float(s.min()), float(s.max()) + 1e-9, 50)
        ax.hist(s[inc], bins=bins, alpha=0.6, label=f"included ({int(inc.sum())})",
                color="tab:red")
        ax.hist(s[~inc], bins=bins, alpha=0.6, label=f"left out ({int((~inc).sum())})",
                color="tab:blue")
        ax.set_xlabel("canary score (loss of a blank input minus the canary's loss)")
        ax.set_ylabel("canaries")
        ax.set_title(f"Example level: lower bound {example.lower_bound:.3f} vs claimed "
                     f"{example.claimed_epsilon:.3f} ({example.right}/{example.guesses} right)",
                     fontsize=9.5)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.25)
        fig.tight_layout()
        fig.savefig(out / "canaries_example.png", dpi=110)
        plt.close(fig)
        names.append("canaries_example.png")
    if client is not None:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        both = np.concatenate([client.cos_in, client.cos_out])
        bins = np.linspace(float(both.min()), float(both.max()) + 1e-12, 40)
        ax.hist(client.cos_out, bins=bins, alpha=0.6, density=True, color="tab:blue",
                label=f"never inserted ({client.unobserved})")
        ax.hist(client.cos_in, bins=bins, alpha=0.6, density=True, color="tab:red",
                label=f"inserted canary clients ({client.inserted})")
        from scipy import stats

        x = np.linspace(bins[0], bins[-1], 300)
        ax.plot(x, stats.norm.pdf(x, client.mean_out, client.std_out), color="tab:blue")
        ax.plot(x, stats.norm.pdf(x, client.mean_in, client.std_in), color="tab:red")
        ax.set_xlabel("cosine(final model update, canary direction)")
        ax.set_ylabel("density")
        ax.set_title(f"Client level: estimate {client.estimate:.3f} at delta {client.delta:g}",
                     fontsize=9.5)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.25)
        fig.tight_layout()
        fig.savefig(out / "canaries_client.png", dpi=110)
        plt.close(fig)
        names.append("canaries_client.png")
    return names


def _claim_check(name: str, audited: float, claimed: float | None, what: str) -> Check:
    if claimed is None or (isinstance(claimed, float) and math.isnan(claimed)):
        return Check(name, False, f"{what} {audited:.4g}, but the run claims no epsilon to "
                     "compare it with", defect="noise switched off while epsilon is claimed")
    ok = audited <= claimed * (1 + 1e-9)
    return Check(name, ok, f"{what} {audited:.4g} {'<=' if ok else '>'} claimed "
                 f"{claimed:.4g}" + ("" if ok else ": the run leaks more than it claims "
                                     "(noise off, or the accounting is wrong)"),
                 defect="noise switched off while epsilon is claimed")


def canary_report(example: ExampleCanaryResult | None, client: Any | None, *,
                  subject: str, figures: list[str], confidence: float) -> AuditReport:
    report = AuditReport(kind="canaries", title="Empirical privacy audit with canaries",
                         subject=subject, figures=figures)
    if example is not None:
        report.claimed["example-level epsilon (DP-SGD at one site)"] = example.claimed_epsilon
        report.claimed["example-level delta"] = example.delta
        report.measured["example-level lower bound"] = example.lower_bound
        report.measured["example-level guesses (right/made of m)"] = (
            f"{example.right}/{example.guesses} of {example.canaries}")
        report.measured["example-level thresholds"] = example.thresholds
        report.measured["example-level counts tried"] = example.tried
        report.measured["example-level DP-SGD event"] = example.event
        report.checks.append(_claim_check(
            "example-level bound within claim", example.lower_bound, example.claimed_epsilon,
            f"lower bound (Steinke et al. 2023, confidence {confidence:g})"))
    if client is not None:
        e = client.estimate
        report.claimed["client-level epsilon (the federated run)"] = client.claimed_epsilon
        report.claimed["client-level delta"] = client.delta
        report.measured["client-level estimate (Andrew et al.)"] = e.estimate
        report.measured["cosines inserted (mean, sd)"] = [e.mean_in, e.std_in]
        report.measured["cosines never inserted (mean, sd)"] = [e.mean_out, e.std_out]
        report.measured["rounds"] = client.rounds
        report.checks.append(_claim_check(
            "client-level estimate within claim", e.estimate, client.claimed_epsilon,
            "one-shot estimate"))
    report.notes += [
        "A lower bound is what the run provably leaks at least (with the stated confidence); "
        "it must lie at or below the claimed epsilon. A bound above the claim proves the "
        "claim false.",
        "The example-level bound comes from one DP-SGD run at one site with canary records "
        "(each included with probability 1/2); the client-level figure is an estimate (not "
        "a bound) from canary clients inside the real secure sum.",
        "A bound far below the claim is expected: DP accounting is worst case, and one run "
        "with black-box scores sees only part of it.",
    ]
    return report


def mia_report(attacks: list[AttackMetrics], *, subject: str, claimed: float | None,
               delta: float, out: Path, members: int, nonmembers: int,
               shadows: int) -> AuditReport:
    plot_roc(attacks, out / "mia_roc.png", title=f"Membership inference ({members} members, "
             f"{nonmembers} non-members)")
    report = AuditReport(kind="mia", title="Membership-inference audit", subject=subject,
                         figures=["mia_roc.png"])
    report.claimed["client-level epsilon"] = claimed
    report.claimed["delta"] = delta if claimed is not None else None
    for a in attacks:
        report.measured[a.name] = a.to_dict()
    for a in attacks:
        # With (eps, delta)-DP, TPR <= e^eps * FPR + delta at every threshold (Kairouz et al.
        # 2015): the attack's best low-FPR point bounds eps from below.
        fpr, tpr = a.fpr, a.tpr
        ok = (fpr > 0) & (tpr > (delta if claimed is not None else 0))
        implied = float(np.max(np.log((tpr[ok] - (delta if claimed else 0)) / fpr[ok]))) \
            if ok.any() else 0.0
        implied = max(0.0, implied)
        report.measured[f"{a.name}: epsilon implied by the ROC (point estimate)"] = implied
        if claimed is not None:
            report.checks.append(Check(
                f"{a.name} within claim", a.tpr_1pct_interval[0] <= math.exp(claimed) * 0.01
                + delta, f"TPR at 1% FPR {a.tpr_1pct:.3g} (95% interval "
                f"{a.tpr_1pct_interval[0]:.3g}–{a.tpr_1pct_interval[1]:.3g}); claimed epsilon "
                f"allows up to {min(1.0, math.exp(claimed) * 0.01 + delta):.3g}",
                defect="a model that leaks membership beyond its claim"))
        else:
            report.checks.append(Check(
                f"{a.name} reported", True, f"AUC {a.auc:.3f} (95% {a.auc_interval[0]:.3f}–"
                f"{a.auc_interval[1]:.3f}); TPR at 1% FPR {a.tpr_1pct:.3g}; no epsilon is "
                "claimed, so there is nothing to hold it to"))
    report.notes += [
        "AUC 0.5 and TPR equal to FPR are chance. What matters is the TPR at low FPR: how many "
        "patients an attacker can name as members while rarely naming a non-member.",
        "Intervals are 95% bootstrap intervals over members and non-members.",
        "Shadow models (offline LiRA) are trained on the public split, which holds no target.",
    ]
    return report
