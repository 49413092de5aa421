"""twinvae's Python API on the sentence VAE: the same log-likelihoods as ``evaluate.py``, the same
sentences as ``train.py --sample`` / ``--interpolate``, the same greedy tokens in either framework (a
run trained in JAX decoded in PyTorch and the other way), and an exported folder with its vocabulary.
Tiny models on a tiny corpus, a few dozen steps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import twinvae
from tests.test_text_cli import write_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BACKENDS = ("torch", "jax")
TINY = {"task": "text", "embed_dim": 16, "hidden_dim": 16, "latent_dim": 4, "batch_size": 16, "max_steps": 30,
        "log_every": 10}
N, K = 20, 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {b: twinvae.train(backend=b, **TINY, data=str(corpus), workdir=str(root / b)).workdir for b in BACKENDS}


@pytest.fixture(scope="module")
def sentences(corpus) -> list[str]:
    """The first N test sentences in evaluate.py's order (by word count, stable)."""
    lines = (corpus / "test.txt").read_text().splitlines()[:N]
    return [lines[i] for i in np.argsort([len(s.split()) for s in lines], kind="stable")]


def sections(text: str) -> dict[str, list[str]]:
    """samples.txt's decodings by section title."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:]
            out[name] = []
        elif name is not None and line:
            out[name].append(line)
    return out


def shown(lines: list[str]) -> list[str]:
    return [s or "<eos>" for s in lines]  # as samples.txt writes an empty decoding


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_likelihood_is_evaluate_py_nll(backend, runs, sentences, tmp_path):
    import evaluate

    run = shutil.copytree(runs[backend], tmp_path / "run")
    assert evaluate.main(["--workdir", str(run), "--k", str(K), "--limit", str(N), "--seed", "1", "--no-pictures"]) == 0
    nll = json.loads((run / "eval_test.json").read_text())["nll"]
    model = twinvae.load(run)
    assert (model.task, model.backend, model.step) == ("text", backend, 30)
    ll = model.log_likelihood(sentences, K, seed=1)
    assert ll.shape == (N,) and np.all(ll < 0)
    assert -ll.mean() == pytest.approx(nll, abs=1e-9, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_samples_and_homotopy_are_train_py_s(backend, runs, tmp_path, capsys):
    """sample(10, seed) with the run's seed decodes samples.txt's sentences: greedy, beam, sampled;
    interpolate(a, b) prints --interpolate's greedy path."""
    import train

    run = shutil.copytree(runs[backend], tmp_path / "run")
    assert train.main(["--workdir", str(run), "--sample"]) == 0
    written = sections((run / "samples.txt").read_text())
    model = twinvae.load(run)
    width = min(5, len(model.vocab) // 2)
    assert written["greedy"] == shown(model.sample(10, seed=0, method="greedy"))
    assert written[f"beam search (width {width})"] == shown(model.sample(10, seed=0, method="beam", beam_width=width))
    assert written["sampling (temperature 1)"] == shown(model.sample(10, seed=0))
    assert model.sample(10, seed=0) == model.sample(10, seed=0)
    a, b = "the cat sat", "a dog ran home"
    capsys.readouterr()
    assert train.main(["--workdir", str(run), "--interpolate", a, b]) == 0
    printed = capsys.readouterr().out.splitlines()
    greedy = printed[printed.index("## greedy") + 1:printed.index("## greedy") + 9]
    assert [line.split(" ", 1)[1] for line in greedy] == shown(model.interpolate(a, b, steps=8))


@pytest.mark.parametrize("trained", BACKENDS)
def test_a_run_decodes_the_same_tokens_in_the_other_framework(trained, runs, sentences):
    other = "jax" if trained == "torch" else "torch"
    own, moved = twinvae.load(runs[trained]), twinvae.load(runs[trained], backend=other)
    mean, logvar = own.encode(sentences)
    assert mean.shape == (N, 4) and mean.dtype == np.float32
    np.testing.assert_allclose(moved.encode(sentences)[0], mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(moved.encode(sentences)[1], logvar, rtol=0, atol=1e-5)
    np.testing.assert_allclose(moved.log_likelihood(sentences, K), own.log_likelihood(sentences, K), rtol=0, atol=1e-4)
    decoded = own.reconstruct(sentences)
    assert len(decoded) == N and all(isinstance(s, str) for s in decoded)
    assert moved.reconstruct(sentences) == decoded
    assert moved.sample(16, seed=5, method="greedy") == own.sample(16, seed=5, method="greedy")
    assert moved.interpolate(sentences[0], sentences[-1], 5) == own.interpolate(sentences[0], sentences[-1], 5)


@pytest.mark.parametrize("trained", BACKENDS)
def test_export_carries_the_vocabulary_and_loads_in_both(trained, runs, sentences, tmp_path):
    out = twinvae.export(runs[trained], tmp_path / "exported")
    assert (out / "vocab.json").read_bytes() == (runs[trained] / "vocab.json").read_bytes()
    assert "--task text" in (out / "README.md").read_text() and "--embed-dim 16" in (out / "README.md").read_text()
    own = twinvae.load(runs[trained])
    greedy = own.sample(8, seed=1, method="greedy")
    for backend in BACKENDS:
        loaded = twinvae.load(out, backend=backend)
        assert loaded.sample(8, seed=1, method="greedy") == greedy
        np.testing.assert_allclose(loaded.encode(sentences)[0], own.encode(sentences)[0], rtol=0, atol=1e-5)


def test_text_input_errors_are_one_line(runs, tmp_path):
    out = twinvae.export(runs["torch"], tmp_path / "exported")
    model = twinvae.load(out)
    with pytest.raises(ValueError, match="a non-empty list of strings"):
        model.encode("the cat sat")
    with pytest.raises(ValueError, match="method must be 'greedy', 'beam' or 'sample'"):
        model.decode(np.zeros((1, 4)), method="top-k")
    with pytest.raises(ValueError, match="temperature applies to method 'sample'"):
        model.sample(2, method="greedy", temperature=0.5)
    (out / "vocab.json").unlink()
    with pytest.raises(ValueError, match="a text model needs its vocab.json"):
        twinvae.load(out)
    shutil.copy(runs["torch"] / "vocab.json", out / "vocab.json")
    config = json.loads((out / "config.json").read_text())
    config["text"]["vocab_size"] += 1
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="but config.json's model has vocab_size"):
        twinvae.load(out)
