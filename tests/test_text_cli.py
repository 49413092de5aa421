"""train.py --task text as a user meets it: the run folder, bad input (one line, exit 2), and --sample /
--interpolate on a finished run (SIGKILL and --resume: test_text_resume.py). Tiny model, tiny corpus,
few steps."""

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaecore.settings.config import ConfigError, RunConfig, TextTrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--task", "text", "--embed-dim", "16", "--hidden-dim", "16", "--latent-dim", "4", "--batch-size", "16"]
# One intra-op thread: on a small shared CPU, torch's thread pool costs far more than these tiny steps.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "fast", "slow", "big", "small", "red", "blue",
         "house", "tree", "bird", "sang"]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=ENV, check=False)


def write_corpus(folder: Path, sizes=(("train", 200), ("valid", 40), ("test", 40))) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_lr_decay_hand_values_and_old_run_folders():
    # the default: 8 epochs at the full rate, then x0.6 per epoch
    assert [TextTrainConfig().lr_scale(s, 10) for s in (0, 79, 80, 90, 119)] == pytest.approx([1, 1, 0.6, 0.36, 0.6**4])
    tt = TextTrainConfig(lr_decay_start=6, lr_decay=0.5)
    assert [tt.lr_scale(s, 10) for s in (0, 59, 60, 69, 70, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.0625]
    assert [TextTrainConfig(lr_decay_start=0, lr_decay=0.8).lr_scale(s, 10) for s in (0, 10)] == pytest.approx([0.8, 0.64])
    assert TextTrainConfig(lr_decay=1.0).lr_scale(10**6, 10) == 1
    # a config.json written before the decay (and output dropout, tied embeddings) existed loads as
    # what that run did: a constant rate, no output dropout, an untied output layer
    from vaecore.settings.text_config import TextModelConfig

    d = RunConfig(task="text", text=TextModelConfig(vocab_size=9), text_train=TextTrainConfig()).to_dict()
    del d["text_train"]["lr_decay"], d["text_train"]["lr_decay_start"], d["text"]["output_dropout"]
    del d["text"]["tie_embeddings"]
    old = RunConfig.from_dict(d)
    assert old.text_train.lr_scale(10**6, 10) == 1 and old.text.output_dropout == 0.0
    assert old.text.tie_embeddings is False
    new = RunConfig.from_dict(RunConfig(task="text", text=TextModelConfig(vocab_size=9),
                                        text_train=TextTrainConfig()).to_dict()).text
    assert new.output_dropout == 0.25 and new.tie_embeddings is True
    for bad in ({"lr_decay": 0}, {"lr_decay": 1.5}, {"lr_decay_start": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TextTrainConfig(**bad)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_engine_step_scales_with_lr_scale(backend, tmp_path):
    """Adam's first step is lr * g / (|g| + eps): with lr_scale 0.3 every parameter moves 0.3 times as far."""
    import numpy as np

    from vaecore.data.text_data import TextBatch
    from vaecore.settings.text_config import TextModelConfig

    cfg = RunConfig(backend=backend, task="text", text=TextModelConfig(vocab_size=12, embed_dim=8, hidden_dim=8,
                                                                      latent_dim=3),
                    text_train=TextTrainConfig())
    tokens = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 9, 10, 11, 2]], np.int32)
    batch = TextBatch(tokens, np.array([5, 6], np.int32))

    def moved(lr_scale):
        if backend == "torch":
            from torchvae.text_train import TorchTextEngine as Engine

            def flat(e):
                return np.concatenate([p.detach().numpy().ravel() for p in e._model.parameters()])
        else:
            import jax

            from jaxvae.text_train import JaxTextEngine as Engine

            def flat(e):
                return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(e.params)])
        engine = Engine(cfg, tmp_path / f"{lr_scale}")
        before = flat(engine)
        engine.train_step(batch, 0, 1.0, lr_scale)
        return flat(engine) - before

    full, scaled = moved(1.0), moved(0.3)
    assert np.abs(full).max() > 0.5e-3  # the step is about lr = 1e-3 on every parameter with a gradient
    # float32 parameters of size ~1 hold a 3e-4 step to about 1e-7
    np.testing.assert_allclose(scaled, 0.3 * full, rtol=1e-4, atol=2e-7)


