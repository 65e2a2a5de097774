"""One round of Flower's SecAgg+ (flwr 1.41), run in-process, timed server and client side.

What it measures
----------------
A single secure-aggregation round of Flower's own SecAgg+ code, on one machine, with every
party in this process:

* the **server** is Flower's ``SecAggPlusWorkflow`` (``flwr.server.workflow.secure_aggregation.
  secaggplus_workflow``), called exactly as Flower's ``DefaultWorkflow`` calls its fit workflow:
  ``workflow(grid, legacy_context)``. Its four stages (setup, share keys, collect masked vectors,
  unmask) run unchanged; a thin subclass only wraps each stage with a timer.
* every **client** is Flower's ``secaggplus_mod`` (``flwr.client.mod.secure_aggregation``) with its
  own ``Context``; the "ClientApp" behind the mod (``call_next``) just returns a precomputed
  ``FitRes`` holding the client's float update, so no training is timed.
* the **transport** is an in-process ``Grid`` (:class:`InProcessGrid`): each message is turned
  into protobuf and back with Flower's serde (``message_to_proto`` / ``message_from_proto``), as
  the SuperLink would do, so no party ever shares a Python object with another and the reply
  sizes are the bytes a client really uploads. Transport time is never counted as compute.

Figures (wall-clock ``time.perf_counter``; process CPU time is reported alongside):

* ``server_seconds``: the whole workflow call (all four server stages, including Shamir
  reconstruction, mask regeneration and removal, dequantisation) minus the time spent inside
  ``Grid.send_and_receive`` (client compute + simulated transport).
* ``client_seconds``: for each client, the sum of its ``secaggplus_mod`` calls over the stages it
  took part in; the mean over the clients that finished the round (survivors).
  ``client_seconds_all`` is the mean over all clients, the dropped ones included (they only did
  setup and share keys). Per-stage means are in ``client_stage_seconds``.
* ``upload_bytes_per_client``: mean over survivors of the protobuf size of all their replies.

Dropouts: ``round(dropout * clients)`` clients, chosen with ``--seed``, stop after the share-keys
stage and never answer the collect-masked-vectors request (the standard SecAgg+ dropout point:
their keys were shared, so the server must reconstruct their mask keys and strip their pairwise
masks from the survivors' sum).

Correctness: inputs are drawn on Flower's quantisation grid (``x = q * 2c/T - c`` with integer
``q``, clipping range ``c``, quantisation range ``T``) and every client reports
``num_examples == max_weight``, so Flower's stochastic rounding is exact and deterministic. The
workflow's dequantised aggregate is then mapped back to integers and must equal the plain integer
sum of the survivors' ``q`` *exactly* (``"exact_quantised_sum"``); the float aggregate must also
equal the plain mean of the survivors' float inputs within one quantisation step
(``"max_abs_error"``). ``"correct"`` is true only if both hold.

Parameters: ``--num-shares`` is Flower's own ``num_shares``: each client's neighbourhood is a
ring window of ``num_shares`` nodes *including the client itself*, so a client has
``num_shares - 1`` other neighbours (graph degree), builds that many pairwise masks and sends
that many encrypted shares, keeping the last share for itself. Use an odd value (Flower's ring
can only realise even degrees; see ``benchmarks/compare_flower.py`` for the mapping to Cohort's
``k``). ``--threshold`` is Flower's ``reconstruction_threshold`` (an int, < num_shares).

Run with an interpreter that has ``flwr==1.41.0`` installed, e.g.::

    /work/venv-flwr/bin/python benchmarks/flower_secaggplus.py --clients 100 --dim 100000 \\
        --num-shares 21 --threshold 11 --dropout 0.1 --seed 0 --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import random
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

try:
    import flwr
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod
    from flwr.common import (
        Code,
        FitIns,
        FitRes,
        Parameters,
        Status,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.client_manager import ClientManager, SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.server_config import ServerConfig
    from flwr.server.strategy import Strategy
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import (
        SecAggPlusWorkflow,
        WorkflowState,
    )
    from flwr.serverapp.grid import Grid
    from flwr.supercore.task_identity import TaskIdentity
except ImportError as _err:  # pragma: no cover - depends on the interpreter
    sys.exit(
        f"flower_secaggplus.py: cannot import Flower ({_err}). Run it with an interpreter that "
        "has flwr==1.41.0 installed, e.g. /work/venv-flwr/bin/python "
        "(or `pip install flwr==1.41.0`, the `bench` extra of pyproject.toml)."
    )

try:
    from tqdm import tqdm as _tqdm
except ImportError:  # tqdm is optional in the Flower environment
    _tqdm = None

EXPECTED_FLWR = "1.41.0"
NUM_EXAMPLES = 1000  # every client's weight; equals max_weight so Flower's weight ratio is 1
MAX_WEIGHT = 1000.0
CLIPPING_RANGE = 8.0  # Flower's defaults, spelled out so the JSON says what was used
QUANTIZATION_RANGE = 2**22
MODULUS_RANGE = 2**32

T = TypeVar("T")


def _progress(items: Iterable[T], *, desc: str, total: int, enabled: bool) -> Iterator[T]:
    """Iterate with a tqdm bar on stderr (no bar when tqdm is missing or progress is off)."""
    if enabled and _tqdm is not None:
        yield from _tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False)
    else:
        yield from items


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


@dataclass
class SimClient:
    """One Flower client: its own Context, its float update, and what it spent per stage."""

    node_id: int
    update: np.ndarray
    context: Context = field(init=False)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_upload_bytes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.context = Context(
            run_id=1, node_id=self.node_id, node_config={}, state=RecordDict(), run_config={}
        )

    def handle(self, msg: Message, stage: str) -> Message:
        """Run the message through Flower's ``secaggplus_mod``; time only the mod call."""
        fit_reply: RecordDict | None = None
        if stage == Stage.COLLECT_MASKED_VECTORS:
            # The wrapped ClientApp's output, built before the clock starts: training is not
            # part of secure aggregation.
            fitres = FitRes(
                status=Status(code=Code.OK, message=""),
                parameters=ndarrays_to_parameters([self.update]),
                num_examples=NUM_EXAMPLES,
                metrics={},
            )
            fit_reply = compat.fitres_to_recorddict(fitres, keep_input=True)

        def call_next(in_msg: Message, _ctxt: Context) -> Message:
            assert fit_reply is not None, "the mod only calls the ClientApp in stage 2"
            return Message(fit_reply, reply_to=in_msg)

        start = time.perf_counter()
        reply = secaggplus_mod(msg, self.context, call_next)
        self.stage_seconds[stage] = time.perf_counter() - start
        return reply


