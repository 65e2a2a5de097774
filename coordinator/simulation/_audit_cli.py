"""``cohort audit canaries`` and ``cohort audit mia`` (also ``python -m privacy audit …``).

They train the consortium's models, so they live beside the simulation (which may import the
sites); the statistics and the report are ``privacy.audit``'s. Only the CLI layer is imported
when this module loads: torch, the sites and the simulation load when a command runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from cohort.errors import EXIT_CODES_HELP, Command
from cohort.options import Integer, Real, refuse

__all__ = ["canaries", "mia"]

_DATASETS = ("breast_cancer", "digits")


def _consortium_options(f):
    options = [
        click.option("--dataset", type=click.Choice(_DATASETS), default="breast_cancer",
                     help="The consortium's data set (classification)."),
        click.option("--sites", type=Integer(min=2, max=1000), default=5,
                     help="Hospitals in the consortium."),
        click.option("--rounds", type=Integer(min=1, max=100_000), default=30,
                     help="Training rounds of the federated run."),
        click.option("--local-epochs", type=Integer(min=1, max=10_000), default=2,
                     help="Local epochs per round."),
        click.option("--dp", type=click.Choice(["none", "central", "distributed", "local"]),
                     default="distributed", help="Client-level DP of the federated run."),
        click.option("--noise-multiplier", type=Real(min=1e-3, max=1e6), default=1.0,
                     help="Client-level noise multiplier."),
        click.option("--seed", type=Integer(), default=0, help="Seed of data, models, canaries."),
        click.option("--out", type=click.Path(path_type=Path), required=True,
                     help="Folder for audit.json, audit.html and the figures."),
        click.option("--json", "as_json", is_flag=True, default=False,
                     help="Print audit.json on stdout instead of the verdict lines."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _config(p: dict[str, Any], **extra):
    from clients import DatasetName
    from privacy import Mechanism

    from .config import SimulationConfig

    modes = {"none": Mechanism.NONE, "central": Mechanism.CENTRAL_GAUSSIAN,
             "distributed": Mechanism.DISTRIBUTED, "local": Mechanism.LOCAL}
    dp = modes[p["dp"]]
    return SimulationConfig(dataset=DatasetName(p["dataset"]), sites=p["sites"],
                            rounds=p["rounds"], local_epochs=p["local_epochs"], dp=dp,
                            noise_multiplier=p["noise_multiplier"] if dp is not Mechanism.NONE
                            else 1.0, baselines=False, seed=p["seed"], **extra)


def _finish(report, out: Path, as_json: bool) -> int:
    from privacy.__main__ import print_verdict
    from privacy.audit import write_report

    paths = write_report(report, out)
    if as_json:
        print(paths[0].read_text(), end="")
    else:
        print_verdict(report, paths)
    return 0 if report.passed else 1


@click.command(cls=Command, epilog=f"""\b
Examples:
  cohort audit canaries --out audits/canaries
  cohort audit canaries --level example --canaries 1000 --guesses 100 --out audits/ex
  cohort audit canaries --level client --client-canaries 20 --out audits/cl

Example level (Steinke, Nasr, Jagielski 2023): one DP-SGD run at one site with --canaries
canary records, each included with probability 1/2; guesses on the top and bottom --guesses
scores (fixed in advance), or the best of --guess-grid with a Bonferroni correction; the
lower bound from the binomial tail with the delta term. Client level (Andrew et al.): canary
clients with random directions inside the real secure sum of the federated run; the cosine
statistic and its epsilon estimate. The verdict FAILs if an audited figure exceeds the claim.

