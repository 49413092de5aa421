"""The sentence VAE with a Transformer decoder (issue 35) through everything the RNN decoder has: the
Python API's likelihoods equal ``evaluate.py``'s IW-NLL, its samples and homotopies equal ``train.py
--sample`` / ``--interpolate``'s, a run trained in one framework decodes the same tokens in the other,
an export loads in both (the tests of ``tests/test_api_text.py``, run here on Transformer runs); the
language model with the same decoder; the flags that do not apply to the chosen decoder are refused.
SIGKILL + ``--resume`` is in ``tests/test_text_resume.py``, data parallel in ``tests/test_data_parallel.py``,
parity in ``parity_tests/test_transformer_parity.py``."""

# ruff: noqa: F811  (the fixtures imported from tests/test_api_text.py are requested by name as arguments)
from __future__ import annotations

import json

import pytest

import twinvae
from tests.test_api_text import (  # noqa: F401  (fixtures and tests, run on Transformer runs)
    BACKENDS,
    TINY,
    corpus,
    sentences,
    test_a_run_decodes_the_same_tokens_in_the_other_framework,
    test_export_carries_the_vocabulary_and_loads_in_both,
    test_log_likelihood_is_evaluate_py_nll,
    test_samples_and_homotopy_are_train_py_s,
)
from tests.test_text_cli import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRANSFORMER = {"decoder": "transformer", "z_injection": "both", "transformer_layers": 2, "transformer_heads": 4,
               "transformer_ff": 24, "positions": "learned", "attention_dropout": 0.1, "residual_dropout": 0.1,
               "embedding_dropout": 0.1, "word_dropout": 0.2}


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):  # the API tests' fixture, with a Transformer decoder
    root = tmp_path_factory.mktemp("runs")
    return {b: twinvae.train(backend=b, **TINY, **TRANSFORMER, data=str(corpus), workdir=str(root / b)).workdir
            for b in BACKENDS}


def test_the_runs_are_transformer_runs(runs):
    for backend in BACKENDS:
        config = json.loads((runs[backend] / "config.json").read_text())["text"]
        assert (config["decoder"], config["z_injection"], config["transformer_layers"]) == ("transformer", "both", 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_language_model_with_the_same_decoder(backend, corpus, tmp_path):
    lm = {k: v for k, v in {**TINY, **TRANSFORMER}.items() if k not in ("z_injection", "latent_dim")}
    trained = twinvae.train(backend=backend, **lm, no_latent=True, data=str(corpus),
                            workdir=str(tmp_path / "lm"))
    results = trained.results
    assert results["kl"] == 0.0 and results["neg_elbo"] == results["recon"] and results["recon"] > 0
    model = twinvae.load(trained.workdir)
    assert model.sample(3, seed=0, method="greedy") == model.sample(3, seed=7, method="greedy")  # z is ignored


@pytest.mark.parametrize("args, message", [
    (["--transformer-layers", "2"], "--transformer-layers applies to a Transformer (--decoder transformer or --encoder"),
    (["--encoder", "transformer", "--attention-dropout", "0.1"], "--attention-dropout applies to --decoder transformer"),
    (["--encoder", "transformer", "--bidirectional"], "--bidirectional applies to the RNN encoder (--encoder rnn)"),
    (["--encoder", "transformer", "--decoder", "transformer", "--rnn", "gru"], "--rnn applies to an RNN encoder or"),
    (["--encoder", "transformer", "--decoder", "transformer", "--num-layers", "2"], "--num-layers applies to an RNN"),
    (["--no-latent", "--encoder", "transformer"], "--encoder shapes the code, and --no-latent has no code"),
    (["--encoder", "transformer", "--hidden-dim", "16", "--transformer-heads", "3"],
     "--hidden-dim 16 does not split into --transformer-heads 3 equal heads"),
    (["--decoder", "transformer", "--z-every-step"], "--z-every-step applies to the RNN decoder"),
    (["--decoder", "transformer", "--decoder-init-tanh"], "--decoder-init-tanh applies to the RNN decoder"),
    (["--decoder", "transformer", "--hidden-dim", "16", "--transformer-heads", "3"],
     "--hidden-dim 16 does not split into --transformer-heads 3 equal heads"),
    (["--decoder", "transformer", "--no-latent", "--z-injection", "embedding"], "--z-injection shapes the code"),
    (["--decoder", "transformer", "--attention-dropout", "1.0"], "attention_dropout must be a number in [0, 1)"),
    (["--decoder", "mlp"], "argument --decoder: invalid choice"),
    (["--encoder", "cnn"], "argument --encoder: invalid choice"),
])
def test_flags_that_do_not_apply_are_one_line_errors(args, message, corpus, tmp_path):
    proc = run("--task", "text", "--data", str(corpus), "--workdir", str(tmp_path / "run"), *args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_explorer_serves_a_transformer_model_in_the_other_framework(runs):
    """The explorer's reconstruction, homotopy and samples of a JAX-trained Transformer run served in torch
    are the model handle's own."""
    from starlette.testclient import TestClient

    from twinvae.explore.app import build_app
    from twinvae.explore.explorer import Explorer

    model = twinvae.load(runs["jax"], backend="torch")
    explorer = Explorer(model, folder=runs["jax"])
    explorer.warm()
    client = TestClient(build_app(explorer))
    a, b = explorer.test.examples[0], explorer.test.examples[1]
    got = client.post("/api/encode", json={"input": a, "method": "beam", "beam_width": 3})
    assert got.status_code == 200, got.text
    assert got.json()["reconstruction"]["sentences"] == model.reconstruct([a], method="beam", beam_width=3)
    homotopy = client.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 4}).json()
    assert homotopy["sentences"] == model.interpolate(a, b, 4)
    assert client.post("/api/sample", json={"n": 3, "seed": 2}).json()["sentences"] == model.sample(3, seed=2)


