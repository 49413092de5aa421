"""twinvae's Python API on the image VAE: ``twinvae.train`` makes a tiny run in each framework,
``twinvae.load`` gives the figures of ``evaluate.py`` on the same weights, a run moves between the
frameworks (posterior means within 1e-5, log-likelihoods within 1e-4 nats, float32), the exported
folder loads in both, and bad input is a one-line ValueError. Tiny models, a few dozen steps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import twinvae
from tests.test_mnist_data import make_mnist_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BACKENDS = ("torch", "jax")
TINY = {"task": "mnist", "hidden_sizes": [32], "latent_dim": 4, "batch_size": 100, "max_steps": 24, "log_every": 8}
N, K = 40, 16


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    make_mnist_dir(folder, n_train=5200, n_test=60)
    return folder


@pytest.fixture(scope="module")
def runs(mnist_dir, tmp_path_factory):
    """A tiny finished run of each framework, trained through ``twinvae.train``: {backend: Trained}."""
    root = tmp_path_factory.mktemp("runs")
    return {b: twinvae.train(backend=b, **TINY, data=str(mnist_dir), workdir=str(root / b)) for b in BACKENDS}


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    """The first N binarised test images, as evaluate.py reads them."""
    from vaecore.data.batching import fixed_binarization
    from vaecore.data.mnist import load_mnist

    return fixed_binarization(load_mnist(str(mnist_dir)).test)[:N]


def test_train_returns_the_run_folder_and_its_results(runs):
    for backend, run in runs.items():
        assert run.results == json.loads((run.workdir / "results.json").read_text())
        assert json.loads((run.workdir / "config.json").read_text())["backend"] == backend
        assert run.results["neg_elbo"] > 0 and run.results["units"] == "nats per image"


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_likelihood_is_evaluate_py_nll(backend, runs, test_images, tmp_path):
    """-mean(log_likelihood) on the first N test images = evaluate.py --limit N's nll (same seed, k)."""
    import evaluate

    run = tmp_path / "run"
    shutil.copytree(runs[backend].workdir, run)
    assert evaluate.main(["--workdir", str(run), "--k", str(K), "--limit", str(N), "--seed", "3",
                          "--no-pictures"]) == 0
    nll = json.loads((run / "eval_test.json").read_text())["nll"]
    model = twinvae.load(run)
    assert model.backend == backend and model.task == "mnist" and model.step == 24
    ll = model.log_likelihood(test_images, K, seed=3)
    assert ll.shape == (N,) and ll.dtype == np.float64
    assert -ll.mean() == pytest.approx(nll, abs=1e-9, rel=1e-12)
    # per example, whatever the batch size: example i's samples depend on i only
    np.testing.assert_allclose(model.log_likelihood(test_images, K, seed=3, batch_size=7), ll, rtol=0, atol=1e-3)
    assert np.abs(model.log_likelihood(test_images, K, seed=4) - ll).max() > 1e-3


@pytest.mark.parametrize("trained", BACKENDS)
def test_a_run_loads_in_the_other_framework(trained, runs, test_images):
    other = "jax" if trained == "torch" else "torch"
    own, moved = twinvae.load(runs[trained].workdir), twinvae.load(runs[trained].workdir, backend=other)
    assert (own.backend, moved.backend, moved.config.backend) == (trained, other, trained)
    mean, logvar = own.encode(test_images)
    mean_o, logvar_o = moved.encode(test_images)
    assert mean.shape == logvar.shape == (N, 4) and mean.dtype == np.float32
    np.testing.assert_allclose(mean_o, mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logvar_o, logvar, rtol=0, atol=1e-5)
    # float32 log-likelihoods of about -550 nats: an ulp there is 6e-5, and two frameworks' sums differ by a few
    # (2.2e-7 relative measured on an AMD EPYC, where atol 1e-4 failed), so the bound is relative
    np.testing.assert_allclose(moved.log_likelihood(test_images, K), own.log_likelihood(test_images, K),
                               rtol=1e-6, atol=0)
    np.testing.assert_allclose(moved.sample(6, seed=2), own.sample(6, seed=2), rtol=0, atol=1e-5)


