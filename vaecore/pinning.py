"""A child process on one CPU core: ``taskset`` plus one thread in XLA, OpenMP and MKL, so that runs
side by side (``scripts/study.py``) or a measurement (``bench/run_overhead.py``) do not share cores."""

from __future__ import annotations

import os

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def on_core(cmd: list[str], core: int) -> tuple[list[str], dict]:
    """``cmd`` and its environment, to run on CPU ``core`` with one thread."""
    return ["taskset", "-c", str(core), *cmd], {**os.environ, **ONE_THREAD}
