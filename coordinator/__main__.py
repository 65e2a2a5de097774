"""Command line of the coordinator.

``python -m coordinator simulate``  a simulated hospital consortium training with secure
aggregation (and optional differential privacy); writes metrics.jsonl, summary.json and
rounds.png into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]

_PARTITIONS = {"iid": "IID", "dirichlet": "LABEL_DIRICHLET", "quantity": "QUANTITY_DIRICHLET",
               "lognormal": "QUANTITY_LOGNORMAL"}


def _algorithm(args: argparse.Namespace, names):
    """The CLI's --strategy (and --personal-mode) as the sites' strategy name."""
    if args.strategy == "distill":
        return names.DISTILLATION
    if args.strategy == "personalized":
        return names(args.personal_mode)
    return names(args.strategy)


def _simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from clients import (DatasetName, DPSGDConfig, ModelKind, Optimizer, PartitionScheme,
                         StrategyName)
    from secagg.errors import CohortError

    from .simulation import SimulationConfig, Transfer, run_simulation
    from .sum_config import PrivacyMode

    console = Console(stderr=False)
    try:
        dataset = DatasetName(args.dataset)
    except ValueError:
        dataset = Path(args.dataset)
        if not dataset.exists():
            console.print(f"[red]no such data set or CSV file: {args.dataset}[/]")
            return 2
    models = tuple(ModelKind(m.strip()) for m in (args.models or args.model).split(","))
    try:
        dp_sgd = (DPSGDConfig(noise_multiplier=args.dp_sgd_noise_multiplier,
                              max_grad_norm=args.dp_sgd_max_grad_norm) if args.dp_sgd else None)
        config = SimulationConfig(
            dataset=dataset, label_column=args.label_column, sites=args.sites,
            rounds=args.rounds, partition=PartitionScheme[_PARTITIONS[args.partition]],
            alpha=args.alpha, algorithm=_algorithm(args, StrategyName), models=models,
            hidden=args.hidden, secagg=args.secagg, dp=PrivacyMode(args.dp),
            noise_multiplier=args.noise_multiplier, clip=args.clip,
            target_epsilon=args.target_epsilon, delta=args.delta,
            local_epochs=args.local_epochs, lr=args.lr, batch_size=args.batch_size,
            optimizer=None if args.optimizer is None else Optimizer(args.optimizer),
            prox_mu=args.prox_mu, server_lr=args.server_lr,
            transfer=Transfer(args.transfer),
            dropout_rate=args.dropout_rate, modulus_bits=args.modulus_bits,
            baselines=not args.no_baselines, seed=args.seed, dp_sgd=dp_sgd,
            example_epsilon=args.dp_sgd_epsilon, example_delta=args.dp_sgd_delta)
        summary = run_simulation(config, args.out, progress=not args.quiet,
                                 table=not args.quiet)
    except CohortError as exc:
        console.print(f"[red]{type(exc).__name__}:[/] {exc}")
        return 2
    metric = summary["metric"]
    final = summary["final_accuracy"]
    console.print(f"final {metric}: {final:.4f} ({summary['final_accuracy_is']})"
                  if final is not None else f"final {metric}: n/a")
    if summary["centralized_accuracy"] is not None:
        console.print(f"centralised reference: {summary['centralized_accuracy']:.4f}")
    if summary["epsilon"] is not None:
        console.print(f"privacy spent: epsilon = {summary['epsilon']:.3f} at delta = "
                      f"{summary['delta']:g}")
    if summary.get("example_epsilon"):
        worst = max(summary["example_epsilon"].values())
        console.print(f"example-level (DP-SGD, per record) epsilon: up to {worst:.3f} at delta = "
                      f"{summary['example_delta']:g}, per site in summary.json; not composed "
                      f"with the site-level epsilon")
    if summary["stopped"]:
        console.print(f"[yellow]{summary['stopped']}[/]")
    console.print(f"outputs in {args.out}: metrics.jsonl, summary.json, rounds.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="simulate a hospital consortium",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sim.add_argument("--dataset", default="breast_cancer",
                     help="breast_cancer, digits, diabetes, or a CSV file")
    sim.add_argument("--label-column", default=None, help="label column of a CSV data set")
    sim.add_argument("--sites", type=int, default=5)
    sim.add_argument("--rounds", type=int, default=30)
    sim.add_argument("--partition", choices=sorted(_PARTITIONS), default="dirichlet")
    sim.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    sim.add_argument("--strategy", default="fedavg",
                     choices=["fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam",
                              "fedyogi", "distill", "personalized"])
    sim.add_argument("--personal-mode", choices=["fedper", "fedrep"], default="fedper")
    sim.add_argument("--transfer", choices=["none", "frozen", "finetune"], default="none",
                     help="start from a backbone pretrained on the public split")
    sim.add_argument("--model", choices=["logistic", "mlp", "cnn"], default="mlp")
    sim.add_argument("--models", default=None,
                     help="comma-separated models cycled over the sites (distill), "
                          "e.g. logistic,mlp,cnn")
    sim.add_argument("--hidden", type=int, default=32)
    sim.add_argument("--secagg", action=argparse.BooleanOptionalAction, default=True,
                     help="secure aggregation (--no-secagg sums in the clear, for comparison)")
    sim.add_argument("--dp", choices=["none", "central", "distributed", "local"],
                     default="none")
    sim.add_argument("--noise-multiplier", type=float, default=1.0)
    sim.add_argument("--clip", type=float, default=None,
                     help="L2 clip of each update (default 1 with DP, 10 without)")
    sim.add_argument("--target-epsilon", type=float, default=None,
                     help="each site's privacy budget; training stops before exceeding it")
    sim.add_argument("--delta", type=float, default=1e-5)
    dpsgd = sim.add_argument_group(
        "example-level DP-SGD", "each site trains with Opacus DP-SGD (per-record clipping and "
        "Gaussian noise, Poisson batches); its epsilon protects one patient record, is kept on "
        "a ledger track of its own and is reported apart from the site-level epsilon above")
    dpsgd.add_argument("--dp-sgd", action="store_true",
                       help="train every site's model with example-level DP-SGD "
                            "(not with --strategy distill)")
    dpsgd.add_argument("--dp-sgd-noise-multiplier", type=float, default=1.0,
                       help="DP-SGD noise std divided by the per-record clip")
    dpsgd.add_argument("--dp-sgd-max-grad-norm", type=float, default=1.0,
                       help="DP-SGD per-record gradient clip (L2)")
    dpsgd.add_argument("--dp-sgd-epsilon", type=float, default=None,
                       help="each site's example-level budget; training stops before a site "
                            "would exceed it; unset: no cap, the epsilon is still reported")
    dpsgd.add_argument("--dp-sgd-delta", type=float, default=1e-5,
                       help="delta of the example-level epsilon (below 1 / records per site)")
    sim.add_argument("--local-epochs", type=int, default=2)
    sim.add_argument("--lr", type=float, default=None,
                     help="local learning rate (default 0.1 with SGD, 0.01 with Adam)")
    sim.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                     help="local optimiser (default SGD; Adam for distill)")
    sim.add_argument("--batch-size", type=int, default=32)
    sim.add_argument("--prox-mu", type=float, default=0.01)
    sim.add_argument("--server-lr", type=float, default=None)
    sim.add_argument("--dropout-rate", type=float, default=0.0,
                     help="chance that a site drops before sending its masked input, per round")
    sim.add_argument("--modulus-bits", type=int, default=None)
    sim.add_argument("--no-baselines", action="store_true",
                     help="skip the local-only and centralised reference runs")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", default="runs/latest")
    sim.add_argument("--quiet", action="store_true")
    sim.set_defaults(func=_simulate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
