"""``python -m privacy``: epsilon of a mechanism, the encoder benchmark, and a ledger audit.

    python -m privacy epsilon --mechanism gaussian --noise-multiplier 1.5 --sample-rate 0.04 \
        --steps 2250 --delta 1e-5 --accountant rdp --json
    python -m privacy epsilon --mechanism skellam --variance 1e6 --l2-sensitivity 1100 \
        --l1-sensitivity 40000 --steps 100 --delta 1e-5 --json
    python -m privacy bench --dim 1048576 --bits 16 --json
    python -m privacy audit --ledger site.db --site hospital-a --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from secagg.errors import CohortError

from .accountants import Accountant, compute_epsilon
from .events import GaussianEvent, SkellamEvent, event_to_dict
from .ledger import LedgerTrack, SiteLedger


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m privacy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("epsilon", help="epsilon of a composed mechanism")
    e.add_argument("--mechanism", choices=["gaussian", "skellam"], required=True)
    e.add_argument("--noise-multiplier", type=float, help="gaussian: noise stddev / L2 sensitivity")
    e.add_argument("--sample-rate", type=float, default=1.0, help="gaussian: Poisson sampling rate")
    e.add_argument("--accountant", choices=[a.value for a in Accountant], default="rdp")
    e.add_argument("--variance", type=float, help="skellam: total noise variance per coordinate")
    e.add_argument("--l2-sensitivity", type=float, help="skellam: L2 sensitivity (scaled domain)")
    e.add_argument("--l1-sensitivity", type=float, help="skellam: L1 sensitivity (scaled domain)")
    e.add_argument("--steps", type=int, required=True)
    e.add_argument("--delta", type=float, required=True)
    e.add_argument("--json", action="store_true", help="print one JSON object")

    b = sub.add_parser("bench", help="encode/decode speed against plain numpy")
    b.add_argument("--dim", type=int, default=1 << 20)
    b.add_argument("--bits", type=int, default=16)
    b.add_argument("--clients", type=int, default=100)
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--json", action="store_true")

    a = sub.add_parser("audit", help="print a site's ledger")
    a.add_argument("--ledger", required=True)
    a.add_argument("--site", required=True)
    a.add_argument("--track", choices=[t.value for t in LedgerTrack], default="site",
                   help="site-level or example-level (DP-SGD) releases")
    a.add_argument("--json", action="store_true")
    return p


def _epsilon(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    accountant = Accountant(args.accountant)
    if args.mechanism == "gaussian":
        if args.noise_multiplier is None:
            parser.error("--mechanism gaussian needs --noise-multiplier")
        event = GaussianEvent(noise_multiplier=args.noise_multiplier,
                              sample_rate=args.sample_rate, steps=args.steps)
    else:
        if None in (args.variance, args.l2_sensitivity, args.l1_sensitivity):
            parser.error("--mechanism skellam needs --variance, --l2-sensitivity, --l1-sensitivity")
        event = SkellamEvent(variance=args.variance, l2_sensitivity=args.l2_sensitivity,
                             l1_sensitivity=args.l1_sensitivity, steps=args.steps)
    eps = compute_epsilon([event], delta=args.delta, accountant=accountant)
    out = {"mechanism": args.mechanism, "accountant": accountant.value,
           "epsilon": eps, "delta": args.delta}
    out.update({k: v for k, v in event_to_dict(event).items() if k not in ("kind", "version")})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "epsilon":
            out = _epsilon(args, parser)
            print(json.dumps(out) if args.json else
                  f"epsilon = {out['epsilon']:.6f} at delta = {out['delta']:g} "
                  f"({out['mechanism']}, {out['accountant']})")
        elif args.command == "bench":
            from ._bench import run_bench

            out = run_bench(dim=args.dim, bits=args.bits, clients=args.clients,
                            repeats=args.repeats, progress=not args.json)
            if args.json:
                print(json.dumps(out))
            else:
                print(f"encode d={out['dim']} b={out['bits']} skellam: "
                      f"{out['encode_seconds'] * 1e3:.1f} ms (plain numpy "
                      f"{out['plain_encode_seconds'] * 1e3:.1f} ms, ratio {out['encode_ratio']:.2f})")
                print(f"decode: {out['decode_seconds'] * 1e3:.1f} ms (plain numpy "
                      f"{out['plain_decode_seconds'] * 1e3:.1f} ms, ratio {out['decode_ratio']:.2f})")
        else:
            ledger = SiteLedger(args.ledger, site_id=args.site, track=LedgerTrack(args.track))
            out = {"site_id": ledger.site_id, "track": ledger.track.value,
                   "epsilon_budget": ledger.budget.epsilon,
                   "delta": ledger.budget.delta, "epsilon_spent": ledger.spent(),
                   "overrun": ledger.overrun,
                   "entries": [{"round_id": e.round_id, "release_id": e.release_id.hex(),
                                "status": e.status.value, "epsilon_after": e.epsilon_after,
                                "overrun": e.overrun, "worst": event_to_dict(e.worst),
                                "event": None if e.charged is None else event_to_dict(e.charged)}
                               for e in ledger.entries()]}
            if args.json:
                print(json.dumps(out))
            else:
                print(f"site {out['site_id']}: spent {out['epsilon_spent']:.4f} of "
                      f"{out['epsilon_budget']:.4f} (delta {out['delta']:g}), "
                      f"{len(out['entries'])} events")
                for e in out["entries"]:
                    kind = "nothing released" if e["event"] is None else e["event"]["kind"]
                    print(f"  {e['round_id']} [{e['status']}]: {kind} -> {e['epsilon_after']:.4f}"
                          + (" OVER BUDGET" if e["overrun"] else ""))
    except CohortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