{EXIT_CODES_HELP} A FAIL verdict exits 1.""")
@_consortium_options
@click.option("--level", type=click.Choice(["example", "client", "both"]), default="both",
              help="Which audit: DP-SGD at a site, the federated run, or both.")
@click.option("--canaries", "m", type=Integer(min=2, max=100_000), default=1000,
              help="Example level: canary records m.")
@click.option("--guesses", type=Integer(min=1), default=None,
              show_default="none: the --guess-grid is used",
              help="Example level: guesses on each side, fixed before the scores are seen.")
@click.option("--guess-grid", default="10,25,50,100,250,500",
              help="Example level: guesses per side to try (Bonferroni-corrected).")
@click.option("--confidence", type=Real(min=0.5, max=1.0, max_open=True), default=0.95,
              help="Confidence of the lower bound.")
@click.option("--dp-sgd-noise-multiplier", type=Real(min=1e-3, max=1e6), default=1.0,
              help="Example level: DP-SGD noise multiplier.")
@click.option("--dp-sgd-max-grad-norm", type=Real(min=0.0, min_open=True), default=1.0,
              help="Example level: per-record clip.")
@click.option("--site", type=Integer(min=1), default=1, help="Example level: which site (1-based).")
@click.option("--client-canaries", type=Integer(min=2, max=10_000), default=20,
              help="Client level: canary clients inserted into the secure sum.")
@click.option("--unobserved", type=Integer(min=2, max=1_000_000), default=1000,
              help="Client level: random directions never inserted (the null).")
def canaries(**p: Any) -> int:
    """Empirical lower bound (example level) and estimate (client level) of epsilon."""
    from clients import DPSGDConfig
    from privacy.audit import canary_report, plot_canaries

    from .audit_runs import client_canaries, example_canaries

    grid = None
    if p["guesses"] is None:
        try:
            grid = [int(x) for x in p["guess_grid"].split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(f"{p['guess_grid']!r} is not a list of integers",
                                     param_hint="'--guess-grid'") from None
        grid = [k for k in grid if 2 * k <= p["m"]] or None
        if grid is None:
            refuse(f"--guess-grid has no count of at most {p['m'] // 2} (half of --canaries)")
    elif 2 * p["guesses"] > p["m"]:
        refuse(f"--guesses {p['guesses']} needs at least {2 * p['guesses']} --canaries")
    if p["site"] > p["sites"]:
        refuse(f"--site {p['site']} is beyond --sites {p['sites']}")
    if p["level"] != "example" and p["dp"] == "none":
        refuse("the client-level audit needs a DP run to hold to its claim (--dp)")
    progress = not p["as_json"] and sys.stderr.isatty()
    start = time.perf_counter()
    out = Path(p["out"])
    out.mkdir(parents=True, exist_ok=True)
    example = client = None
    if p["level"] in ("example", "both"):
        config = _config(p, dp_sgd=DPSGDConfig(noise_multiplier=p["dp_sgd_noise_multiplier"],
                                               max_grad_norm=p["dp_sgd_max_grad_norm"]))
        example = example_canaries(config, site=p["site"] - 1, canaries=p["m"],
                                   guesses=p["guesses"], guess_grid=grid,
                                   confidence=p["confidence"], seed=p["seed"],
                                   progress=progress)
    if p["level"] in ("client", "both"):
        client = client_canaries(_config(p), inserted=p["client_canaries"],
                                 unobserved=p["unobserved"], seed=p["seed"],
                                 work_dir=out / "run", progress=progress)
    figures = plot_canaries(out, example, client.estimate if client is not None else None)
    subject = (f"{p['dataset']}, {p['sites']} sites, {p['rounds']} rounds x "
               f"{p['local_epochs']} local epochs, seed {p['seed']}")
    report = canary_report(example, client, subject=subject, figures=figures,
                           confidence=p["confidence"])
    report.seconds = time.perf_counter() - start
    return _finish(report, out, p["as_json"])


@click.command(cls=Command, epilog=f"""\b
Examples:
  cohort audit mia --out audits/mia
  cohort audit mia --dp none --shadows 8 --out audits/mia-nodp

Trains the federated run, then attacks its final global model: the sites' training records
are the members, the test split the non-members. Loss threshold and offline LiRA (shadow
models on the public split); AUC and TPR at 1% and 0.1% FPR with 95% bootstrap intervals, and
a log-scale ROC (mia_roc.png).

{EXIT_CODES_HELP} A FAIL verdict exits 1.""")
@_consortium_options
@click.option("--shadows", type=Integer(min=2, max=256), default=4,
              help="Shadow models of offline LiRA.")
@click.option("--bootstrap", type=Integer(min=10, max=100_000), default=200,
              help="Bootstrap resamples of each interval.")
def mia(**p: Any) -> int:
    """Membership inference on the run's trained model: loss threshold and offline LiRA."""
    from privacy.audit import mia_report

    from .audit_runs import membership_inference

    start = time.perf_counter()
    out = Path(p["out"])
    out.mkdir(parents=True, exist_ok=True)
    run = membership_inference(_config(p), shadows=p["shadows"], bootstrap=p["bootstrap"],
                               seed=p["seed"], work_dir=out / "run",
                               progress=not p["as_json"] and sys.stderr.isatty())
    subject = (f"{p['dataset']}, {p['sites']} sites, {p['rounds']} rounds, dp {p['dp']}, "
               f"seed {p['seed']}; final accuracy {run.final_accuracy}")
    report = mia_report(run.attacks, subject=subject, claimed=run.claimed_epsilon,
                        delta=run.delta, out=out, members=run.members,
                        nonmembers=run.nonmembers, shadows=run.shadows)
    report.seconds = time.perf_counter() - start
    return _finish(report, out, p["as_json"])
