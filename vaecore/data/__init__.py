"""The data sets and their batches: MNIST (``mnist``), text corpora and vocabularies (``text_data``),
image batches and memory checks (``batching``).

Imports only the foundation modules and vaecore.settings; nothing here imports jax, torch or a
backend package."""
