"""A hospital site: private data, models, local trainers and the site agent (coming next)."""

__all__: list[str] = []
