"""The two frameworks behind ``twinvae.Model``: a run folder's newest checkpoint restored by its own
backend (``<backend>vae.evaluation.load_model``, what ``evaluate.py`` uses), a model of either backend
built from a config and filled with canonical parameters (``<backend>vae.params.import_params``), and
the canonical parameters of a loaded model (``export_params``). Only the backends asked for are
imported: a torch-only install loads a torch run or an export in torch without JAX."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from vaecore.settings.config import RunConfig

BACKENDS = ("jax", "torch")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}; got {backend!r}")


def backend_package(backend: str):
    """The backend object (``jaxvae.backend.BACKEND`` or ``torchvae.backend.BACKEND``), imported only when asked for; its
    entry points (``engine``, ``parallel``, ``evaluation``, ``decoding``, ``params``) import their
    modules on first use."""
    check_backend(backend)
    if backend == "jax":
        from jaxvae.backend import BACKEND

        return BACKEND
    from torchvae.backend import BACKEND

    return BACKEND


def module(backend: str, name: str):
    """The backend's module ``name`` ("evaluation", "decoding", "params", "parallel")."""
    return getattr(backend_package(backend), name)


def with_device(cfg: RunConfig, backend: str, device: str | None) -> RunConfig:
    """``cfg`` to run where asked: torch takes ``device`` ("cpu", "cuda", "cuda:N"; None: "auto"),
    JAX runs on its default device (``JAX_PLATFORMS`` picks it)."""
    if device is not None and backend == "jax" and device != "auto":
        raise ValueError(f"device {device!r} applies to the torch backend; JAX runs on its default device "
                         f"(set JAX_PLATFORMS=cpu to force the CPU)")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device or "auto"))


def restore_run(cfg: RunConfig, workdir: Path, step: int | None = None) -> tuple[Any, int]:
    """The evaluation adapter (``ImageModel`` / ``TextModel`` of ``cfg.backend``) of the run's newest
    checkpoint (or ``step``'s) and its step, through the backend's own restore code."""
    try:
        return module(cfg.backend, "evaluation").load_model(cfg, Path(workdir), step)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None


def canonical_params(adapter: Any, backend: str) -> dict[str, np.ndarray]:
    """The framework-neutral parameters (torch's names and layouts) of a loaded adapter's model."""
    return module(backend, "params").export_params(adapter.vae)


def build(cfg: RunConfig, backend: str, params: dict[str, np.ndarray]) -> Any:
    """The evaluation adapter of a ``backend`` model of ``cfg``'s architecture holding ``params``.

    Raises ValueError when ``params`` do not fit the architecture (a missing or unexpected weight,
    a wrong shape: ``import_params`` names it)."""
    check_backend(backend)
    builder = _build_jax if backend == "jax" else _build_torch
    try:
        return builder(cfg, params)
    except KeyError as e:  # import_params: missing or unexpected names (a KeyError quotes its message)
        raise ValueError(f"model.safetensors does not fit config.json: {e.args[0]}") from None
    except ValueError as e:
        raise ValueError(f"model.safetensors does not fit config.json: {e}") from None


def _build_jax(cfg: RunConfig, params: dict[str, np.ndarray]) -> Any:
    import jax
    import jax.numpy as jnp

    from jaxvae import evaluation
    from jaxvae.params import import_params

    if cfg.train.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    family = evaluation.family(cfg)
    model = family.new_model(cfg, jnp.dtype(cfg.train.dtype))
    import_params(model, params)
    model.eval()
    return family.adapter(model, cfg)


def _build_torch(cfg: RunConfig, params: dict[str, np.ndarray]) -> Any:
    import torch

    from torchvae import evaluation
    from torchvae.device import resolve
    from torchvae.params import import_params

    dtype, device = getattr(torch, cfg.train.dtype), resolve(cfg.train.device)
    family = evaluation.family(cfg)
    model = family.new_model(cfg).to(device=device, dtype=dtype)
    import_params(model, params)
    return family.adapter(model, cfg)


def load_run(cfg: RunConfig, backend: str, workdir: Path, step: int | None = None) -> tuple[Any, int]:
    """The adapter of a run folder's newest checkpoint (or ``step``'s) in ``backend`` and the checkpoint's
    step. A run trained in the other framework is restored by its own backend and moved over through
    the canonical parameters."""
    check_backend(backend)
    if cfg.backend == backend:
        return restore_run(cfg, workdir, step)
    adapter, step = restore_run(with_device(cfg, cfg.backend, None), workdir, step)
    return build(cfg, backend, canonical_params(adapter, cfg.backend)), step