def test_text_train_config_schedules_and_json_round_trip(tmp_path):
    tt = TextTrainConfig(kl_schedule="linear", kl_warmup_steps=10)
    assert [tt.schedule(0.5, 100)(s) for s in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]
    cyc = TextTrainConfig(kl_schedule="cyclical", kl_cycles=2, kl_cycle_ratio=0.5).schedule(1.0, 100)
    assert [cyc(s) for s in (0, 25, 49, 50, 75)] == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert TextTrainConfig().schedule(1.0, 100)(2500) == pytest.approx(0.5)  # logistic: half at x0
    assert TextTrainConfig(kl_schedule="constant").schedule(0.3, 100)(7) == 0.3
    with pytest.raises(ConfigError, match="kl_cycle_ratio"):
        TextTrainConfig(kl_cycle_ratio=0)
    from vaecore.runner.options import config_from_args
    from vaecore.settings.cli import build_parser

    args = build_parser().parse_args(["--task", "text", "--rnn", "gru", "--max-len", "9", "--free-bits", "0.1"])
    cfg = config_from_args(args)
    assert cfg.text.latent_dim == 32 and cfg.train.batch_size == 32 and cfg.train.epochs == 12  # the text defaults
    assert cfg.train.lr == 2e-3 and cfg.text.tie_embeddings is True and cfg.text_train.free_bits == 0.1
    mnist = config_from_args(build_parser().parse_args([])).train
    assert mnist.epochs == 10 and mnist.lr == 1e-3  # MNIST's
    untied = config_from_args(build_parser().parse_args(["--task", "text", "--no-tie-embeddings",
                                                                     "--lr", "5e-4"]))
    assert untied.text.tie_embeddings is False and untied.train.lr == 5e-4
    assert config_from_args(build_parser().parse_args(["--task", "text"])).text_train.free_bits == 0.05
    cfg.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == cfg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module", params=["torch", "jax"])
def finished(request, corpus, tmp_path_factory):
    """A finished 30-step run (2.5 epochs of 12 batches) with the MMD objective and sentences cut to 8 words."""
    work = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    out = run("--backend", request.param, *TINY, "--data", str(corpus), "--max-steps", "30", "--log-every", "10",
              "--checkpoint-every", "10", "--kl-schedule", "linear", "--kl-warmup-steps", "20", "--loss", "mmd",
              "--lambda", "10", "--max-len", "8", "--num-samples", "4", "--interp-steps", "5",
              "--lr-decay-start", "1", "--lr-decay", "0.5", "--workdir", str(work))
    assert out.returncode == 0, out.stderr
    return request.param, work, out.stdout


