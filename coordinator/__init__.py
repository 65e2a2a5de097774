"""The coordinator: rounds, strategies, the secure-aggregation driver and the simulation engine
(coming next)."""

__all__: list[str] = []
