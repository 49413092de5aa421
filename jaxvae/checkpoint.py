"""Checkpoints of the JAX engines: an orbax CheckpointManager (each step written to a temporary
directory and renamed when complete) holding a state pytree and JSON metadata, newest ``keep`` kept."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import jax


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

        manager = self._get()
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()

    def restore_latest(self, target) -> tuple[object, dict] | None:
        """(state shaped like ``target``, metadata) of the newest checkpoint that reads back whole
        (a damaged one is skipped), or None."""
        import orbax.checkpoint as ocp

        with _quiet_orbax():  # a damaged checkpoint is reported once, below, not in orbax's log lines
            manager = self._get()
            steps = sorted(manager.all_steps(), reverse=True)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for step in steps:
            try:
                with _quiet_orbax():
                    restored = manager.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 -- any damage: fall back to the previous one
                print(f"warning: skipping unreadable checkpoint {step}: {type(e).__name__}: {str(e)[:200]}")
                continue
            # orbax gives containers back as plain tuples/dicts: put the leaves back into our structure
            state = jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(restored.state))
            return state, dict(restored.meta)
        return None
