"""Evaluation arithmetic (importance-sampled NLL, MI, active units: ``evaluation``) and the pictures
(``plots``).

Imports only the foundation modules, vaecore.settings, vaecore.data and vaecore.runs; nothing here
imports jax, torch or a backend package."""
