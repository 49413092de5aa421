"""The training modes against posterior collapse, as the driver and the engines run them:
aggressive inference (He et al. 2019: one-sided updates, the inner loop's stopping rule, the
switch-off on validation MI) and autoencoder pretraining (Li et al. 2019: KL weight 0, then a
re-initialised decoder and optimiser)."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import pytest

from vaecore import rng
from vaecore.data.text_data import TextBatch
from vaecore.settings.config import RunConfig, TextTrainConfig, TrainConfig
from vaecore.settings.text_config import DECODER_REINIT_MODULES, TextModelConfig, module_side

os.environ.setdefault("OMP_NUM_THREADS", "1")
WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "fast", "slow", "big", "small"]


def config(backend: str, data=None, **text_train) -> RunConfig:
    return RunConfig(backend=backend, task="text", data=data,
                     text=TextModelConfig(vocab_size=16, embed_dim=8, hidden_dim=8, latent_dim=3, bn_gamma=0.5),
                     text_train=TextTrainConfig(**text_train),
                     train=TrainConfig(batch_size=8, epochs=4, lr=1e-2, log_every=2, checkpoint_every=1000))


BATCH = TextBatch(np.array([[1, 5, 6, 7, 2, 0], [1, 8, 9, 10, 11, 2]], np.int32), np.array([5, 6], np.int32))


def engine_for(backend: str, cfg: RunConfig, workdir):
    if backend == "torch":
        from torchvae.text_train import TorchTextEngine

        return TorchTextEngine(cfg, workdir)
    from jaxvae.text_train import JaxTextEngine

    return JaxTextEngine(cfg, workdir)


def params_of(engine) -> dict[str, np.ndarray]:
    """Canonical parameters and running averages of the engine's model."""
    if hasattr(engine, "_model"):
        from torchvae.params import export_params
    else:
        from jaxvae.params import export_params
    return export_params(engine.model())


def optimizer_moments(engine, side: str) -> list[np.ndarray]:
    """Adam's first and second moments of one side's parameters (empty when never stepped)."""
    if hasattr(engine, "_model"):
        out = []
        for name, p in engine._model.named_parameters():
            state = engine.opt.state.get(p, {})
            if module_side(name) == side and state:
                out += [state["exp_avg"].numpy().copy(), state["exp_avg_sq"].numpy().copy()]
        return out
    import jax

    return [np.asarray(x).copy() for x in jax.tree.leaves(engine.opt_state[side])]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_one_sided_update_leaves_the_other_side_bit_identical(backend, tmp_path):
    engine = engine_for(backend, config(backend, aggressive=True), tmp_path)
    engine.train_step(BATCH, 0, 1.0, 1.0)  # both sides have Adam state from here on
    for part, other in (("encoder", "decoder"), ("decoder", "encoder")):
        before, moments = params_of(engine), optimizer_moments(engine, other)
        engine.train_step(BATCH, 1, 1.0, 1.0, part=part, inner=3 if part == "encoder" else None)
        after = params_of(engine)
        for name in before:
            side = module_side(name)
            if "running" in name:  # BN's running averages follow every forward pass in training mode
                continue
            if side == other:
                np.testing.assert_array_equal(after[name], before[name], err_msg=f"{part} step moved {name}")
            elif name != "to_mean.bias":  # zero gradient under BN (see parity_tests/test_remedy_parity.py)
                assert not np.array_equal(after[name], before[name]), f"{part} step left {name} unchanged"
        assert moments and all(np.array_equal(a, b) for a, b in zip(moments, optimizer_moments(engine, other)))


