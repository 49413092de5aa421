"""A run end to end: the training loop (``driver``), flags to a run's config and folder (``options``),
reports and comparisons (``report``).

Imports only the foundation modules and the other sub-packages of vaecore; nothing here imports jax,
torch or a backend package."""
