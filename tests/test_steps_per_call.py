"""Several image steps per engine call: where the driver's calls end, the JAX MLP's compiled loop
against the one-step function it replaces, and the cached epoch order."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from vaecore.data import batching
from vaecore.runner import driver
from vaecore.settings.config import ImageModelConfig, LossConfig, RunConfig, TrainConfig
from vaecore.task.image_task import steps_per_call


def test_call_end_stops_at_every_point_where_the_driver_acts():
    # log every 5, epoch of 7, checkpoint every 10, 32 steps, up to 8 per call
    ends, step = [], 0
    while step < 32:
        step = driver.call_end(step, 32, 8, (5, 7, 10))
        ends.append(step)
    assert ends == [5, 7, 10, 14, 15, 20, 21, 25, 28, 30, 32]
    assert driver.call_end(0, 100, 1, (50,)) == 1
    assert driver.call_end(48, 100, 64, (50, 1000)) == 50
    assert driver.call_end(90, 93, 64, (1000,)) == 93


@pytest.mark.parametrize("batch,expected", [(1, 64), (20, 64), (64, 64), (100, 32), (128, 32), (500, 8),
                                            (4096, 1), (10000, 1)])
def test_steps_per_call_is_a_power_of_two_of_about_4096_images(batch, expected):
    assert steps_per_call(batch) == expected


def test_epoch_order_is_cached_read_only_and_unchanged():
    order = batching.epoch_order(1000, 3, 2)
    assert order is batching.epoch_order(1000, 3, 2)
    np.testing.assert_array_equal(order, np.random.default_rng([3, 2, 0]).permutation(1000))
    with pytest.raises(ValueError):
        order[0] = 5


def _engine(tmp_path, kind="mlp", objective="elbo", dtype="float32"):
    from jaxvae.train import JaxEngine

    model = ImageModelConfig(kind=kind, latent_dim=4, hidden_sizes=(32, 16), conv_channels=(4, 8), conv_dense=16)
    cfg = RunConfig(backend="jax", model=model, loss=LossConfig(objective=objective, alpha=0.5, lam=10.0),
                    train=TrainConfig(batch_size=8, dtype=dtype, seed=5))
    return JaxEngine(cfg, tmp_path)


def _batches(n):
    rng = np.random.default_rng(1)
    return np.stack([(rng.random((8, 784)) < 0.3).astype(np.float32) for _ in range(n)])


@pytest.mark.parametrize("objective", ["elbo", "mmd", "iwae"])
def test_the_jax_loop_takes_the_same_steps_as_the_one_step_function(tmp_path, objective):
    """The compiled loop (first n of a padded buffer, steps first .. first + n - 1) against the
    jitted single step it wraps, step by step from the same state: the same terms and parameters."""
    from jaxvae.train import make_train_step

    looped, single = _engine(tmp_path / "a", objective=objective), _engine(tmp_path / "b", objective=objective)
    assert looped._loop
    bs = _batches(7)
    got = looped.train_steps(bs[:3], 10, 1.0, 0.5) + looped.train_steps(bs[3:], 13, 1.0, 0.5)
    step = make_train_step(single.graphdef, single.tx, single.cfg.loss, 4, 0.5)
    want = []
    for i, x in enumerate(bs):
        single.params, single.opt_state, single.stats, terms = step(single.params, single.opt_state, single.stats,
                                                                    single.key, x, 10 + i)
        want.append({k: float(v) for k, v in terms.items()})
    assert len(got) == 7 and got[0].keys() == want[0].keys()
    for g, w in zip(got, want):
        np.testing.assert_allclose([g[k] for k in sorted(g)], [w[k] for k in sorted(w)], rtol=2e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), looped.params, single.params)
    assert got[0] != got[1]  # different batches and noise at every step


def test_one_call_of_n_steps_is_n_calls_of_one_step(tmp_path):
    """Exactly: the driver's calls end at different steps in a resumed run only if the periods differ,
    and a run resumed on different periods must not change."""
    a, b = _engine(tmp_path / "a", dtype="float64"), _engine(tmp_path / "b", dtype="float64")
    bs = _batches(5)
    got = a.train_steps(bs, 0, 1.0, 1.0)
    want = [b.train_step(x, i, 1.0, 1.0) for i, x in enumerate(bs)]
    assert got == want
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a.params, b.params)


def test_too_many_batches_for_one_call_is_refused(tmp_path):
    engine = _engine(tmp_path)
    with pytest.raises(ValueError, match="at most 64 batches"):
        engine.train_steps(np.zeros((65, 8, 784), np.float32), 0, 1.0, 1.0)


def test_the_conv_engine_steps_one_by_one(tmp_path):
    """The convolutional model keeps a call per step (XLA's CPU loop slows its convolutions)."""
    a, b = _engine(tmp_path / "a", kind="conv"), _engine(tmp_path / "b", kind="conv")
    assert not a._loop
    bs = _batches(3)
    assert a.train_steps(bs, 4, 1.0, 1.0) == [b.train_step(x, 4 + i, 1.0, 1.0) for i, x in enumerate(bs)]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_run_logs_the_same_points_whatever_the_call_size(tmp_path, backend, monkeypatch):
    """train.py with the task's calls of up to 32 steps against calls of one step: the same metrics
    (float64), and the same checkpoints' step numbers."""
    import train
    from vaecore.task import image_task

    def run(name, per_call):
        monkeypatch.setattr(image_task, "steps_per_call", lambda batch: per_call)
        if backend == "jax":
            import jaxvae.train
            monkeypatch.setattr(jaxvae.train, "steps_per_call", lambda batch: per_call)
        workdir = tmp_path / name
        assert train.main(["--backend", backend, "--max-steps", "70", "--batch-size", "32", "--hidden-sizes", "32",
                           "--latent-dim", "4", "--dtype", "float64", "--log-every", "15", "--checkpoint-every",
                           "40", "--workdir", str(workdir)]) == 0
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if "per_s" not in k} for r in rows]

    many, one = run("many", 32), run("one", 1)
    assert [r["step"] for r in many if r["split"] == "train"] == [15, 30, 45, 60, 70]
    assert len(many) == len(one)
    for m, o in zip(many, one):
        assert m.keys() == o.keys() and m["split"] == o["split"]
        keys = sorted(k for k in m if k != "split")
        np.testing.assert_allclose([m[k] for k in keys], [o[k] for k in keys], rtol=1e-12)
