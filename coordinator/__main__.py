"""Command line of the coordinator: ``cohort simulate`` (also ``python -m coordinator simulate``);
``cohort provision`` is in :mod:`._provision_cli`.

A simulated hospital consortium training with secure aggregation (and optional differential
privacy). The order is what makes it safe: every flag, the data set and its partition are
checked first, and nothing is created until they pass; the run writes into a hidden folder
beside ``--out`` that is renamed into place at the end, so ``--out`` is either a complete run or
exactly what it was. Ctrl-C finishes the round in flight (a second Ctrl-C stops at once), then
writes ``summary.json`` (``stopped: "interrupted at round N"``) and ``rounds.png``, and exits 130.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from cohort.errors import EXIT_CODES_HELP, Command, ExitCode
from cohort.options import Integer, Real, given, refuse

from ._provision_cli import provision
from ._serve_cli import serve
from ._status_cli import status

# The range privacy.events.NOISE_MULTIPLIER_RANGE accepts (literal here so that --help does
# not import torch; a test keeps the two equal).
NOISE_MULTIPLIER_RANGE = (1e-3, 1e6)

__all__ = ["simulate", "provision", "serve", "status", "main"]

_DATASETS = ("breast_cancer", "digits", "diabetes")
_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi",
               "distillation", "fedper", "fedrep")
_PARTITIONS = ("iid", "label_dirichlet", "quantity_dirichlet", "quantity_lognormal")
_MODELS = ("logistic", "mlp", "cnn")
# Older spellings, still accepted; the summary records the canonical name.
_PARTITION_ALIASES = {"dirichlet": "label_dirichlet", "quantity": "quantity_dirichlet",
                      "lognormal": "quantity_lognormal"}
_STRATEGY_ALIASES = {"distill": "distillation", "personalized": "fedper"}
_RUN_FILES = ("summary.json", "metrics.jsonl", "rounds.png", "ledgers.sqlite",
              "secagg_rounds.jsonl", "transcripts")


class _Choice(click.Choice):
    """A choice that also takes older spellings (``dirichlet`` for ``label_dirichlet``)."""

    def __init__(self, choices: tuple[str, ...], aliases: dict[str, str]) -> None:
        super().__init__(choices)
        self.aliases = aliases

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value in self.aliases:
            return value  # resolved by the command, which may need the spelling
        return super().convert(value, param, ctx)


def _models(ctx: click.Context, model: str, models: str | None) -> tuple[str, ...]:
    if models is None:
        return (model,)
    if given(ctx, "model"):
        refuse("give either --model or --models, not both")
    names = tuple(m.strip() for m in models.split(","))
    unknown = [m for m in names if m not in _MODELS]
    if unknown or not names:
        raise click.BadParameter(f"{models!r}: {', '.join(map(repr, unknown)) or 'nothing'} is "
                                 f"not one of {', '.join(_MODELS)}", param_hint="'--models'")
    return names


def _strategy(ctx: click.Context, strategy: str, personal_mode: str | None) -> str:
    if personal_mode is not None and strategy != "personalized":
        refuse("--personal-mode applies only with --strategy personalized (or say "
               "--strategy fedper / fedrep)")
    if strategy == "personalized":
        return personal_mode or "fedper"
    return _STRATEGY_ALIASES.get(strategy, strategy)


def _check_applies(ctx: click.Context, p: dict[str, Any], strategy: str,
                   models: tuple[str, ...], bundled: bool) -> None:
    """Refuse every flag that would be ignored by what else was asked."""
    dp = p["dp"] != "none"
    for name in ("noise_multiplier", "delta"):
        if given(ctx, name) and not dp:
            refuse(f"--{name.replace('_', '-')} applies only with --dp central, distributed or "
                   f"local (this run has --dp {p['dp']}: no noise, no epsilon)")
    if given(ctx, "alpha") and p["partition"] not in ("label_dirichlet", "quantity_dirichlet"):
        refuse(f"--alpha applies only with --partition label_dirichlet or quantity_dirichlet, "
               f"not {p['partition']}")
    if given(ctx, "prox_mu") and strategy != "fedprox":
        refuse(f"--prox-mu applies only with --strategy fedprox, not {strategy}")
    if given(ctx, "server_lr") and strategy == "distillation":
        refuse("--server-lr does not apply to --strategy distillation: there is no server model")
    if given(ctx, "hidden") and set(models) == {"logistic"}:
        refuse("--hidden does not apply to --model logistic (it has no hidden layer)")
    for name in ("ray_address", "ray_actors"):
        if given(ctx, name) and p["backend"] != "ray":
            refuse(f"--{name.replace('_', '-')} applies only with --backend ray")
    if p["clients_per_round"] is not None and p["sample_rate"] is not None:
        refuse("give --clients-per-round (K of N) or --sample-rate (Poisson), not both")
    if p["clients_per_round"] is not None and p["clients_per_round"] > p["sites"]:
        refuse(f"--clients-per-round {p['clients_per_round']} is more than --sites "
               f"{p['sites']}")
    if p["assume_secret_sampling"] and (p["sample_rate"] is None or not dp):
        refuse("--assume-secret-sampling applies only with --sample-rate (Poisson sampling, "
               "whose amplification bound is used) and --dp")
    if (p["clients_per_round"] is not None or p["sample_rate"] is not None) and \
            strategy == "distillation":
        refuse("sampled rounds apply to shared-model training, not --strategy distillation")
    if p["backend"] == "ray":
        if strategy in ("distillation", "fedper", "fedrep"):
            refuse(f"--backend ray runs shared-model rounds; --strategy {strategy} runs in "
                   "process")
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            refuse("--backend ray needs Ray: pip install -e \".[ray]\"")
    if given(ctx, "label_column") and bundled:
        refuse(f"--label-column applies only to a CSV --dataset, not to {p['dataset']}")
    if not bundled and p["label_column"] is None:
        refuse(f"a CSV --dataset ({p['dataset']}) needs --label-column")
    if given(ctx, "modulus_bits") and not p["secagg"]:
        refuse("--modulus-bits applies only to the secure sum; it does nothing with --no-secagg")
    for name in ("dp_sgd_noise_multiplier", "dp_sgd_max_grad_norm", "dp_sgd_epsilon",
                 "dp_sgd_delta"):
        if given(ctx, name) and not p["dp_sgd"]:
            refuse(f"--{name.replace('_', '-')} applies only with --dp-sgd")


def _validate_data(config) -> str:
    """Load, split and partition the data as the run will, so a bad file or a partition that
    cannot work is refused before anything is created; return the metric's label."""
    from clients import TaskKind, load_dataset, make_site_data, split_dataset

    dataset = load_dataset(config.dataset, label_column=config.label_column)
    splits = split_dataset(dataset, seed=config.seed)
    make_site_data(splits, n_sites=config.sites, scheme=config.partition,
                   alpha=config.alpha, seed=config.seed)
    return "R²" if dataset.task is TaskKind.REGRESSION else "accuracy"


