"""What a simulation leaves for ``python -m privacy audit run``: every secure round's facts and
the coordinator's whole view of it.

For each secure release the run appends one line to ``secagg_rounds.jsonl`` and writes the
round's transcript to ``transcripts/round-NNNN-<task>.bin``:

* the line holds the round's public facts as the coordinator announced them — the secagg
  round configuration (round id, cohort size, dimension, modulus bits, degree, threshold,
  mode and rates), the sites in client-id order, the privacy mechanism and encoding plan
  (noise kind, each site's noise variance, the number of sites it was planned for), the
  sites the outcome names as summed, whether it aborted, the event each summed site was
  told to charge, and the transcript file's SHA-256;
* the transcript is every protocol message that crossed the coordinator's boundary, in order
  and as the bytes that crossed it (the same view ``secagg.Transcript`` keeps), framed as
  ``b"CTR1"`` then per message ``>BBII`` (stage index in :data:`STAGES`, direction 0 = to the
  coordinator / 1 = from it, client id, length) and the bytes.

Nothing here is a secret the coordinator did not hold: it is the coordinator's own view. The
audit (``privacy.audit``) reads these files, never this module, so the privacy package does
not depend on the coordinator's.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from privacy import event_to_dict
from secagg import Stage

from .transport import InMemoryTransport

__all__ = ["AuditRecorder", "STAGES", "TRANSCRIPT_MAGIC", "ROUNDS_FILE", "TRANSCRIPTS_DIR"]

STAGES = tuple(s.value for s in Stage)
TRANSCRIPT_MAGIC = b"CTR1"
ROUNDS_FILE = "secagg_rounds.jsonl"
TRANSCRIPTS_DIR = "transcripts"
_FRAME = struct.Struct(">BBII")


def encode_transcript(log: list[tuple[Stage, bool, str, bytes]],
                      client_id: dict[str, int]) -> bytes:
    parts = [TRANSCRIPT_MAGIC]
    for stage, to_coordinator, site, data in log:
        parts.append(_FRAME.pack(STAGES.index(stage.value), 0 if to_coordinator else 1,
                                 client_id[site], len(data)))
        parts.append(bytes(data))
    return b"".join(parts)


class AuditRecorder:
    """Appends each finished secure round of a run to ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        (self.out / TRANSCRIPTS_DIR).mkdir(parents=True, exist_ok=True)
        self.path = self.out / ROUNDS_FILE
        self.path.write_text("")

    def __call__(self, transport: InMemoryTransport) -> None:
        agg = transport.aggregation
        ann = agg.announcement
        request = ann.request
        config = ann.round_config()
        client_id = {site: ann.client_id(site) for site in ann.cohort}
        blob = encode_transcript(transport.log, client_id)
        name = f"round-{request.round_number:04d}-{request.task.value}.bin"
        (self.out / TRANSCRIPTS_DIR / name).write_bytes(blob)
        outcome = agg.outcome()
        plan = ann.encoding
        included = sorted(outcome.included, key=ann.client_id)
        event = None if outcome.aborted else ann.event(survivors=max(1, len(included)))
        line: dict[str, Any] = {
            "round": request.round_number,
            "task": request.task.value,
            "release_id": request.release_id.hex(),
            "secagg": {"round_id": config.round_id.hex(), "clients": list(config.clients),
                       "dim": config.dim, "modulus_bits": config.modulus_bits,
                       "neighbors": config.neighbors, "threshold": config.threshold,
                       "malicious": config.malicious, "corrupt_rate": config.corrupt_rate,
                       "dropout_rate": config.dropout_rate},
            "sites": list(ann.cohort),
            "mechanism": ann.privacy.mechanism.value,
            "noise": plan.noise.value,
            "local_variance": plan.local_variance,
            "planned_clients": plan.expected_clients,
            "l2_sensitivity": plan.l2_sensitivity,
            "l1_sensitivity": plan.l1_sensitivity,
            "aborted": outcome.aborted,
            "included": included,
            "event": None if event is None else event_to_dict(event),
            "transcript": f"{TRANSCRIPTS_DIR}/{name}",
            "transcript_sha256": hashlib.sha256(blob).hexdigest(),
            "rejected": [list(r) for r in transport.rejected],
        }
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
