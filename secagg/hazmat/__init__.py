"""Dangerous primitives of the secure-aggregation protocol.

Nothing here is safe to use on its own: these are the pieces (mask PRG, Shamir sharing, key
agreement, authenticated encryption, bit packing) that :mod:`secagg.client` and
:mod:`secagg.server` combine into a protocol. Use :func:`secagg.simulate_round` or the state
machines instead; the names in this package may change without notice.
"""
