"""Drive real clients and a real server through the stages of a round, for tests that poke at
one stage (every message passed with the sender the transport would authenticate)."""

from __future__ import annotations

from secagg import InvalidMessage


def send(server, client_id: int, message: bytes) -> None:
    server.receive(message, sender=client_id)


def advertise_and_reveal(clients, server) -> dict[int, bytes]:
    """Stage advertise_keys in full; returns the server's nonces message for each client."""
    for c, client in clients.items():
        send(server, c, client.advertise_keys())
    rosters = server.close_stage()
    for c, m in rosters.items():
        send(server, c, clients[c].reveal_nonce(m))
    return server.close_stage()


def to_masked_input(clients, server) -> dict[int, bytes]:
    """Through share_keys; returns each client's delivery for the masked-input stage."""
    nonces = advertise_and_reveal(clients, server)
    for c, m in nonces.items():
        send(server, c, clients[c].share_keys(m))
    return server.close_stage()


def try_send(server, client_id: int, message: bytes) -> bool:
    try:
        send(server, client_id, message)
    except InvalidMessage:
        return False
    return True
