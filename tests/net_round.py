"""Thin adapters that put a secagg server and clients behind the transport's two Protocols
(``RoundHost`` / ``RoundParticipant``), summing integer vectors, plus helpers that start a
service on loopback TLS and run site agents against it. The real round halves (branch ``split``)
replace the adapters; the transport does not change."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from clients.agent import AgentReport, SiteAgent, site_tls_context
from coordinator.service import (CoordinatorService, ServerHandle, create_app, secagg_limits,
                                 serve_in_thread, server_context)
from secagg import RoundConfig, SecAggClient, SecAggServer


class SecAggHost:
    def __init__(self, server: SecAggServer) -> None:
        self.server = server

    @property
    def stage(self):
        return self.server.stage

    def receive(self, sender: int, data: bytes) -> None:
        self.server.receive(data, sender=sender)

    def close_stage(self) -> dict[int, bytes]:
        return self.server.close_stage()

    def pending(self) -> frozenset[int]:
        return self.server.pending()


class SecAggParticipant:
    def __init__(self, client: SecAggClient, values: np.ndarray) -> None:
        self.client = client
        self.values = values

    def start(self) -> bytes:
        return self.client.advertise_keys()

    def on_message(self, data: bytes) -> bytes | None:
        return self.client.respond(data, self.values)


def round_config(n: int, dim: int, *, bits: int = 32, round_id: bytes | None = None,
                 dropout_rate: float = 0.34) -> RoundConfig:
    return RoundConfig(round_id=round_id or os.urandom(16), clients=tuple(range(1, n + 1)),
                       dim=dim, modulus_bits=bits, neighbors=n - 1, threshold=n // 2 + 1,
                       dropout_rate=dropout_rate)


def inputs_for(config: RoundConfig, seed: int = 7) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 1 << 16, config.dim, dtype=np.uint32) for c in config.clients}


@dataclass
class Running:
    service: CoordinatorService
    handle: ServerHandle

    @property
    def url(self) -> str:
        return self.handle.url

    def stop(self) -> None:
        self.handle.stop()


def start_service(pki, *, sock=None, **kwargs) -> Running:
    service = CoordinatorService(pki.roster, **kwargs)
    context = server_context(certfile=pki.server.cert, keyfile=pki.server.key, cafile=pki.ca)
    return Running(service, serve_in_thread(create_app(service), context, sock=sock))


def open_secagg_round(running: Running, config: RoundConfig, *, stage_timeout: float = 10.0):
    server = SecAggServer(config)
    session = running.service.open_round(config.round_id, SecAggHost(server),
                                         cohort=frozenset(config.clients),
                                         limits=secagg_limits(config),
                                         stage_timeout=stage_timeout)
    return server, session


def make_agent(pki, url: str, client_id: int, participant, **kwargs) -> SiteAgent:
    kit = pki.sites[client_id]
    tls = site_tls_context(certfile=kit.tls.cert, keyfile=kit.tls.key, cafile=pki.ca)
    kwargs.setdefault("poll_wait", 2.0)
    kwargs.setdefault("run_seconds", 30.0)
    kwargs.setdefault("max_polls", 200)
    return SiteAgent(base_url=url, tls=tls, identity=kit.identity, client_id=client_id,
                     participant=participant, **kwargs)


def run_agents(agents: dict[int, SiteAgent], timeout: float = 60.0) -> dict[int, AgentReport]:
    reports: dict[int, AgentReport] = {}

    def go(c: int, agent: SiteAgent) -> None:
        try:
            reports[c] = agent.run()
        finally:
            agent.close()

    threads = [threading.Thread(target=go, args=(c, a), daemon=True) for c, a in agents.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return reports