def test_torch_one_sided_update_computes_only_its_side_and_equals_the_full_backward(tmp_path):
    """Without DDP a one-sided torch step asks autograd for its side's gradients alone (no weight
    gradients of the other side: aggressive inference's inner update is about a fifth cheaper); the
    parameters it gives are bit-identical to those of the DDP branch, which computes every gradient and
    drops the other side's."""
    fast, full = (engine_for("torch", config("torch", aggressive=True), tmp_path / name) for name in ("a", "b"))
    full._train_model = lambda *args, **kwargs: full._model(*args, **kwargs)  # not the model: the DDP branch
    for engine in (fast, full):
        engine.train_step(BATCH, 0, 1.0, 1.0)
    computed = []  # the parameters whose gradient autograd computed
    for name, p in fast._model.named_parameters():
        p.register_hook(lambda grad, name=name: computed.append(name))
    for step, part in enumerate(("encoder", "encoder", "decoder", "encoder"), start=1):
        computed.clear()
        fast.train_step(BATCH, step, 1.0, 1.0, part=part, inner=step if part == "encoder" else None)
        assert computed and {module_side(name) for name in computed} == {part}, (part, computed)
        full.train_step(BATCH, step, 1.0, 1.0, part=part, inner=step if part == "encoder" else None)
        a, b = params_of(fast), params_of(full)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{name} after a {part} step")


def test_one_sided_updates_need_the_per_side_state(tmp_path):
    engine = engine_for("jax", config("jax"), tmp_path)
    with pytest.raises(ValueError, match="per-side"):
        engine.train_step(BATCH, 0, 1.0, 1.0, part="encoder")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_reset_decoder_reinitialises_the_decoder_only_and_the_optimiser(backend, tmp_path):
    cfg = config(backend, pretrain_epochs=1)
    engine = engine_for(backend, cfg, tmp_path)
    for step in range(3):
        engine.train_step(BATCH, step, 0.0, 1.0)
    before = params_of(engine)
    engine.reset_decoder()
    after = params_of(engine)
    fresh = engine_for(backend, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1)), tmp_path / "f")
    fresh.reset_decoder()  # the re-initialisation depends on the seed, not on the weights before it
    fresh_seed0 = engine_for(backend, cfg, tmp_path / "g")
    fresh_seed0.reset_decoder()
    reinit = params_of(fresh_seed0)
    for name in before:
        if name.split(".")[0] in DECODER_REINIT_MODULES:
            np.testing.assert_array_equal(after[name], reinit[name], err_msg=name)
            assert not np.array_equal(after[name], before[name]) or "bias" in name, name
        else:  # the encoder and the shared embedding keep their pretrained values
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert any(not np.array_equal(params_of(fresh)[n], reinit[n]) for n in reinit
               if n.split(".")[0] in DECODER_REINIT_MODULES)
    if backend == "torch":
        assert len(engine.opt.state) == 0
    else:
        import jax

        assert all(int(x) == 0 for x in jax.tree.leaves(engine.opt_state) if np.ndim(x) == 0)


def write_corpus(folder, n_train=48):
    r = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", 12), ("test", 12)):
        (folder / f"{split}.txt").write_text("\n".join(" ".join(r.choice(WORDS) for _ in range(r.randint(2, 8)))
                                                      for _ in range(n)) + "\n")
    return folder


class Recorder:
    """Wraps a torch text engine: records every call, and (optionally) scripts the encoder's
    losses and the validation posteriors, so the driver's decisions can be checked."""

    def __init__(self, cfg, workdir, *, inner_losses=None, mi_scales=()):
        from torchvae.text_train import TorchTextEngine

        self.inner = TorchTextEngine(cfg, workdir)
        self.calls, self.resets, self.inner_losses, self.mi_scales = [], [], inner_losses, list(mi_scales)
        self.decoding, self.n_eval = self.inner.decoding, 0

    def train_step(self, batch, step, kl_weight, lr_scale, *, part="all", inner=None):
        self.calls.append((step, part, inner, kl_weight, batch))
        out = self.inner.train_step(batch, step, kl_weight, lr_scale, part=part, inner=inner)
        if part == "encoder" and self.inner_losses is not None:
            out["total"] = self.inner_losses(inner) * batch.num_targets / len(batch.lengths)
        return out

    def reset_decoder(self):
        self.resets.append(len(self.calls))
        self.inner.reset_decoder()

    def evaluate(self, batches):
        out = self.inner.evaluate(batches)
        if self.n_eval < len(self.mi_scales):  # a scripted spread of the posterior means
            scale = self.mi_scales[self.n_eval]
            out["mean"] = scale * np.random.default_rng(self.n_eval).standard_normal(out["mean"].shape)
            out["logvar"] = np.full_like(out["logvar"], -4.0)
        self.n_eval += 1
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_text(cfg, workdir, factory, log=print):
    """A text run through the one driver, with the engine ``factory(cfg, workdir)``."""
    from twinvae.backends import module
    from vaecore.runner import driver
    from vaecore.task.text_task import TextTask

    return driver.run(TextTask(cfg, workdir, kernels=module(cfg.backend, "evaluation")), factory, workdir, log=log)


