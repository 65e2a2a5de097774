"""``cohort serve`` (also ``python -m coordinator serve``): the coordinator service running one
declared job (:class:`cohort.contract.Job`, from ``job.toml``) to its end.

It reads the coordinator kit (``coordinator.toml``, ``server.pem``/``server.key``, ``ca.pem``, the
CA-signed roster), serves HTTPS with TLS 1.3 and client certificates on the kit's port, waits for
the roster's sites, runs the job's rounds (:class:`coordinator.job.JobRunner`), writes
``metrics.jsonl`` (a line per round), ``summary.json`` and ``rounds.png`` into ``--out``, and stops when the job
ends. The model is built here from the catalogue (``clients.make_model``), so the coordinator's
core only ever sees flat parameter vectors.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
import tomllib
from pathlib import Path

import click

from cohort.errors import EXIT_CODES_HELP, Command, ExitCode

__all__ = ["serve"]

_EPILOG = f"""\b
Examples:
  cohort serve --kit kits/coordinator --job job.toml --out runs/job1
  cohort serve --kit kits/coordinator --job job.toml --port 0      # any free port (tests)

\b
job.toml (every table optional but [data]):
  [job]      name = "demo"  rounds = 5  strategy = "fedavg"  server_lr  min_sites  seed (tests)
  [data]     dataset = "breast_cancer" (evaluation and shapes)  | features = 30  outputs = 2
  [model]    kind = "logistic" | "mlp" | "cnn"   hidden = 32
  [training] epochs = 1  lr = 0.1  batch_size = 32  optimizer = "sgd"  prox_mu = 0.0
  [privacy]  mode = "none" | "distributed" | "central_gaussian"  noise_multiplier  clip_norm
             target_epsilon  delta
  [secagg]   modulus_bits  max_weight  neighbors  threshold  malicious = true (signed keys and
             the consistency check; false only if the coordinator is trusted to follow the
             protocol)
  [timeouts] stage = 30  join = 120  poll_hold = 5  idle = 30 (a connection with no request
             under way is closed)  body = 30 (a request body's read deadline)  request = 600
  [limits]   requests_per_second = 50  burst = 200 (each site's budget, by its certificate;
             over it: 429 with Retry-After; never below four requests per poll_hold)

\b
Revoking a site while the job runs: 'cohort provision ... --revoke SITE', then copy the new
roster.json and roster.sig into this kit; the service takes the new signed roster on its next
request and refuses the site from then on (in an open round it becomes a dropout).

\b
Logs: --log-json writes one JSON object per line on stderr (time, level, event, round, stage,
site, status ...); --log-file FILE appends the same JSON lines, at INFO, to FILE. No log line
holds key material, shares, masks, update values or message bodies.

{EXIT_CODES_HELP}"""


def _kit(kit: Path) -> dict:
    try:
        config = tomllib.loads((kit / "coordinator.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{kit}: not a coordinator kit ({exc})",
                                 param_hint="'--kit'") from None
    return config


@click.command(cls=Command, epilog=_EPILOG,
               short_help="Run the coordinator service for one job.")
@click.option("--kit", type=click.Path(path_type=Path, file_okay=False, exists=True),
              required=True, help="The coordinator kit folder made by 'cohort provision'.")
@click.option("--job", "job_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              required=True, help="The job file (TOML).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/serve"),
              help="Where metrics.jsonl, summary.json and rounds.png are written.")
@click.option("--host", default="127.0.0.1", help="The address to listen on.")
@click.option("--port", type=int, default=None, show_default="the kit's port",
              help="The port to listen on (0: any free port).")
@click.option("--port-file", type=click.Path(path_type=Path), default=None,
              show_default="none", help="Write the port listened on into this file once serving.")
@click.option("--state", "state_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, show_default="OUT/state.sqlite",
              help="The coordinator's state file (SQLite): every round, accepted message, "
                   "closed step, release and checkpoint, on disk before it is acknowledged. "
                   "Serving the same job.toml with an existing state file resumes the job "
                   "where it stopped (after a crash or kill -9).")
@click.option("--verbose", is_flag=True, help="Log every request and step.")
@click.option("--log-json", is_flag=True, help="Log on stderr as JSON lines, not text.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              show_default="none", help="Also append every event, as JSON lines, to this file.")
def serve(kit: Path, job_file: Path, out: Path, host: str, port: int | None,
          port_file: Path | None, state_file: Path | None, verbose: bool, log_json: bool,
          log_file: Path | None) -> int:
    """Run the coordinator service over mutual TLS for the job in JOB until it ends."""
    # The commands' own handlers replace any a dependency installed at import (opacus
    # configures the root logger), so --verbose and --log-json mean what they say.
    from cohort.logs import configure_logging

    configure_logging(verbose=verbose, json_lines=log_json, file=log_file)
    from cohort.runtime import keep_large_buffers

    keep_large_buffers()
    from cohort.contract import parse_job

    from .service.roster import FileRoster

    config = _kit(kit)
    files = config.get("files", {})
    job = parse_job(job_file.read_text(), source=str(job_file))
    # Re-read when the kit's roster files change: a site revoked meanwhile is refused from the
    # service's next request on.
    roster = FileRoster(kit / files.get("roster", "roster.json"), kit / files.get("ca", "ca.pem"))
    active = [s for s in roster.sites if s.active]
    port = int(config.get("port", 8443)) if port is None else port

    import numpy as np

    from clients import DatasetName, ModelKind, evaluate, get_flat_params, make_model
    from clients import load_dataset, set_flat_params, split_dataset

    from .job import JobRunner
    from .service import CoordinatorService, create_app, serve_in_thread, server_context
    from .service.connections import ConnectionLimits
    from .service.ratelimit import RateLimit, SiteRateLimiter, rate_for_poll_hold

    evaluate_fn = None
    if job.dataset is not None:
        splits = split_dataset(load_dataset(DatasetName(job.dataset)),
                               seed=0 if job.seed is None else job.seed)
        shape, n_out = splits.feature_shape, splits.n_outputs
    else:
        splits, shape, n_out = None, (job.features,), job.outputs
    model = make_model(ModelKind(job.training.model), input_shape=shape, n_outputs=n_out,
                       hidden=job.training.hidden,
                       seed=None if job.seed is None else job.seed + 10_007)
    initial = get_flat_params(model)
    if splits is not None:
        test = splits.test

        def evaluate_fn(flat: np.ndarray) -> dict:
            set_flat_params(model, flat)
            r = evaluate(model, test.X, test.y)
            score = r.accuracy if r.accuracy is not None else r.r2
            return {"accuracy": float(score), "loss": float(r.loss)}

    out.mkdir(parents=True, exist_ok=True)
    from .service.store import CoordinatorStore, StoreError

    state_path = state_file if state_file is not None else out / "state.sqlite"
    try:
        store = CoordinatorStore(state_path)
        fresh = store.begin_job(job_file.read_text())
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="'--state'") from None
    if not fresh:
        click.echo(f"resuming job {job.name!r} from {state_path} "
                   f"({len(store.rounds())} round(s) recorded)", err=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    # Not ready until the job runner has rebuilt any round from the state file: the sites'
    # requests meanwhile get 503 and are retried.
    rate = rate_for_poll_hold(RateLimit(job.requests_per_second, job.request_burst),
                              job.poll_hold)
    service = CoordinatorService(roster, poll_hold=job.poll_hold, body_timeout=job.body_timeout,
                                 ready=False, rate=SiteRateLimiter(rate))

    def roster_changed(old, new) -> None:  # a revoked site is not asked into another round
        for site in new.sites:
            if not site.active:
                service.last_seen.pop(site.client_id, None)

    roster.on_change = roster_changed
    context = server_context(certfile=kit / files.get("certificate", "server.pem"),
                             keyfile=kit / files.get("key", "server.key"),
                             cafile=kit / files.get("ca", "ca.pem"))
    handle = serve_in_thread(create_app(service), context, host=host, port=port,
                             connections=ConnectionLimits(idle=job.idle_timeout,
                                                          request=job.request_timeout))
    if port_file is not None:
        port_file.write_text(f"{handle.port}\n")
    click.echo(f"serving job {job.name!r} ({job.rounds} rounds, {job.strategy.value}, "
               f"{job.training.model}, DP {job.mode.value}) on {handle.url} for "
               f"{len(active)} enrolled sites", err=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def on_round(m) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(dataclasses.asdict(m)) + "\n")
        acc = "-" if m.accuracy is None else f"{m.accuracy:.4f}"
        eps = "" if m.epsilon is None else f", epsilon {m.epsilon:.3g}"
        click.echo(f"round {m.round}/{job.rounds}: {m.participants} of {m.planned} sites "
                   f"summed, accuracy {acc}{eps}, {m.seconds:.2f}s"
                   + (f" ({m.note})" if m.note else ""), err=True)

    runner = JobRunner(job, service, sites={s.client_id: s.site_name for s in active},
                       directory={s.client_id: s.identity_public for s in active},
                       initial=initial, evaluate=evaluate_fn, on_round=on_round, stop=stop,
                       store=store)
    started = time.perf_counter()
    try:
        result = runner.run()
        time.sleep(min(job.poll_hold, 2.0) + 0.5)  # the sites' next poll hears "job_done"
    finally:
        handle.stop()
        store.close()
        signal.signal(signal.SIGTERM, previous)
    summary = {
        "job": job.name, "rounds_planned": job.rounds, "rounds": len(result.rounds),
        "strategy": job.strategy.value, "model": job.training.model, "dp": job.mode.value,
        "sites": result.sites, "stopped": result.stopped, "epsilon": result.epsilon,
        "delta": job.delta if result.epsilon is not None else None,
        "final_accuracy": next((m.accuracy for m in reversed(result.rounds)
                                if not m.aborted), None),
        "seconds": time.perf_counter() - started, "seed": job.seed,
        "final_params_sha256": __import__("hashlib").sha256(
            np.ascontiguousarray(result.final_params, dtype="<f8").tobytes()).hexdigest(),
    }
    np.save(out / "final_params.npy", result.final_params)
    if result.rounds:
        from .job_report import plot_job

        plot_job(out, job, result.rounds, stopped=result.stopped)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(f"job {job.name!r} ended: {len(result.rounds)} rounds"
               + (f"; {result.stopped}" if result.stopped else "")
               + f"; wrote {out / 'summary.json'}", err=True)
    if result.stopped and not result.rounds:
        return int(ExitCode.CHECK_FAILED)
    if result.rounds and all(m.aborted for m in result.rounds):
        return int(ExitCode.PROTOCOL_ABORT)
    return int(ExitCode.OK)