def test_run_folder_has_consistent_numbers(finished, corpus):
    backend, work, stdout = finished
    for name in ("config.json", "metrics.jsonl", "results.json", "vocab.json", "samples.txt", "reconstructions.txt",
                 "interpolations.txt", "checkpoints"):
        assert (work / name).exists(), name
    r = json.loads((work / "results.json").read_text())
    test_lines = [line.split() for line in (corpus / "test.txt").read_text().splitlines()]
    assert r["backend"] == backend and r["step"] == 30 and r["epochs"] == 2.5
    assert r["sentences"] == len(test_lines)
    assert r["truncated"] == sum(len(s) > 8 for s in test_lines) > 0
    assert r["tokens"] == sum(min(len(s), 8) + 1 for s in test_lines)  # words (cut to 8) and <eos>
    assert r["neg_elbo"] == pytest.approx(r["recon"] + r["kl"], rel=1e-6)
    assert r["ppl_bound"] == pytest.approx(math.exp(r["neg_elbo"] * r["sentences"] / r["tokens"]), rel=1e-6)
    assert 1 < r["ppl_bound"] < 30 and r["kl"] > 0  # 22 words in the vocabulary: a uniform model has ppl 22
    assert f"ppl_bound {r['ppl_bound']:.2f}" in stdout
    vocab = json.loads((work / "vocab.json").read_text())["itos"]
    assert vocab[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and sorted(vocab[4:]) == sorted(WORDS)

    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in rows if row["split"] == "train"]
    assert [row["step"] for row in train] == [10, 20, 30]
    # the KL weight of the last step of each interval: linear warm-up over 20 steps
    assert [row["kl_weight"] for row in train] == pytest.approx([9 / 20, 19 / 20, 1.0])
    # the learning rate of the last step of each interval (steps 9, 19, 29 are in epochs 0, 1, 2),
    # from the text task's default rate 2e-3
    assert [row["lr"] for row in train] == pytest.approx([2e-3, 1e-3, 5e-4])
    assert all(row["mmd"] != 0 and row["neg_elbo"] == pytest.approx(row["recon"] + row["kl"]) for row in train)
    valid = [row for row in rows if row["split"] == "valid"]
    assert [row["step"] for row in valid] == [12, 24]
    # collapse watched as it happens: MI (aggregate posterior over the whole valid split) and AU each epoch
    assert all(row["mi_batch_size"] == r["sentences"] for row in valid)
    # the test split's MI and AU recomputed in plain numpy from the checkpoint's posteriors (not with
    # the functions that computed them): He et al.'s estimator over the whole split, Var > 0.01 (ddof 1)
    means, logvars = posteriors_of(work)
    eps = np.random.default_rng([0, 1]).standard_normal(means.shape)  # evaluation.posterior_noise(seed 0)
    z = means + np.exp(0.5 * logvars) * eps
    d = means.shape[1]
    log_q = -0.5 * (((z[:, None] - means[None]) ** 2) / np.exp(logvars)[None] + logvars[None] + math.log(2 * math.pi))
    log_qz = np.log(np.mean(np.exp(log_q.sum(-1)), axis=1))
    mi = np.mean(-0.5 * d * math.log(2 * math.pi) - 0.5 * (1 + logvars).sum(1)) - np.mean(log_qz)
    assert r["mi"] == pytest.approx(mi, rel=1e-3, abs=1e-4)
    assert r["au"] == int(np.sum(means.var(axis=0, ddof=1) > 0.01))
    assert [row["split"] for row in rows][-1] == "test"
    config = json.loads((work / "config.json").read_text())
    assert config["text"]["vocab_size"] == len(vocab) and config["text_train"]["max_len"] == 8

    samples = (work / "samples.txt").read_text().split("\n## ")[1:]
    assert [s.splitlines()[0] for s in samples] == ["greedy", "beam search (width 5)", "sampling (temperature 1)"]
    assert all(len(s.strip().splitlines()) == 1 + 4 for s in samples)
    pairs = (work / "reconstructions.txt").read_text().split("\n\n")[1:]
    assert sum(p.startswith("> ") and "\n< " in p for p in pairs) == 4
    interp = (work / "interpolations.txt").read_text()
    assert interp.count("## from: ") == 3 and interp.count("\n0.00 ") == 6 and interp.count("\n1.00 ") == 6
    assert interp.count("### greedy\n") == 3 and interp.count("### beam search (width 5)\n") == 3


def posteriors_of(work):
    """Posterior means and log-variances [N, D] of the test split, from the run's newest checkpoint."""
    import importlib

    import numpy as np

    from vaecore.data.text_data import Vocab, load_run_data

    cfg = RunConfig.load(work / "config.json")
    model, _ = importlib.import_module(f"{cfg.backend}vae.evaluation").load_model(cfg, work)
    data = load_run_data(cfg, Vocab.load(str(work / "vocab.json")))
    out = [model.encode(model.prepare(b)) for b in data.splits["test"].batches(64, shuffle=False)]
    as_np = [[np.asarray(t.detach().numpy() if hasattr(t, "detach") else t, np.float64) for t in pair] for pair in out]
    return np.concatenate([m for m, _ in as_np]), np.concatenate([v for _, v in as_np])


def test_sample_and_interpolate_on_a_finished_run(finished):
    _, work, _ = finished
    before = json.loads((work / "results.json").read_text())
    out = run("--workdir", str(work), "--sample", "--num-samples", "2")
    assert out.returncode == 0, out.stderr
    assert "## greedy" in out.stdout and "## beam search" in out.stdout
    samples = (work / "samples.txt").read_text()
    assert "weights of step 30" in samples and len(samples.split("## greedy\n")[1].split("\n\n")[0].splitlines()) == 2
    out = run("--workdir", str(work), "--interpolate", "the cat sat", "a zebra ran fast", "--interp-steps", "4")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "zebra" in lines[0]  # reported as not in the vocabulary
    assert lines.index("## greedy") < lines.index("## beam search (width 5)") == len(lines) - 5
    for first in (lines.index("## greedy") + 1, len(lines) - 4):
        assert [line.split()[0] for line in lines[first:first + 4]] == ["0.00", "0.33", "0.67", "1.00"]
    assert json.loads((work / "results.json").read_text()) == before  # nothing was trained
    bad = run("--workdir", str(work), "--sample", "--rnn", "gru")
    assert bad.returncode == 2 and "drop --rnn" in bad.stderr


