"""The one engine protocol (``vaecore.runner.driver.Engine``), checked against all four engines: the same
method signatures, the same return types, and a save/restore round trip that gives back the same
numbers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from vaecore.data.text_data import TextDataset, Vocab
from vaecore.runner import driver
from vaecore.settings.config import ImageModelConfig, LossConfig, RunConfig, TextTrainConfig, TrainConfig
from vaecore.settings.text_config import TextModelConfig

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
ENGINES = [("jax", "mnist"), ("torch", "mnist"), ("jax", "text"), ("torch", "text")]
TERMS = {"recon", "kl", "mmd", "total"}  # every engine returns these (the image engines add neg_elbo)


def make(backend: str, task: str, workdir):
    train = TrainConfig(batch_size=4, lr=1e-3, dtype="float64", seed=3)
    loss = LossConfig(objective="mmd", alpha=0.5, lam=10.0)
    if task == "mnist":
        cfg = RunConfig(backend=backend, model=ImageModelConfig(latent_dim=3, hidden_sizes=(16,)), loss=loss,
                        train=train)
    else:
        text = TextModelConfig(vocab_size=len(WORDS) + 4, embed_dim=8, hidden_dim=8, latent_dim=3)
        cfg = RunConfig(backend=backend, task="text", loss=loss, train=train, text=text,
                        text_train=TextTrainConfig(aggressive=True))
    import importlib

    module = {"mnist": f"{backend}vae.train", "text": f"{backend}vae.text_train"}[task]
    name = {"mnist": f"{backend.capitalize()}Engine", "text": f"{backend.capitalize()}TextEngine"}[task]
    return getattr(importlib.import_module(module), name)(cfg, workdir)


def batches(task: str, n: int = 3):
    rng = np.random.default_rng(0)
    if task == "mnist":
        return [(rng.random((4, 784)) < 0.3).astype(np.float64) for _ in range(n)]
    data = TextDataset([list(rng.choice(WORDS, rng.integers(2, 6))) for _ in range(4 * n)], Vocab(WORDS))
    return list(data.batches(4, shuffle=False))


def protocol_signature(name: str) -> list[tuple]:
    params = list(inspect.signature(getattr(driver.Engine, name)).parameters.values())
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize("backend,task", ENGINES)
def test_engine_follows_the_protocol(backend, task, tmp_path):
    engine = make(backend, task, tmp_path / "a")
    assert isinstance(engine, driver.Engine)
    for name in ("train_step", "evaluate", "model", "save", "restore"):
        got = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(type(engine), name)).parameters.values()]
        assert got == protocol_signature(name), (name, got)

    assert engine.restore() is None  # nothing saved yet
    bs = batches(task)
    out = engine.train_step(bs[0], 0, 0.5, 1.0)
    assert TERMS <= set(out) and all(type(v) is float for v in out.values())
    engine.train_step(bs[1], 1, 1.0, 0.5)
    ev = engine.evaluate(bs)
    n = sum(len(b) if task == "mnist" else len(b.lengths) for b in bs)
    assert {"recon", "kl", "neg_elbo", "examples", "mean", "logvar"} <= set(ev) and ev["examples"] == n
    assert ev["mean"].shape == ev["logvar"].shape == (n, 3) and isinstance(ev["mean"], np.ndarray)
    assert ev["neg_elbo"] == pytest.approx(ev["recon"] + ev["kl"], rel=1e-12)
    assert engine.model() is not None

    engine.save(2, {"step": 2, "note": "x"})
    again = make(backend, task, tmp_path / "a")
    assert again.restore() == {"step": 2, "note": "x"}
    ev2 = again.evaluate(bs)
    np.testing.assert_array_equal(ev2["mean"], ev["mean"])
    assert ev2["recon"] == ev["recon"] and ev2["kl"] == ev["kl"]
    # the step after the restore is the step the saved engine would have taken
    assert again.train_step(bs[2], 2, 1.0, 1.0) == engine.train_step(bs[2], 2, 1.0, 1.0)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_image_engines_update_the_whole_model_only(backend, tmp_path):
    engine = make(backend, "mnist", tmp_path)
    with pytest.raises(ValueError, match="whole model"):
        engine.train_step(batches("mnist")[0], 0, 1.0, 1.0, part="encoder")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_image_engine_kl_weight_and_lr_scale_act(backend, tmp_path):
    """The image step's KL weight and learning-rate scale are real: with lr_scale 0 nothing moves,
    and the loss's total is recon + w (1 - alpha) KL + (alpha + lambda - 1) MMD with the given w."""
    engine = make(backend, "mnist", tmp_path)
    x = batches("mnist")[0]
    before = engine.evaluate([x])
    out = engine.train_step(x, 0, 0.25, 0.0)
    assert out["total"] == pytest.approx(out["recon"] + 0.25 * 0.5 * out["kl"] + 9.5 * out["mmd"], rel=1e-10)
    after = engine.evaluate([x])
    np.testing.assert_array_equal(after["mean"], before["mean"])
