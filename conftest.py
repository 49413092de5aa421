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


# The test files that take longest, heaviest first. Under ``--dist loadfile`` a worker takes a whole file, and
# xdist would otherwise start the files with the most tests first, so the few long end-to-end files started
# late (``--no-loadscope-reorder`` keeps this order instead). Measured 2026-12-06: no faster (2,587 s against
# 2,279 s before, within the spread of earlier runs); the per-file summary showed the two workers already
# balanced (the longest files 770 s and 699 s of about 5,100), so the suite is bound by its total CPU.
HEAVY_FIRST = ("tests/test_data_parallel.py", "tests/test_text_resume.py", "tests/test_resume.py",
               "tests/test_transformer_runs.py", "tests/test_training_modes.py", "tests/test_text_cli.py",
               "tests/test_carry.py", "parity_tests/test_text_iwae_parity.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: each file's order kept


FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Seconds per test file (setup, call and teardown), summed where the reports arrive (xdist's controller)."""
    name = report.nodeid.split("::")[0]
    FILE_SECONDS[name] = FILE_SECONDS.get(name, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workerinput") or not FILE_SECONDS:
        return
    longest = sorted(FILE_SECONDS.items(), key=lambda kv: -kv[1])[:12]
    terminalreporter.write_sep("=", f"the {len(longest)} longest test files of {len(FILE_SECONDS)} (seconds, all tests)")
    for name, seconds in longest:
        terminalreporter.write_line(f"{seconds:9.1f}s  {name}")