def test_a_run_trained_on_a_gpu_is_read_on_any_device(finished, tmp_path):
    """config.json names the training device; --sample and evaluate.py read the run wherever they run."""
    import shutil

    _, work, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(work, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["train"]["device"] = "cuda:0"
    (copy / "config.json").write_text(json.dumps(cfg))
    out = run("--workdir", str(copy), "--sample", "--num-samples", "1")
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--workdir", str(copy), "--k", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=ENV, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no such directory"),
    (lambda d: write_corpus(d, (("train", 50), ("valid", 10))), "missing the test split"),
    (lambda d: (write_corpus(d), (d / "valid.txt").write_text("")), "the file is empty"),
    (lambda d: (write_corpus(d), (d / "test.txt").write_bytes(b"\xff\xfe bad")), "not UTF-8"),
    (lambda d: write_corpus(d, (("train", 10), ("valid", 10), ("test", 10))), "larger than the train split"),
])
def test_bad_data_is_one_line_and_exit_2(make, message, tmp_path):
    data = tmp_path / "data"
    make(data)
    out = run("--backend", "torch", *TINY, "--data", str(data), "--max-steps", "2", "--workdir", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


@pytest.mark.parametrize("args, message", [
    (["--task", "text", "--word-dropout", "1.5"], "word_dropout must be a number in [0, 1)"),
    (["--task", "text", "--kl-schedule", "cosine"], "invalid choice: 'cosine'"),
    (["--task", "text", "--hidden-dim", "0"], "hidden_dim must be a positive integer"),
    (["--task", "text", "--model", "conv"], "--model applies to --task mnist only"),
    (["--rnn", "gru"], "--rnn applies to --task text only"),
    (["--task", "text", "--aggressive-max-inner", "5"], "--aggressive-max-inner applies to --aggressive"),
    (["--task", "text", "--no-latent", "--free-bits", "0.1"], "--no-latent has no code"),
    (["--task", "text", "--no-latent", "--bn-gamma", "0.5"], "no posterior"),
    (["--task", "text", "--aggressive", "--pretrain-ae-epochs", "2"], "choose one"),
    (["--task", "text", "--aggressive", "--validate-every", "2"], "it validates every epoch"),
    (["--delta-rate", "5"], "a delta-VAE rate of 5"),
    (["--no-latent"], "--no-latent applies to --task text only"),
    (["--task", "text", "--kl-warmup-steps", "100"], "not a parameter of the logistic KL schedule"),
    (["--task", "text", "--kl-schedule", "linear", "--kl-cycles", "3"], "not a parameter of the linear KL"),
    (["--task", "text", "--no-latent", "--kl-schedule", "linear"], "--no-latent has no code"),
    (["--sample"], "need --workdir"),
])
def test_bad_flags_are_one_line_and_exit_2(args, message, tmp_path):
    out = run(*args) if args == ["--sample"] else run(*args, "--workdir", str(tmp_path / "r"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_diverging_text_run_names_the_step_and_keeps_the_checkpoint(backend, corpus, tmp_path):
    work = tmp_path / "run"
    out = run(*TINY, "--backend", backend, "--data", str(corpus), "--lr", "1e30", "--max-steps", "40",
              "--checkpoint-every", "1", "--workdir", str(work))
    assert out.returncode == 1, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "non-finite loss at step" in line and "last good checkpoint" in line
    good = int(line.split("(step ")[1].split(")")[0])
    assert good == int(line.split("at step ")[1].split()[0]) - 1
    assert not (work / "results.json").exists()
    assert any(f"{good:08d}" in p.name or p.name == str(good) for p in (work / "checkpoints").iterdir())