def test_aggressive_inner_loop_stops_as_he_et_al_and_switches_off_when_valid_mi_drops(tmp_path):
    data = write_corpus(tmp_path / "data")
    cfg = config("torch", data=str(data), aggressive=True)
    # the loss per token falls for the first window of 14 updates, then rises: the loop stops after 29
    holder, log = {}, []

    def factory(c, w):
        holder["e"] = Recorder(c, w, inner_losses=lambda i: 10.0 - i if i < 15 else 10.0 + i,
                               mi_scales=[1.0, 3.0, 0.0, 3.0])
        return holder["e"]

    run_text(cfg, tmp_path / "run", factory, log=log.append)
    calls, per_epoch = holder["e"].calls, 6
    outer = [c for c in calls if c[1] != "encoder"]
    assert [c[0] for c in outer] == list(range(4 * per_epoch))
    # epochs 1-3 aggressive (MI rose after epochs 1 and 2, fell after 3): decoder-only steps, 29 inner each
    for step in range(3 * per_epoch):
        inner = [c for c in calls if c[0] == step and c[1] == "encoder"]
        assert [c[2] for c in inner] == list(range(1, 30)), step
        assert outer[step][1] == "decoder"
    assert all(c[1] == "all" for c in outer[3 * per_epoch:])
    assert not [c for c in calls if c[0] >= 3 * per_epoch and c[1] == "encoder"]
    assert any("aggressive inference ends" in line and "epoch 3" in line for line in log)
    rows = [__import__("json").loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "event"] == [3 * per_epoch]
    assert [r["aggressive"] for r in rows if r["split"] == "train"] == [1] * 9 + [0] * 3


def test_inner_loop_cap_is_99_updates(tmp_path):
    from vaecore.data.text_data import TextDataset, Vocab
    from vaecore.runner.driver import Guard
    from vaecore.task import text_task

    engine = Recorder(config("torch", aggressive=True), tmp_path, inner_losses=lambda i: 100.0 - i)
    train = TextDataset([[w] * 3 for w in WORDS], Vocab(WORDS))
    n = text_task.encoder_updates(engine, train, BATCH, 7, 1.0, 1.0, config("torch", aggressive=True),
                                 Guard(tmp_path, 0))
    assert n == 99 and [c[2] for c in engine.calls] == list(range(1, 100))
    # the batches after the first are random training batches drawn from (seed, AGGRESSIVE_BATCH, step, inner)
    assert engine.calls[0][4] is BATCH
    for inner in (2, 50):
        pick = np.sort(np.random.default_rng([0, rng.AGGRESSIVE_BATCH, 7, inner]).choice(len(train), 8, replace=False))
        np.testing.assert_array_equal(engine.calls[inner - 1][4].tokens, train.make_batch(pick).tokens)


def test_pretraining_trains_an_autoencoder_then_resets_and_restarts_the_schedule(tmp_path):
    data = write_corpus(tmp_path / "data")
    cfg = config("torch", data=str(data), pretrain_epochs=2, kl_schedule="linear", kl_warmup_steps=4)
    holder, log = {}, []

    def factory(c, w):
        holder["e"] = Recorder(c, w)
        return holder["e"]

    run_text(cfg, tmp_path / "run", factory, log=log.append)
    e, per_epoch = holder["e"], 6
    assert e.resets == [2 * per_epoch]  # before the first step after pretraining
    weights = [c[3] for c in e.calls]
    assert weights[: 2 * per_epoch] == [0.0] * (2 * per_epoch)
    assert weights[2 * per_epoch: 2 * per_epoch + 5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert any("pretraining done" in line for line in log)


def test_pretraining_must_leave_steps_for_the_elbo(tmp_path):
    from vaecore.settings.config import ConfigError

    cfg = config("torch", data=str(write_corpus(tmp_path / "data")), pretrain_epochs=4)
    with pytest.raises(ConfigError, match="leaves no steps"):
        run_text(cfg, tmp_path / "run", Recorder)
