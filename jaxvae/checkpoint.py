"""Checkpoints of the JAX engines: an orbax CheckpointManager (each step written to a temporary
directory and renamed when complete) holding a state pytree and JSON metadata, newest ``keep`` kept.

The metadata carries a sha256 of the state's arrays and of itself (``vaecore.runs.checksum``), written in
the same orbax save, so a checkpoint and its digest are complete together or absent together. On
restore the newest checkpoint that reads back, is ours and matches its digest is used; any other is
reported on stderr and the next older one tried. One of ours whose arrays do not fit the model
(config.json edited since) is a ``ConfigError``."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vaecore.runs import checksum
from vaecore.settings.config import ConfigError


@contextlib.contextmanager
def _quiet_orbax():
    """Hold back orbax's (absl's) error log lines while a checkpoint is read."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _host(a) -> np.ndarray:
    """A state leaf as numpy on this process (typed keys as their data; a replicated array that
    spans processes from this process's copy)."""
    if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return np.asarray(a.addressable_data(0))
    return np.asarray(a)


def state_digest(state, meta: dict) -> str:
    """sha256 over the state's leaves (in pytree order) and the metadata without its digest."""
    rest = {k: v for k, v in meta.items() if k != checksum.DIGEST}
    return checksum.content_digest({"leaves": jax.tree.leaves(state), "meta": rest}, _host)


def _name(path) -> str:
    """A leaf's path as orbax names it ("opt_state.0.mu.encoder.out.kernel")."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


def _shape(a) -> tuple:
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        return tuple(jax.random.key_data(a).shape)
    return tuple(a.shape)


def _ours(meta) -> bool:
    return isinstance(meta, dict) and "step" in meta  # as torchvae.checkpoint asks of its meta


class Checkpoints:
    def __init__(self, directory: Path, keep: int):
        self.directory, self.keep = Path(directory).absolute(), keep
        self._manager = None

    def _get(self):
        import orbax.checkpoint as ocp

        if self._manager is None:
            options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=False)
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def save(self, step: int, state, meta: dict) -> None:
        import orbax.checkpoint as ocp

        meta = {**meta, checksum.DIGEST: state_digest(state, meta)}
        manager = self._get()
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()

    def restore_latest(self, target, step: int | None = None) -> tuple[object, dict] | None:
        """(state shaped like ``target``, metadata) of the newest checkpoint that reads back whole,
        is ours and matches its digest (another is reported on stderr and skipped), or None. With
        ``step``: that step's checkpoint, which must exist and read back whole
        (``checksum.missing_step`` / ``checksum.unreadable_step``)."""
        with _quiet_orbax():  # a damaged checkpoint is reported once, below, not in orbax's log lines
            steps = sorted(self._get().all_steps(), reverse=True)
        if step is not None:
            if step not in steps:
                raise checksum.missing_step(step, steps, self.directory)
            try:
                with _quiet_orbax():
                    return self._read(step, target)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 -- the asked step only: no other one stands in for it
                raise checksum.unreadable_step(self.directory / str(step), e) from None
        for newest in steps:
            try:
                with _quiet_orbax():
                    return self._read(newest, target)
            except ConfigError:
                raise
            except checksum.DamagedCheckpoint as e:
                checksum.report_skipped(str(newest), str(e))
            except Exception as e:  # noqa: BLE001 -- any damage: fall back to the previous one
                checksum.report_skipped(str(newest), f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        return None

    def _read(self, step: int, target) -> tuple[object, dict]:
        import orbax.checkpoint as ocp

        manager = self._get()
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if not _ours(meta):
            raise checksum.ForeignCheckpoint("not a checkpoint of this project (its metadata has no step)")
        saved = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
        found = {leaf.name: tuple(leaf.shape) for leaf in jax.tree.leaves(saved)}
        expected = {_name(path): _shape(leaf) for path, leaf in jax.tree.leaves_with_path(target)}
        difference = checksum.first_shape_difference(expected, found)
        if difference:
            raise checksum.config_mismatch(str(self.directory / str(step)), difference)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        # orbax gives containers back as plain tuples/dicts: put the leaves back into our structure
        state = jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(restored.state))
        meta = dict(meta)
        checksum.verify(meta.pop(checksum.DIGEST, None), state_digest(state, meta))
        return state, meta
