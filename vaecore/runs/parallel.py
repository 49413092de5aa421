"""How a run is laid out over devices and processes, framework-free.

A data-parallel run splits every global batch (``--batch-size``) into equal shards, one per device:
JAX over every device it sees (``jaxvae.parallel``), torch over the processes ``torchrun`` starts
(``torchvae.parallel``, DistributedDataParallel). The batches themselves, every random draw and the
checkpoints are the same as on one device: noise is drawn for the global batch and each shard takes
its rows, so a draw is a function of the global example index, never of the rank. Only the main
process writes the run folder (logs, metrics, config, results, pictures, text); checkpoints hold no
trace of the layout, so a run resumes on any device count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vaecore.settings.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Layout:
    """``devices``: how many shards each global batch is split into; ``processes``: how many
    processes take part (torch: one per device; JAX: one per host); ``process_index``: this one's."""

    devices: int = 1
    processes: int = 1
    process_index: int = 0
    platform: str = "cpu"
    # the main process's verdict, broadcast to every process (the backend's ``parallel.main_refused``;
    # needed only with several processes): ``vote(refused) -> refused on the main process``
    vote: Callable[[bool], bool] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder."""
        return self.process_index == 0

    @property
    def parallel(self) -> bool:
        return self.devices > 1

    def to_dict(self) -> dict:
        """What config.json records of the layout."""
        return {"devices": self.devices, "processes": self.processes, "platform": self.platform}

    def describe(self) -> str:
        if not self.parallel:
            return f"1 {self.platform} device"
        return (f"data parallel over {self.devices} {self.platform} devices in {self.processes} "
                f"process{'es' if self.processes > 1 else ''}")

    def check_batch(self, batch_size: int) -> None:
        """A global batch must split into equal shards."""
        if batch_size % self.devices:
            lower = batch_size - batch_size % self.devices
            raise ConfigError(f"--batch-size {batch_size} does not split evenly across {self.devices} devices; use a "
                              f"multiple of {self.devices} (for example {max(lower, self.devices)})")


SINGLE = Layout()


def check_rank(world: int, rank: int | None, names: tuple[str, str], fix: str = "") -> None:
    """Refuse an inconsistent multi-process environment before any rendezvous, where it would wait
    forever for processes that never come: ``world`` (named ``names[0]``) must be at least 1 and
    ``rank`` (``names[1]``; None: not set) one of ``0 .. world - 1``. ``fix``: what to do, appended."""
    count, index = names
    if world < 1:
        raise ConfigError(f"{count} {world}: a run needs at least 1 process{fix}")
    if rank is not None and not 0 <= rank < world:
        raise ConfigError(f"{index} {rank} is not one of the {world} processes (0 to {world - 1}){fix}")


def check_port(name: str, value: str, fix: str = "") -> None:
    """A rendezvous port (``value`` of the variable ``name``) must be an integer from 1 to 65535."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"{name} {value!r} is not a port (an integer from 1 to 65535){fix}")


def shard_rows(n: int, shards: int, index: int) -> slice:
    """The rows of shard ``index`` of ``n`` rows split into ``shards`` contiguous parts (the first
    ``n % shards`` parts one row longer, as ``numpy.array_split``)."""
    bounds = np.cumsum([0] + [n // shards + (i < n % shards) for i in range(shards)])
    return slice(int(bounds[index]), int(bounds[index + 1]))