class _CtrlC:
    """SIGINT while a run is on: the first asks the run to stop after the round in flight;
    the second stops at once (``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self.count = 0
        self._before: Any = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt("stopped by a second Ctrl-C")

    def requested(self) -> bool:
        return self.count > 0

    def __enter__(self) -> _CtrlC:
        self._before = signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.signal(signal.SIGINT, self._before)


def _round_line(total: int, label: str):
    def show(r) -> None:
        score = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        eps = "" if r.epsilon is None else f", epsilon {r.epsilon:.3f}"
        state = " ABORTED, nothing summed" if r.aborted else ""
        print(f"round {r.round}/{total}: {label} {score}, sites summed "
              f"{r.participants}/{r.planned}{state}{eps}", flush=True)
    return show


_EPILOG = f"""\b
Examples:
  cohort simulate --out runs/demo
  cohort simulate --dataset digits --sites 10 --alpha 0.5 --rounds 40 --out runs/digits
  cohort simulate --dp distributed --noise-multiplier 0.5 --target-epsilon 50 --out runs/dp
  cohort simulate --strategy distillation --dataset digits --sites 6 --models logistic,mlp,cnn --out runs/distill
  cohort simulate --strategy fedrep --dataset digits --alpha 0.1 --out runs/personal
  cohort simulate --transfer frozen --out runs/transfer
  cohort simulate --dataset site.csv --label-column outcome --out runs/csv
  cohort simulate --dp-sgd --dp-sgd-noise-multiplier 1.1 --dp-sgd-epsilon 8 --out runs/dpsgd
  cohort simulate --dataset digits --sites 1000 --clients-per-round 100 --model logistic --dp distributed --backend ray --out runs/scale

