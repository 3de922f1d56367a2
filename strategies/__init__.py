"""Strategy catalog: one module per strategy family, imported here so it registers."""

from strategies import baselines  # noqa: F401
