"""Shared pytest fixtures."""

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
