"""The run folder and its records: file names, config and lock (``rundir``), the metrics log
(``metrics``), checkpoint checksums (``checksum``), the device layout (``parallel``).

Imports only the foundation modules and vaecore.settings; nothing here imports jax, torch or a
backend package."""