# --------------------------------------------------------------------------------------------
# Transport
# --------------------------------------------------------------------------------------------


class InProcessGrid(Grid):
    """A Grid that delivers each message to an in-process client through a protobuf round trip.

    ``dropped`` clients never reply to ``drop_stage`` or any later stage (as if they went
    offline). Time spent here (clients + serde) is accumulated in ``seconds`` so the caller can
    subtract it from the server's time.
    """

    def __init__(
        self,
        clients: dict[int, SimClient],
        dropped: set[int],
        *,
        drop_stage: str = Stage.COLLECT_MASKED_VECTORS,
        progress: bool = False,
    ) -> None:
        self.clients = clients
        self.dropped = dropped
        self.drop_stage = drop_stage
        self.progress = progress
        self.seconds = 0.0
        self.download_bytes: dict[int, int] = {nid: 0 for nid in clients}
        self._run: Any = None

    # --- the abstract API; the SecAgg+ workflow only uses send_and_receive -------------------
    def set_run(self, run: Any) -> None:  # noqa: D102
        self._run = run

    @property
    def run(self) -> Any:  # noqa: D102
        return self._run

    def create_message(  # noqa: D102
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.clients)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        raise NotImplementedError("use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        raise NotImplementedError("use send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver every message, collect the replies of the clients that are still online."""
        start = time.perf_counter()
        msgs = list(messages)
        stage_order = Stage.all()
        replies: list[Message] = []
        stage = ""
        for msg in _progress(msgs, desc="clients", total=len(msgs), enabled=self.progress):
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as the SuperLink does
            proto = message_to_proto(msg)
            nid = msg.metadata.dst_node_id
            self.download_bytes[nid] += proto.ByteSize()
            delivered = message_from_proto(proto)  # the client's own copy
            stage = str(delivered.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            if nid in self.dropped and stage_order.index(stage) >= stage_order.index(
                self.drop_stage
            ):
                continue  # offline: no reply, like a timeout
            reply = self.clients[nid].handle(delivered, stage)
            reply_proto = message_to_proto(reply)
            self.clients[nid].stage_upload_bytes[stage] = reply_proto.ByteSize()
            replies.append(message_from_proto(reply_proto))
        self.seconds += time.perf_counter() - start
        if self.progress:
            print(f"  [{stage}] {len(replies)}/{len(msgs)} clients replied", file=sys.stderr)
        return replies


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _Proxy(ClientProxy):
    """The only thing the SecAgg+ workflow asks of a ClientProxy is its node_id."""

    def __init__(self, node_id: int) -> None:
        super().__init__(str(node_id))
        self.node_id = node_id

    def get_properties(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise NotImplementedError

    def get_parameters(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise NotImplementedError

    def fit(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise NotImplementedError

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise NotImplementedError

    def reconnect(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise NotImplementedError


class CaptureStrategy(Strategy):
    """Samples every client and keeps the securely aggregated parameters; does nothing else.

    (FedAvg would average ``len(survivors)`` identical copies of the aggregate: work that is
    not secure aggregation, so it is left out.)
    """

    def __init__(self, node_ids: list[int]) -> None:
        self.proxies = [_Proxy(nid) for nid in node_ids]
        self.aggregate: list[np.ndarray] | None = None
        self.num_results = 0
        self.num_failures = 0

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:  # noqa: D102
        return None

    def configure_fit(  # noqa: D102
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [(proxy, FitIns(parameters, {})) for proxy in self.proxies]

    def aggregate_fit(  # noqa: D102
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Any]]:
        self.num_results, self.num_failures = len(results), len(failures)
        if not results:
            return None, {}
        params = results[0][1].parameters  # the workflow gives every result the aggregate
        self.aggregate = parameters_to_ndarrays(params)
        return params, {}

    def configure_evaluate(self, *args: Any, **kwargs: Any) -> list[Any]:  # noqa: D102
        return []

    def aggregate_evaluate(self, *args: Any, **kwargs: Any) -> tuple[None, dict[str, Any]]:  # noqa: D102
        return None, {}

    def evaluate(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        return None


class TimedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """Flower's workflow with a timer around each stage; Flower's own ``__call__`` drives it."""

    def __init__(self, grid: InProcessGrid, *args: Any, progress: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._grid = grid
        self._progress = progress
        self.stage_seconds: dict[str, float] = {}  # server compute per stage
        self.last_state: WorkflowState | None = None

    def _timed(self, name: str, fn: Any, grid: Grid, context: LegacyContext, state: Any) -> bool:
        if self._progress:
            print(f"[server] stage {name}", file=sys.stderr)
        grid_before = self._grid.seconds
        start = time.perf_counter()
        ok = bool(fn(grid, context, state))
        elapsed = time.perf_counter() - start
        self.stage_seconds[name] = elapsed - (self._grid.seconds - grid_before)
        self.last_state = state
        return ok

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:  # noqa: D102
        return self._timed(Stage.SETUP, super().setup_stage, grid, context, state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:  # noqa: D102
        return self._timed(Stage.SHARE_KEYS, super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(  # noqa: D102
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        return self._timed(
            Stage.COLLECT_MASKED_VECTORS,
            super().collect_masked_vectors_stage,
            grid,
            context,
            state,
        )

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:  # noqa: D102
        return self._timed(Stage.UNMASK, super().unmask_stage, grid, context, state)


# --------------------------------------------------------------------------------------------
# Where the time goes
# --------------------------------------------------------------------------------------------


class Breakdown:
    """Times calls of named functions as seen from one Flower module (diagnostics only).

    The functions are looked up by the workflow and the mod in their own module namespaces,
    so wrapping them there times exactly the calls Flower makes; behaviour is unchanged.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, module: Any, name: str, label: str) -> None:
        """Replace ``module.name`` by a timed pass-through."""
        inner = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(module, name, timed)


