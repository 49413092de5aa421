"""train.py --task text killed by SIGKILL mid-way and continued with --resume ends bit-identical to a run
never stopped, in both backends and every training mode whose state goes beyond parameters and optimiser.

These are the suite's longest tests (a JAX text run compiles its step, evaluation and decoding in each of
three processes), so they have a file of their own: pytest-xdist's ``--dist loadfile`` gives each file to
one worker, and in test_text_cli.py they were 546 s of that file's 704 s on one core."""

import json
import subprocess
import sys

import pytest

from tests.runs import kill_after_checkpoint
from tests.test_text_cli import ENV, ROOT, run, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


TRANSFORMER = ["--decoder", "transformer", "--z-injection", "both", "--transformer-layers", "2", "--transformer-heads",
               "4", "--transformer-ff", "48", "--attention-dropout", "0.1", "--residual-dropout", "0.1"]
ENCODER = ["--encoder", "transformer", "--transformer-layers", "2", "--transformer-heads", "4", "--transformer-ff", "48"]
# training modes whose state goes beyond parameters and optimiser (BN-VAE's running averages)
RESUME_MODES = {"default": [], "bn-delta": ["--bn-gamma", "0.7", "--delta-rate", "0.1"],
                "aggressive": ["--aggressive", "--aggressive-max-inner", "8", "--bn-gamma", "0.5"], "pretrain": ["--pretrain-ae-epochs", "1"],
                # the Transformer decoder: its dropout sites, the key/value cache of the end-of-run decoding
                "transformer-aggressive": [*TRANSFORMER, "--aggressive", "--aggressive-max-inner", "8"],
                "transformer-pretrain": [*TRANSFORMER, "--pretrain-ae-epochs", "1", "--bn-gamma", "0.5"],
                # the Transformer encoder: under aggressive inference's encoder-only updates (torch), with BN-VAE
                "transformer-encoder": [*ENCODER, "--aggressive", "--aggressive-max-inner", "8"],
                "transformer-encoder-bn": [*ENCODER, "--bn-gamma", "0.5"]}


# every mode in both backends, but the Transformer's aggressive modes in torch only (in JAX they compile a step
# per side: the decoder's was this file's longest test by far, 500 s on a loaded machine, the encoder's 300 s;
# their JAX parts are the RNN's aggressive mode and the Transformers' other modes here)
CASES = [(b, m) for m in RESUME_MODES for b in ("torch", "jax")
         if (b, m) not in (("jax", "transformer-aggressive"), ("jax", "transformer-encoder"), ("torch", "transformer-encoder-bn"))]


@pytest.mark.parametrize("backend, mode", CASES)
def test_sigkill_and_resume_gives_the_same_results(backend, mode, corpus, tmp_path):
    args = [*RESUME_MODES[mode], "--backend", backend, "--task", "text", "--data", str(corpus), "--embed-dim", "32", "--hidden-dim", "64",
            "--latent-dim", "4", "--batch-size", "8", "--max-steps", "120", "--checkpoint-every", "10",
            "--log-every", "5", "--kl-schedule", "cyclical", "--free-bits", "0.05", "--seed", "3",
            "--num-samples", "3", "--lr-decay-start", "2", "--lr-decay", "0.7"]
    train_cmd = [sys.executable, str(ROOT / "train.py"), *args]
    straight = tmp_path / "straight"
    subprocess.run([*train_cmd, "--workdir", str(straight)], check=True, capture_output=True, timeout=600, env=ENV)

    killed = tmp_path / "killed"
    kill_after_checkpoint([*train_cmd, "--workdir", str(killed)], killed, 30, 120, env=ENV)

    resumed = run(*args, "--workdir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at step" in resumed.stdout

    a = json.loads((straight / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    for key in ("recon", "kl", "neg_elbo", "ppl_bound", "tokens"):
        assert a[key] == b[key], f"{key}: uninterrupted {a[key]} != resumed {b[key]}"
    for name in ("samples.txt", "reconstructions.txt", "interpolations.txt", "vocab.json"):
        assert (straight / name).read_text() == (killed / name).read_text(), name
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(5, 121, 5))
    assert [r["step"] for r in rows if r["split"] == "valid"] == [25, 50, 75, 100]
    straight_rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("recon") for r in rows] == [r.get("recon") for r in straight_rows]

    again = run(*args, "--workdir", str(killed), "--resume", "--rnn", "gru")
    assert again.returncode == 2 and "--rnn 'gru' differs" in again.stderr
