"""One site agent in its own process, for the test that kills a site with SIGKILL mid-round.

    python tests/net_site.py URL CA CERT KEY IDENTITY_PEM CLIENT_ID ROUND_HEX N DIM SEED HANG_AT

HANG_AT is a stage name at which the participant stops answering (sleeps), or "none"."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.hazmat.primitives import serialization  # noqa: E402

from clients.agent import SiteAgent, site_tls_context  # noqa: E402
from net_round import SecAggParticipant, inputs_for, round_config  # noqa: E402
from secagg import SecAggClient  # noqa: E402
from secagg.client import ClientState  # noqa: E402


class Hanging(SecAggParticipant):
    def __init__(self, client, values, hang_at: str) -> None:
        super().__init__(client, values)
        self.hang_at = hang_at

    def on_message(self, data: bytes):
        if self.client.state is ClientState.AWAIT_DELIVERY and self.hang_at == "masked_input":
            print("hanging", flush=True)
            time.sleep(120)
        return super().on_message(data)


def main(argv: list[str]) -> int:
    url, ca, cert, key, identity_pem, cid, round_hex, n, dim, seed, hang_at = argv
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    config = round_config(int(n), int(dim), round_id=bytes.fromhex(round_hex))
    client_id = int(cid)
    values = inputs_for(config, int(seed))[client_id]
    identity = serialization.load_pem_private_key(Path(identity_pem).read_bytes(), None)
    agent = SiteAgent(base_url=url, tls=site_tls_context(certfile=cert, keyfile=key, cafile=ca),
                      identity=identity, client_id=client_id,
                      participant=Hanging(SecAggClient(client_id, config), values, hang_at),
                      poll_wait=2.0, run_seconds=60.0, max_polls=200)
    print("ready", flush=True)
    report = agent.run()
    print(report.outcome, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