def _instrument() -> tuple[Breakdown, Breakdown]:
    """Wrap the heavy primitives the server workflow and the client mod call."""
    # importlib, not `import a.b as m`: the package re-exports a function of the same name.
    mod_module = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    wf_module = importlib.import_module(
        "flwr.server.workflow.secure_aggregation.secaggplus_workflow"
    )

    server, client = Breakdown(), Breakdown()
    server.wrap(wf_module, "combine_shares", "shamir_combine")
    server.wrap(wf_module, "pseudo_rand_gen", "prg")
    server.wrap(wf_module, "generate_shared_key", "key_agreement")
    client.wrap(mod_module, "create_shares", "shamir_split")
    client.wrap(mod_module, "pseudo_rand_gen", "prg")
    client.wrap(mod_module, "generate_shared_key", "key_agreement")
    client.wrap(mod_module, "encrypt", "share_encrypt")
    client.wrap(mod_module, "decrypt", "share_decrypt")
    return server, client


# --------------------------------------------------------------------------------------------
# The round
# --------------------------------------------------------------------------------------------


def _legacy_context(strategy: Strategy) -> LegacyContext:
    """The context Flower's DefaultWorkflow hands its fit workflow, for round 1."""
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    ctx = LegacyContext(
        base,
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=SimpleClientManager(),
    )
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    # The global model sent with FitIns is empty: it is not part of secure aggregation.
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        Parameters(tensors=[], tensor_type="numpy.ndarray"), keep_input=True
    )
    return ctx