ENCODER = {"encoder": "transformer", "transformer_layers": 2, "transformer_heads": 2, "transformer_ff": 24,
           "positions": "learned"}


@pytest.fixture(scope="module")
def encoder_runs(corpus, tmp_path_factory):  # a Transformer encoder with the RNN decoder, trained in each backend
    root = tmp_path_factory.mktemp("encoder-runs")
    return {b: twinvae.train(backend=b, **TINY, **ENCODER, data=str(corpus), workdir=str(root / b)).workdir
            for b in BACKENDS}


@pytest.mark.parametrize("trained", BACKENDS)
def test_a_transformer_encoder_run_reads_the_same_in_the_other_framework(trained, encoder_runs, sentences):
    """``--encoder transformer``: the posterior, IW-NLL, reconstructions, samples and homotopy of a run are
    the same in the other framework (the API test above, on these runs)."""
    config = json.loads((encoder_runs[trained] / "config.json").read_text())["text"]
    assert (config["encoder"], config["decoder"]) == ("transformer", "rnn")
    test_a_run_decodes_the_same_tokens_in_the_other_framework(trained, encoder_runs, sentences)


@pytest.mark.parametrize("args, folder", [
    ([], "runs/text-torch-lstm-elbo"), (["--decoder", "transformer"], "runs/text-torch-transformer-elbo"),
    (["--encoder", "transformer", "--rnn", "gru"], "runs/text-torch-tenc-gru-elbo"),
    (["--encoder", "transformer", "--decoder", "transformer"], "runs/text-torch-tenc-transformer-elbo"),
])
def test_the_default_run_folder_names_the_architecture(args, folder):
    from vaecore.runner import options
    from vaecore.settings.cli import build_parser, explicit_flags

    argv = ["--task", "text", *args]
    parser = build_parser()
    _, workdir = options.resolve(parser.parse_args(argv), explicit_flags(parser, argv))
    assert str(workdir) == folder