\b
Output files in --out (written into a hidden folder beside it, renamed at the end):
  metrics.jsonl   one JSON object per round: the score (accuracy, or r2 for regression),
                  loss, sites summed, epsilon, aborted
  summary.json    status, final score and what it measures, per-site and reference scores,
                  epsilon, rounds aborted, why the run stopped (a budget stop gives its
                  worst-case projection and the best case), the whole configuration
  rounds.png      score and loss per round with centralised and local-only references,
                  epsilon and its budget (with --dp), the student (distillation), aborted rounds
  ledgers.sqlite  the sites' privacy ledgers (every --dp or --dp-sgd run, budget or not)
  secagg_rounds.jsonl, transcripts/
                  each secure round's public facts and the coordinator's whole view of it
                  (what 'cohort audit run' checks)
  backbone.pt     the backbone pretrained on the public split (with --transfer)

A folder that holds a run is refused unless --overwrite; Ctrl-C finishes the round in flight,
writes summary.json (stopped: "interrupted at round N") and rounds.png, and exits 130. A run
whose every round aborted exits 3; one refused by a budget before its first round exits 4.

{EXIT_CODES_HELP}"""


@click.command(cls=Command, epilog=_EPILOG,
               flag_aliases={"algorithm": "--strategy", "dp_sgd": "--dp-sgd",
                             "example_epsilon": "--dp-sgd-epsilon",
                             "example_delta": "--dp-sgd-delta", "baselines": "--no-baselines",
                             "label_column": "--label-column", "dropout_rate": "--dropout-rate",
                             "clients_per_round": "--clients-per-round",
                             "sample_rate": "--sample-rate",
                             "assume_secret_sampling": "--assume-secret-sampling",
                             "ray_address": "--ray-address", "ray_actors": "--ray-actors"})
@click.option("--dataset", default="breast_cancer", metavar="NAME|CSV",
              help=f"A data set that ships with scikit-learn ({', '.join(_DATASETS)}) or the "
                   "path of a CSV file with a header row.")
@click.option("--label-column", default=None, show_default="none; required with a CSV",
              help="The label column of a CSV --dataset.")
@click.option("--sites", type=Integer(min=2, max=1_000_000), default=5,
              help="Number of sites in the consortium. Each is dealt at least 5 samples where "
                   "the data allows, else as many as it does (at least one: a population of "
                   "small sites).")
@click.option("--rounds", type=Integer(min=1, max=100_000), default=30,
              help="Training rounds.")
@click.option("--partition", type=_Choice(_PARTITIONS, _PARTITION_ALIASES),
              default="label_dirichlet",
              help="How the data is split over the sites: iid; label_dirichlet (label skew, "
                   "Dirichlet(--alpha) per class); quantity_dirichlet (site sizes "
                   "Dirichlet(--alpha)); quantity_lognormal (log-normal site sizes). The older "
                   "names dirichlet, quantity, lognormal are accepted.")
@click.option("--alpha", type=Real(min=0.0, min_open=True), default=0.5,
              help="Dirichlet concentration of the partition (small: more skew).")
@click.option("--strategy", type=_Choice(_STRATEGIES, _STRATEGY_ALIASES), default="fedavg",
              help="The federated algorithm: a server optimiser (fedavg, fedprox, fedavgm, "
                   "fedadagrad, fedadam, fedyogi), distillation (heterogeneous models), or a "
                   "personal head kept at each site (fedper, fedrep). The older names distill "
                   "and personalized (with --personal-mode) are accepted.")
@click.option("--personal-mode", type=click.Choice(["fedper", "fedrep"]), default=None,
              show_default="fedper", help="With --strategy personalized only: FedPer or FedRep.")
@click.option("--transfer", type=click.Choice(["none", "frozen", "finetune"]), default="none",
              help="Start from a backbone pretrained on the public split, frozen or fine-tuned.")
@click.option("--model", type=click.Choice(_MODELS), default="mlp",
              help="The model every site trains.")
@click.option("--models", default=None, metavar="LIST", show_default="--model for every site",
              help="Comma-separated models cycled over the sites, e.g. logistic,mlp,cnn "
                   "(different models need --strategy distillation).")
@click.option("--hidden", type=Integer(min=1, max=100_000), default=32,
              help="Width of the hidden layers (mlp, cnn).")
@click.option("--secagg/--no-secagg", default=True,
              help="Secure aggregation; --no-secagg sums the same clipped updates in the clear, "
                   "for comparison only.")
@click.option("--dp", type=click.Choice(["none", "central", "distributed", "local"]),
              default="none",
              help="Differential privacy of the released sums: none; central (the coordinator "
                   "adds discrete Gaussian noise to the modular sum before decoding); "
                   "distributed (each site adds its share of Skellam noise under the secure "
                   "sum); local (each site adds all the noise).")
@click.option("--noise-multiplier", type=Real(min=NOISE_MULTIPLIER_RANGE[0],
                                                  max=NOISE_MULTIPLIER_RANGE[1]), default=1.0,
              help="With --dp: noise standard deviation over the clip norm.")
@click.option("--clip", type=Real(min=0.0, min_open=True), default=None,
              show_default="1 with --dp, 10 without",
              help="L2 clip of each site's update (with --dp, the sensitivity).")
@click.option("--target-epsilon", type=Real(min=0.0, min_open=True), default=None,
              show_default="none: no cap",
              help="With --dp: each site's privacy budget; training stops before a round whose "
                   "worst case would exceed it.")
@click.option("--delta", type=Real(min=0.0, max=1.0, min_open=True, max_open=True),
              default=1e-5, help="With --dp: delta of the reported epsilon.")
@click.option("--local-epochs", type=Integer(min=1, max=10_000), default=2,
              help="Local epochs per round at each site.")
@click.option("--lr", type=Real(min=0.0, min_open=True), default=None,
              show_default="0.1 with SGD, 0.01 with Adam", help="Local learning rate.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None,
              show_default="sgd; adam for distillation", help="Local optimiser.")
@click.option("--batch-size", type=Integer(min=1), default=32, help="Local batch size.")
@click.option("--prox-mu", type=Real(min=0.0), default=0.01,
              help="With --strategy fedprox: weight of the proximal term.")
@click.option("--server-lr", type=Real(min=0.0, min_open=True), default=None,
              show_default="the optimiser's own: 1 for fedavg/fedprox/fedavgm, 0.01 for "
                           "fedadagrad/fedadam/fedyogi",
              help="Server learning rate of the coordinator's optimiser.")
@click.option("--dropout-rate", type=Real(min=0.0, max=1.0, max_open=True), default=0.0,
              help="Chance that a site drops before sending its masked input, per round. A "
                   "round with fewer survivors than the secure sum's threshold aborts.")
@click.option("--clients-per-round", type=Integer(min=2), default=None,
              show_default="every site",
              help="Sampled rounds: K of the sites, uniformly without replacement, each round; "
                   "the secure sum runs over the K (SecAgg+ graph from the parameter table).")
@click.option("--sample-rate", type=Real(min=0.0, max=1.0, min_open=True), default=None,
              show_default="every site",
              help="Sampled rounds, Poisson: each site takes part in a round with this "
                   "probability.")
@click.option("--assume-secret-sampling", is_flag=True, default=False,
              help="With --sample-rate and --dp: also report epsilon amplified by Poisson "
                   "sampling, valid only if who took part stays secret from whoever sees the "
                   "models (not from the coordinator, which knows). Reported beside the "
                   "default epsilon, which claims no amplification.")
@click.option("--backend", type=click.Choice(["inprocess", "ray"]), default="inprocess",
              help="Where the sites run: in this process, or in a pool of Ray actors (many "
                   "sites per actor; needs pip install -e \".[ray]\"). Same seed, same model.")
@click.option("--ray-address", default=None, show_default="a local Ray for the run",
              help="With --backend ray: the address of an existing Ray cluster.")
@click.option("--ray-actors", type=Integer(min=1, max=10_000), default=2,
              help="With --backend ray: actors in the pool (each hosts many sites).")
@click.option("--modulus-bits", type=Integer(min=1, max=64), default=None,
              show_default="chosen by the privacy encoding",
              help="Bits of the secure sum's modulus.")
@click.option("--dp-sgd", is_flag=True, default=False,
              help="Train every site's model with example-level DP-SGD (Opacus; not with "
                   "distillation). Its epsilon protects one record and is reported apart.")
@click.option("--dp-sgd-noise-multiplier", type=Real(min=NOISE_MULTIPLIER_RANGE[0],
                                                         max=NOISE_MULTIPLIER_RANGE[1]),
              default=1.0,
              help="With --dp-sgd: noise standard deviation over the per-record clip.")
@click.option("--dp-sgd-max-grad-norm", type=Real(min=0.0, min_open=True), default=1.0,
              help="With --dp-sgd: per-record gradient clip (L2).")
@click.option("--dp-sgd-epsilon", type=Real(min=0.0, min_open=True), default=None,
              show_default="none: no cap, still reported",
              help="With --dp-sgd: each site's example-level budget.")
@click.option("--dp-sgd-delta", type=Real(min=0.0, max=1.0, min_open=True, max_open=True),
              default=1e-5, help="With --dp-sgd: delta of the example-level epsilon.")
@click.option("--no-baselines", is_flag=True, default=False,
              help="Skip the local-only and centralised reference runs (faster).")
@click.option("--seed", type=Integer(), default=0,
              help="Seed of the split, partition, models, local shuffling and dropouts.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/latest"),
              help="Output folder: new, empty, or a previous run with --overwrite.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace the run already in --out (only once the new run has finished).")
@click.option("--quiet", is_flag=True, default=False,
              help="No progress and no table of rounds: only the final results and errors.")
@click.pass_context
def simulate(ctx: click.Context, **p: Any) -> int:
    """Simulate a hospital consortium training one model over secure aggregation.

    Five sites (by default) hold non-IID shares of a real data set; each round they train
    locally, mask their updates (and add noise with --dp), and the coordinator learns only
    the sum. Prints a table of rounds and writes the files below into --out.
    """
    with _CtrlC() as ctrl_c:
        return _simulate(ctx, p, ctrl_c)


def _simulate(ctx: click.Context, p: dict[str, Any], ctrl_c: _CtrlC) -> int:
    # Everything is checked before anything is created.
    bundled = p["dataset"] in _DATASETS
    if not bundled:
        path = Path(p["dataset"])
        if not path.exists():
            raise click.BadParameter(f"{p['dataset']!r} is neither a data set "
                                     f"({', '.join(_DATASETS)}) nor an existing CSV file",
                                     param_hint="'--dataset'")
        if not path.is_file():
            raise click.BadParameter(f"{path} is a folder, not a CSV file",
                                     param_hint="'--dataset'")
    p["partition"] = _PARTITION_ALIASES.get(p["partition"], p["partition"])
    strategy = _strategy(ctx, p["strategy"], p["personal_mode"])
    models = _models(ctx, p["model"], p["models"])
    _check_applies(ctx, p, strategy, models, bundled)
    from cohort.outputs import StagedFolder, check_output_folder

    out = check_output_folder(p["out"], markers=_RUN_FILES, overwrite=p["overwrite"])

    from rich.console import Console

    from clients import (DatasetName, DPSGDConfig, ModelKind, Optimizer, PartitionScheme,
                         StrategyName)

    from .simulation import Backend, SimulationConfig, Transfer, run_simulation
    from .simulation.report import metric_label
    from privacy import Mechanism

    # The --dp spellings (kept) onto the one type of a round's mechanism.
    dp_modes = {"none": Mechanism.NONE, "central": Mechanism.CENTRAL_GAUSSIAN,
                "distributed": Mechanism.DISTRIBUTED, "local": Mechanism.LOCAL}

    dp_sgd = (DPSGDConfig(noise_multiplier=p["dp_sgd_noise_multiplier"],
                          max_grad_norm=p["dp_sgd_max_grad_norm"]) if p["dp_sgd"] else None)
    config = SimulationConfig(
        dataset=DatasetName(p["dataset"]) if bundled else Path(p["dataset"]),
        label_column=p["label_column"], sites=p["sites"], rounds=p["rounds"],
        partition=PartitionScheme(p["partition"]), alpha=p["alpha"],
        algorithm=StrategyName(strategy), models=tuple(ModelKind(m) for m in models),
        hidden=p["hidden"], secagg=p["secagg"], dp=dp_modes[p["dp"]],
        noise_multiplier=p["noise_multiplier"], clip=p["clip"],
        target_epsilon=p["target_epsilon"], delta=p["delta"],
        local_epochs=p["local_epochs"], lr=p["lr"], batch_size=p["batch_size"],
        optimizer=None if p["optimizer"] is None else Optimizer(p["optimizer"]),
        prox_mu=p["prox_mu"], server_lr=p["server_lr"], transfer=Transfer(p["transfer"]),
        dropout_rate=p["dropout_rate"], modulus_bits=p["modulus_bits"],
        baselines=not p["no_baselines"], seed=p["seed"], dp_sgd=dp_sgd,
        example_epsilon=p["dp_sgd_epsilon"], example_delta=p["dp_sgd_delta"],
        backend=Backend(p["backend"]), ray_address=p["ray_address"],
        ray_actors=p["ray_actors"], clients_per_round=p["clients_per_round"],
        sample_rate=p["sample_rate"], assume_secret_sampling=p["assume_secret_sampling"])
    label = _validate_data(config)

    quiet = p["quiet"]
    console = Console(soft_wrap=True)
    tty = sys.stderr.isatty()
    with StagedFolder(out) as stage:
        on_round = None
        if not quiet and not tty:  # no progress bar off a terminal: one line per round
            on_round = _round_line(config.rounds, label)
        summary = run_simulation(config, stage.path, progress=not quiet and tty,
                                 table=not quiet, on_round=on_round,
                                 stop_requested=ctrl_c.requested)
        stage.commit()

    m = summary["metric"]
    label = metric_label(m)
    files = ", ".join(summary["outputs"])
    # The results: printed with --quiet too (it hides the progress and the table).
    final = summary[f"final_{m}"]
    console.print(f"final {label}: {final:.4f} ({summary[f'final_{m}_is']})"
                  if final is not None else f"final {label}: none "
                  f"({summary[f'final_{m}_is']})")
    if summary[f"centralized_{m}"] is not None:
        console.print(f"centralised reference: {summary[f'centralized_{m}']:.4f}")
    local = summary[f"local_only_{m}_global_test"]
    if local:
        console.print(f"mean local-only (global test split): "
                      f"{sum(local.values()) / len(local):.4f}")
    if summary[f"student_{m}"] is not None:
        console.print(f"global student {label}: {summary[f'student_{m}']:.4f}")
    if summary["epsilon"] is not None:
        sampled = summary.get("sampling") is not None
        console.print(f"privacy spent: epsilon = {summary['epsilon']:.3f} at delta = "
                      f"{summary['delta']:g}"
                      + (" (no amplification by sampling: the coordinator knows who took "
                         "part)" if sampled else ""))
    if summary.get("epsilon_amplified") is not None:
        console.print(f"  under the secret-sampling assumption: epsilon = "
                      f"{summary['epsilon_amplified']:.3f} at delta = {summary['delta']:g} "
                      "(amplified by Poisson sampling; does not hold against the coordinator)")
    if summary.get("example_epsilon"):
        worst = max(summary["example_epsilon"].values())
        console.print(f"example-level (DP-SGD, per record) epsilon: up to {worst:.3f} at "
                      f"delta = {summary['example_delta']:g}, per site in summary.json; "
                      "not composed with the site-level epsilon")
    if summary["stopped"] and summary["status"] == "stopped":
        console.print(f"[yellow]{summary['stopped']}[/]")
    console.print(f"outputs in {out}: {files}")
    status = summary["status"]
    done = summary["rounds_completed"]
    if status == "interrupted":
        raise KeyboardInterrupt(f"{summary['stopped']} ({done} rounds completed); "
                                f"{files} written to {out}")
    if status == "aborted":
        from secagg.errors import ProtocolAbort

        raise ProtocolAbort(f"every round aborted (0 of {done} summed), so nothing was learned "
                            f"and there is no final {label}: {_first_note(out)}; see "
                            f"{out / 'summary.json'}")
    if status == "stopped" and done == 0 and summary["budget_projection"]:
        from privacy.errors import BudgetExceeded

        proj = summary["budget_projection"]
        raise BudgetExceeded(f"{summary['stopped']}; see {out / 'summary.json'}",
                             spent=proj.get("spent", 0.0), requested=proj.get("worst", 0.0),
                             budget=proj.get("budget", 0.0))
    return ExitCode.OK


def _first_note(out: Path) -> str:
    import json

    for line in (out / "metrics.jsonl").read_text().splitlines():
        note = json.loads(line).get("note")
        if note:
            return note.removesuffix("; nothing was revealed")
    return "the secure sum aborted"


def main(argv: list[str] | None = None) -> int:
    """``python -m coordinator``: the coordinator's commands of ``cohort``."""
    from cohort.registry import role_main

    return role_main("coordinator", argv, summary="The coordinator: the consortium "
                     "simulation, provisioning, the service and its status.")


if __name__ == "__main__":
    sys.exit(main())
