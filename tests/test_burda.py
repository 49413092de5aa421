"""Burda et al.'s protocol (issue 18): the 3^i-epoch learning-rate stages, the ``--preset burda``
flag set, the tanh MLP; the stages in a real run's logged learning rate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vaecore.runner.options import resolve
from vaecore.schedules import BURDA_EPOCHS, burda_lr_scale, burda_stage
from vaecore.settings.cli import build_parser, explicit_flags
from vaecore.settings.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_burda_stages_by_hand():
    # stage i lasts 3^i epochs: 0 | 1-3 | 4-12 | 13-39 | 40-120 | 121-363 | 364-1092 | 1093-3279
    firsts = [0, 1, 4, 13, 40, 121, 364, 1093]
    assert [burda_stage(e) for e in firsts] == list(range(8))
    assert [burda_stage(e - 1) for e in firsts[1:]] == list(range(7))
    assert BURDA_EPOCHS == 3280 == sum(3 ** i for i in range(8))
    assert burda_stage(3279) == burda_stage(3280) == burda_stage(10**6) == 7
    assert [burda_lr_scale(e) for e in (0, 3, 4, 3279)] == pytest.approx([1.0, 10 ** (-1 / 7), 10 ** (-2 / 7), 0.1])
    with pytest.raises(ValueError):
        burda_stage(-1)


def resolved(*argv):
    parser = build_parser()
    args = parser.parse_args(list(argv))
    return resolve(args, explicit_flags(parser, list(argv)))[0]


def test_preset_values_and_overrides(tmp_path):
    cfg = resolved("--preset", "burda", "--workdir", str(tmp_path / "a"))
    m, t = cfg.model, cfg.train
    assert (m.kind, m.hidden_sizes, m.latent_dim, m.activation) == ("mlp", (200, 200), 50, "tanh")
    assert (t.batch_size, t.lr, t.b1, t.b2, t.eps, t.lr_schedule, t.epochs) == (20, 1e-3, 0.9, 0.999, 1e-4, "burda", 3280)
    assert cfg.loss.objective == "elbo"
    # flags given beside the preset win; the rest stays the preset's
    cfg = resolved("--preset", "burda", "--loss", "iwae", "--iw-samples", "5", "--batch-size", "100",
                   "--workdir", str(tmp_path / "b"))
    assert (cfg.loss.objective, cfg.loss.iw_samples, cfg.train.batch_size, cfg.model.activation) == ("iwae", 5, 100, "tanh")
    assert resolved("--workdir", str(tmp_path / "c")).model.activation == "relu"  # no preset: the defaults
    with pytest.raises(ConfigError, match="--preset burda applies to --task mnist only"):
        resolved("--preset", "burda", "--task", "text", "--workdir", str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="--activation tanh applies to --model mlp"):
        resolved("--model", "conv", "--activation", "tanh", "--workdir", str(tmp_path / "e"))
    with pytest.raises(ConfigError, match="--lr-schedule applies to --task mnist"):
        resolved("--task", "text", "--lr-schedule", "burda", "--workdir", str(tmp_path / "f"))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_burda_schedule_in_a_run(backend, tmp_path):
    """4,000 images in batches of 1,000: 4 steps per epoch; 6 epochs span stages 0, 1 (x3) and 2."""
    work = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--backend", backend, "--preset", "burda",
                           "--batch-size", "1000", "--epochs", "6", "--log-every", "4", "--workdir", str(work)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["split"] == "train"]
    assert lrs == pytest.approx([1e-3, *[1e-3 * 10 ** (-1 / 7)] * 3, *[1e-3 * 10 ** (-2 / 7)] * 2], rel=1e-12)
    config = json.loads((work / "config.json").read_text())
    assert config["model"]["activation"] == "tanh" and config["train"]["lr_schedule"] == "burda"


def test_published_figure_only_for_burdas_protocol(tmp_path):
    """The comparison's `published` column: Burda et al.'s Table 1 figure for a run on exactly their
    protocol (by the preset or flag by flag), nothing for any departure from it."""
    from vaecore.runner.report import published_nll

    def published(*argv):
        cfg = resolved(*argv, "--workdir", str(tmp_path / str(len(list(tmp_path.iterdir())))))
        return published_nll(json.loads(json.dumps(cfg.to_dict())))  # as config.json holds it

    assert published("--preset", "burda") == 86.76
    assert published("--preset", "burda", "--loss", "iwae", "--iw-samples", "1") == 86.76  # IWAE k = 1 is the VAE
    assert published("--preset", "burda", "--loss", "iwae", "--iw-samples", "5") == 85.54
    assert published("--preset", "burda", "--loss", "iwae", "--iw-samples", "50") == 84.78
    assert published("--hidden-sizes", "200,200", "--latent-dim", "50", "--activation", "tanh", "--batch-size", "20",
                     "--adam-eps", "1e-4", "--lr-schedule", "burda", "--epochs", "3280") == 86.76
    for departure in (["--loss", "iwae", "--iw-samples", "3"], ["--epochs", "1093"], ["--batch-size", "100"],
                      ["--bn-gamma", "0.7"], ["--delta-rate", "0.1"], ["--binarization", "fixed"],
                      ["--max-steps", "10"], ["--kl-weight", "0.5"], ["--lr", "3e-4"], ["--activation", "relu"],
                      ["--loss", "mmd"]):
        assert published("--preset", "burda", *departure) is None, departure
    assert published() is None  # the defaults
    config = json.loads(json.dumps(resolved("--preset", "burda", "--workdir", str(tmp_path / "b2")).to_dict()))
    config["train"]["b2"] = 0.99  # no flag sets it; a config.json written by hand might
    assert published_nll(config) is None
    assert published_nll({**config, "task": "text"}) is None


def test_comparison_shows_the_published_figure_beside_the_measured_one(tmp_path):
    import csv

    from vaecore.runner.report import compare_runs

    runs = []
    for name, argv in (("burda-iwae5", ["--loss", "iwae", "--iw-samples", "5"]), ("burda-short", ["--epochs", "9"])):
        folder = tmp_path / name
        folder.mkdir()
        cfg = resolved("--preset", "burda", *argv, "--workdir", str(tmp_path / f"w-{name}"))
        (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
        (folder / "eval_test.json").write_text(json.dumps({"split": "test", "k": 5000, "nll": 85.9, "examples": 10000}))
        runs.append(folder)
    md, table = compare_runs(runs, tmp_path / "out")
    rows = {row["run"]: row for row in csv.DictReader(table.read_text().splitlines())}
    assert rows["burda-iwae5"]["published"] == "85.54" and rows["burda-short"]["published"] == ""
    header = md.read_text().splitlines()[2]
    assert "| k | published | nll |" in header
