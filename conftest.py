"""Shared pytest fixtures and the session's JAX compilation cache."""

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch's OpenMP threads and XLA's CPU threads spin against each other on a small machine
    (torch steps ~100x slower once JAX has run in the process); one torch thread avoids it.
    Modules that run both backends opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    """One persistent JAX compilation cache for the whole test session, workers and the processes they
    start included: a JAX text run compiles the same step, evaluation and decoding as the run before it
    (a SIGKILL test runs three), and a cached executable is the one compiled before, so results do not
    change. Measured on one JAX text run (120 steps): 30 s of CPU without the cache, 13 s with it.
    A cache size turns on JAX's file lock, so two workers never read an entry half written."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # a worker inherits the controller's; a cache the user chose is kept
    folder = tempfile.mkdtemp(prefix="twinvae-jax-cache-")
    config._twinvae_jax_cache = folder
    os.environ.update(JAX_COMPILATION_CACHE_DIR=folder, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", JAX_COMPILATION_CACHE_MAX_SIZE=str(4 << 30))


def pytest_unconfigure(config):
    folder = getattr(config, "_twinvae_jax_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