def test_decode_reconstruct_sample_interpolate(runs, test_images):
    from vaecore import rng

    model = twinvae.load(runs["torch"].workdir)
    mean, _ = model.encode(test_images)
    probs = model.decode(mean)
    assert probs.shape == (N, 784) and probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_array_equal(model.reconstruct(test_images), probs)
    # the codes of the run's samples.png: output_rng(seed, SAMPLES)
    z = rng.output_rng(0, rng.SAMPLES).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.sample(5, seed=0), model.decode(z))
    np.testing.assert_array_equal(model.sample(5, seed=0, temperature=0.5), model.decode(0.5 * z))
    assert np.abs(model.sample(5, seed=1) - model.sample(5, seed=0)).max() > 1e-3
    path = model.interpolate(test_images[0], test_images[1], steps=5)
    assert path.shape == (5, 784)
    np.testing.assert_allclose(path[[0, -1]], model.decode(mean[:2]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("trained", BACKENDS)
def test_export_loads_in_both_frameworks(trained, runs, test_images, tmp_path):
    from safetensors.numpy import load_file

    run = runs[trained].workdir
    model = twinvae.load(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = twinvae.export(run, tmp_path / "exported")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "results.json", "README.md"}
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}  # the run is untouched
    weights = load_file(str(out / "model.safetensors"))
    assert weights.keys() == model.params().keys() and "encoder.mean.weight" in weights
    assert json.loads((out / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: twinvae") and f"--backend {trained} --task mnist" in card
    assert "--max-steps 24" in card and "--hidden-sizes 32" in card and "does not reproduce" not in card
    assert f"{runs[trained].results['neg_elbo']:.2f}" in card
    mean = model.encode(test_images)[0]
    ll = model.log_likelihood(test_images, K)
    for backend in BACKENDS:
        loaded = twinvae.load(out, backend=backend)
        assert loaded.step == 24 and loaded.backend == backend
        np.testing.assert_allclose(loaded.encode(test_images)[0], mean, rtol=0, atol=1e-5)
        np.testing.assert_allclose(loaded.log_likelihood(test_images, K), ll, rtol=1e-6, atol=0)  # as above
    # a re-export of the export keeps weights, config and card
    again = twinvae.load(out, backend="jax" if trained == "torch" else "torch").export(tmp_path / "again")
    assert (again / "config.json").read_text() == (out / "config.json").read_text()
    for name, value in load_file(str(again / "model.safetensors")).items():
        np.testing.assert_array_equal(value, weights[name])


def test_hub_path_goes_through_snapshot_download(runs, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    out = twinvae.export(runs["torch"].workdir, tmp_path / "snapshot")
    asked = []

    def fake_snapshot_download(repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert twinvae.load("hf://someone/tiny-vae", backend="jax").backend == "jax"
    assert twinvae.load("someone/tiny-vae@v1").task == "mnist"
    assert asked == [("someone/tiny-vae", None), ("someone/tiny-vae", "v1")]


def test_hub_path_without_huggingface_hub_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(ValueError, match=r"needs huggingface_hub \(pip install huggingface_hub\)"):
        twinvae.load("hf://someone/tiny-vae")


def _rewrite_weights(folder, change) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    change(weights)
    save_file(weights, str(folder / "model.safetensors"))


def test_bad_input_is_a_one_line_value_error(runs, tmp_path):
    out = twinvae.export(runs["jax"].workdir, tmp_path / "exported")
    cases = []
    missing = shutil.copytree(out, tmp_path / "missing")
    _rewrite_weights(missing, lambda w: w.pop("encoder.mean.weight"))
    cases.append((missing, r"missing \['encoder.mean.weight'\]"))
    shape = shutil.copytree(out, tmp_path / "shape")
    _rewrite_weights(shape, lambda w: w.update({"encoder.mean.bias": np.zeros(5, np.float32)}))
    cases.append((shape, r"parameter 'encoder.mean.bias': expected shape \(4,\), got \(5,\)"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "neither a run folder"))
    cases.append((tmp_path / "nowhere", "no such folder"))
    broken = shutil.copytree(out, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    cases.append((broken, "not a readable safetensors file"))
    for backend in BACKENDS:
        for folder, message in cases:
            with pytest.raises(ValueError, match=message) as e:
                twinvae.load(folder, backend=backend)
            assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="backend must be one of"):
        twinvae.load(out, backend="tf")
    with pytest.raises(ValueError, match="applies to the torch backend"):
        twinvae.load(out, backend="jax", device="cuda")
    with pytest.raises(ValueError, match="is not empty"):
        twinvae.export(runs["jax"].workdir, broken)
    with pytest.raises(ValueError, match="is a run folder"):
        twinvae.load(out).export(runs["jax"].workdir, overwrite=True)
    model = twinvae.load(out)
    with pytest.raises(ValueError, match=r"images must be \[N, 784\]"):
        model.encode(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"z must be \[N, latent_dim = 4\]"):
        model.decode(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="apply to sentence VAEs"):
        model.decode(np.zeros((2, 4)), method="beam")


def test_train_refuses_bad_options_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="train.py has no option 'latent'"):
        twinvae.train(latent=3, workdir=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="argument --backend: invalid choice"):
        twinvae.train(backend="tf", workdir=str(tmp_path / "r"))
    with pytest.raises(twinvae.ConfigError, match="--rnn"):
        twinvae.train(task="mnist", rnn="gru", workdir=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="use twinvae.load"):
        twinvae.train(sample=True, workdir=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_torch_alone_loads_a_torch_run_and_an_export(runs, tmp_path):
    """Only the framework a model runs in is imported: with JAX unimportable, a torch run and an
    export (of a JAX run) load and run in torch."""
    import subprocess
    import sys
    from pathlib import Path

    out = twinvae.export(runs["jax"].workdir, tmp_path / "exported")
    code = ("import sys; sys.modules.update(dict.fromkeys(['jax', 'flax', 'optax', 'orbax'])); import numpy as np; "
            "import twinvae; x = np.zeros((2, 784))\n"
            f"for path in ({str(runs['torch'].workdir)!r}, {str(out)!r}):\n"
            "    m = twinvae.load(path, backend='torch'); print(m.backend, m.encode(x)[0].shape)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["torch (2, 4)", "torch (2, 4)"]
