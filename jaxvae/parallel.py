"""Data parallelism in JAX through ``jax.sharding``: a one-axis ``Mesh`` over every device the run
sees (on every host), global batches sharded on their first axis (``NamedSharding(mesh, P("data"))``),
parameters, optimiser state and running statistics replicated.

The engines' jitted steps are written for the global batch; XLA partitions them over the mesh and
inserts the collectives, so every term that spans examples (the MMD between the q(z) samples and
the prior samples, the per-dimension batch KL of free bits, the BN-VAE's batch statistics) is the
global batch's, and the noise drawn inside a step (``jax.random`` is the same for any sharding) is
the one-device run's. With one device nothing is sharded: the one-device path is unchanged.

Several hosts: start ``train.py`` once per host with ``JAX_COORDINATOR_ADDRESS`` (host:port of
process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` in the environment; ``start`` calls
``jax.distributed.initialize`` with them, and each process puts only its own rows of a batch on its
devices (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vaecore.runs.parallel import Layout, check_port, check_rank, shard_rows
from vaecore.settings.config import ConfigError

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def start(cfg=None) -> Layout:
    """Join the multi-process run the environment names (``ENV``), if any; the run's layout."""
    given = {name: os.environ.get(name, "") for name in ENV}
    if os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1") and not any(given.values()):
        raise ConfigError("--backend jax runs one process per host over all its devices, not one per device under "
                          "torchrun; start python train.py once per host (see the README's 'Several devices and "
                          "hosts')")
    if any(given.values()) and not jax.distributed.is_initialized():
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ConfigError(f"a multi-process JAX run needs {', '.join(ENV)} in the environment; {missing[0]} is "
                              f"not set (or unset them all for one process)")
        try:
            processes, index = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
        except ValueError:
            raise ConfigError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers; got "
                              f"{given['JAX_NUM_PROCESSES']!r} and {given['JAX_PROCESS_ID']!r}") from None
        check_rank(processes, index, ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"))
        host, _, port = given["JAX_COORDINATOR_ADDRESS"].rpartition(":")
        if not host:
            raise ConfigError(f"JAX_COORDINATOR_ADDRESS {given['JAX_COORDINATOR_ADDRESS']!r} must be host:port (the "
                              f"address of process 0)")
        check_port("JAX_COORDINATOR_ADDRESS's port", port)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes exchange through gloo
        jax.distributed.initialize(coordinator_address=given["JAX_COORDINATOR_ADDRESS"], num_processes=processes,
                                   process_id=index)
    return layout()


def stop(finished: bool = False) -> None:
    """Leave the multi-process run, if any (``jax.distributed.shutdown`` waits for every process
    itself, after a ``finished`` run or not)."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def main_refused(refused: bool) -> bool:
    """The main process's ``refused`` on every process (``vaecore.runner.driver.agree``: a run the main
    process refuses stops everywhere, instead of waiting for it in a collective)."""
    if jax.process_count() == 1:
        return refused
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(refused)))


def layout() -> Layout:
    return Layout(devices=jax.device_count(), processes=jax.process_count(), process_index=jax.process_index(),
                  platform=jax.default_backend(), vote=main_refused)


class Sharder:
    """Puts a run's arrays on the mesh over every device, and brings results back to numpy."""

    def __init__(self):
        self.devices = jax.device_count()
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.batch = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())

    def replicate(self, tree):
        """A pytree (parameters, optimiser state) copied to every device."""
        if self.devices == 1:
            return tree
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(self._replicated_global, tree)

    def _replicated_global(self, a) -> jax.Array:
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed keys travel as their data
            return jax.random.wrap_key_data(self._replicated_global(jax.random.key_data(a)),
                                            impl=jax.random.key_impl(a))
        return jax.make_array_from_process_local_data(self.replicated, np.asarray(a))

    def rows(self, x, dtype=None, axis: int = 0) -> jax.Array:
        """A global batch (numpy) split on its examples' axis (``axis``) across the devices;
        replicated when it does not split evenly (the short last batch of an evaluation). Each
        process puts only its own rows on its devices."""
        x = np.asarray(x, dtype)
        if self.devices == 1:
            return jnp.asarray(x)
        if x.shape[axis] % self.devices:
            return self.whole(x)
        sharding = self.batch if axis == 0 else NamedSharding(self.mesh, P(*[None] * axis, "data"))
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        local = np.take(x, range(x.shape[axis])[shard_rows(x.shape[axis], jax.process_count(), jax.process_index())],
                        axis=axis)
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    def whole(self, x) -> jax.Array:
        """An array every device holds whole."""
        x = np.asarray(x)
        if self.devices == 1:
            return jnp.asarray(x)
        if jax.process_count() == 1:
            return jax.device_put(x, self.replicated)
        return jax.make_array_from_process_local_data(self.replicated, x, x.shape)

    def local(self, tree):
        """A pytree on this process's first device alone, for what one process does by itself (the
        pictures and the generated text); the same tree with one process."""
        if jax.process_count() == 1:
            return tree
        def local(a):
            if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(local(jax.random.key_data(a)), impl=jax.random.key_impl(a))
            return jax.device_put(self.fetch(a), jax.local_devices()[0])

        return jax.tree.map(local, tree)

    @staticmethod
    def fetch(a) -> np.ndarray:
        """A global array as numpy, on every process."""
        if jax.process_count() == 1 or a.is_fully_replicated:
            return np.asarray(a)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