def run_round(
    *,
    clients: int,
    dim: int,
    num_shares: int,
    threshold: int,
    dropout: float,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Run one SecAgg+ round with Flower's code and return the figures as a dict."""
    if clients < 2:
        raise SystemExit("--clients must be at least 2")
    if not 0.0 <= dropout < 1.0:
        raise SystemExit("--dropout must be in [0, 1)")
    # Flower draws the neighbour ring with `random` and stochastic rounding with the global
    # numpy generator; secrets come from os.urandom and cannot be seeded (nor should they be).
    random.seed(seed)
    np.random.seed(seed % 2**32)
    rng = np.random.default_rng(seed)
    # The process is the ServerApp, as flwr.server.compat.app sets it up (clients reply with
    # metadata derived from the server's messages, so they need no identity of their own).
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID

    node_ids = [int(x) + 2 for x in rng.choice(2**62, size=clients, replace=False)]
    step = 2 * CLIPPING_RANGE / QUANTIZATION_RANGE
    # q in the middle eighth of Flower's range: x in [-1, 1), like a clipped model update.
    lo, hi = QUANTIZATION_RANGE * 7 // 16, QUANTIZATION_RANGE * 9 // 16
    q_inputs = {nid: rng.integers(lo, hi, size=dim, dtype=np.int64) for nid in node_ids}
    sim_clients = {
        nid: SimClient(nid, (q * step - CLIPPING_RANGE).astype(np.float32))
        for nid, q in q_inputs.items()
    }
    for nid, c in sim_clients.items():  # the grid claim only holds if float32 is exact here
        back = (c.update.astype(np.float64) + CLIPPING_RANGE) / step
        assert np.array_equal(back, q_inputs[nid]), "input not on the quantisation grid"

    n_drop = int(round(dropout * clients))
    dropped = {int(x) for x in rng.choice(node_ids, size=n_drop, replace=False)}
    survivors = [nid for nid in node_ids if nid not in dropped]

    server_breakdown, client_breakdown = _instrument()
    grid = InProcessGrid(sim_clients, dropped, progress=progress)
    strategy = CaptureStrategy(node_ids)
    context = _legacy_context(strategy)
    workflow = TimedSecAggPlusWorkflow(
        grid,
        num_shares,
        threshold,
        max_weight=MAX_WEIGHT,
        clipping_range=CLIPPING_RANGE,
        quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE,
        progress=progress,
    )

    cpu_start = time.process_time()
    start = time.perf_counter()
    workflow(grid, context)  # Flower's own driver loop over the four stages
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    server_seconds = wall - grid.seconds
    client_total = {nid: sum(c.stage_seconds.values()) for nid, c in sim_clients.items()}

    # ---- correctness ------------------------------------------------------------------------
    completed = strategy.aggregate is not None
    exact = False
    max_abs_error = float("nan")
    if completed:
        agg = np.asarray(strategy.aggregate[0], dtype=np.float64)
        n_s = len(survivors)
        q_sum = np.sum([q_inputs[nid] for nid in survivors], axis=0)
        # Invert Flower's dequantisation: agg = (r*step - c - (n_s-1)*c) * q_unit/q_total,
        # with q_total = n_s * q_unit because every weight ratio is exactly 1.
        recovered = np.rint((agg * n_s + n_s * CLIPPING_RANGE) / step).astype(np.int64)
        exact = bool(agg.shape == (dim,) and np.array_equal(recovered, q_sum))
        plain_mean = np.mean(
            [sim_clients[nid].update.astype(np.float64) for nid in survivors], axis=0
        )
        max_abs_error = float(np.max(np.abs(agg - plain_mean)))
    correct = bool(completed and exact and max_abs_error <= step)

    state = workflow.last_state
    degree = None
    if state is not None and state.nid_to_neighbours:
        degree = int(np.mean([len(v - {k}) for k, v in state.nid_to_neighbours.items()]))

    def mean_over(ids: list[int], per: dict[int, float]) -> float:
        return float(np.mean([per[i] for i in ids])) if ids else 0.0

    stages = list(Stage.all())
    client_stage_seconds = {
        s: mean_over(
            [n for n in node_ids if s in sim_clients[n].stage_seconds],
            {n: sim_clients[n].stage_seconds.get(s, 0.0) for n in node_ids},
        )
        for s in stages
    }
    upload = {n: sum(sim_clients[n].stage_upload_bytes.values()) for n in node_ids}
    upload_stage = {
        s: mean_over(survivors, {n: sim_clients[n].stage_upload_bytes.get(s, 0) for n in node_ids})
        for s in stages
    }
    return {
        "implementation": "flower-secaggplus",
        "flwr_version": flwr.__version__,
        "clients": clients,
        "dim": dim,
        "num_shares": num_shares,
        "threshold": threshold,
        "neighbors": degree,  # other neighbours per client (graph degree) actually used
        "dropout": dropout,
        "dropped": n_drop,
        "survivors": len(survivors),
        "seed": seed,
        "completed": completed,
        "correct": correct,
        "exact_quantised_sum": exact,
        "max_abs_error": max_abs_error,
        "quantisation_step": step,
        "client_seconds": mean_over(survivors, client_total),
        "client_seconds_all": mean_over(node_ids, client_total),
        "client_seconds_max": max(client_total[n] for n in survivors) if survivors else 0.0,
        "client_stage_seconds": client_stage_seconds,
        "server_seconds": server_seconds,
        "server_stage_seconds": workflow.stage_seconds,
        # Time inside the heavy primitives, summed over the round (server) and divided by
        # the number of clients (client); see Breakdown.
        "server_breakdown_seconds": server_breakdown.seconds,
        "client_breakdown_seconds": {
            k: v / clients for k, v in client_breakdown.seconds.items()
        },
        "round_wall_seconds": wall,
        "round_cpu_seconds": cpu,  # all parties, transport included (process CPU time)
        "upload_bytes_per_client": mean_over(survivors, upload),
        "upload_stage_bytes": upload_stage,
        "download_bytes_per_client": mean_over(survivors, grid.download_bytes),
        "modulus_range": MODULUS_RANGE,
        "modulus_bits": MODULUS_RANGE.bit_length() - 1,
        "quantization_range": QUANTIZATION_RANGE,
        "clipping_range": CLIPPING_RANGE,
        "max_weight": MAX_WEIGHT,
        "num_examples": NUM_EXAMPLES,
        "input_dtype": "float32",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--clients", type=int, default=100, help="number of clients N")
    p.add_argument("--dim", type=int, default=100_000, help="vector length M")
    p.add_argument(
        "--num-shares",
        type=int,
        default=21,
        help="Flower's num_shares: neighbourhood size INCLUDING the client itself (odd)",
    )
    p.add_argument(
        "--threshold", type=int, default=11, help="Flower's reconstruction_threshold (int)"
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=0.1,
        help="fraction of clients that drop after sharing keys",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.add_argument("--verbose", action="store_true", help="keep Flower's INFO logging")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the round, print the result."""
    args = _parse_args(argv)
    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    if args.num_shares % 2 == 0 and args.num_shares < args.clients:
        # Flower 1.41 sends the even value to the clients but builds a ring of num_shares + 1
        # nodes, so every client fails in share_keys with an IndexError (create_shares makes
        # num_shares shares for num_shares + 1 neighbours).
        sys.exit(
            f"--num-shares {args.num_shares} is even: Flower 1.41's SecAgg+ only works with an "
            "odd integer num_shares (or num_shares >= clients); its ring gives each client "
            "num_shares - 1 other neighbours."
        )
    if flwr.__version__ != EXPECTED_FLWR:
        print(
            f"warning: measuring flwr {flwr.__version__}, not {EXPECTED_FLWR}", file=sys.stderr
        )
    result = run_round(
        clients=args.clients,
        dim=args.dim,
        num_shares=args.num_shares,
        threshold=args.threshold,
        dropout=args.dropout,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"Flower {result['flwr_version']} SecAgg+ (in-process, one round)")
        for key in (
            "clients", "dim", "num_shares", "neighbors", "threshold", "dropout", "survivors",
            "client_seconds", "client_seconds_all", "server_seconds", "upload_bytes_per_client",
            "modulus_bits", "correct", "max_abs_error",
        ):
            print(f"  {key:24s} {result[key]}")
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
