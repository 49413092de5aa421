"""Burda et al.'s protocol (issue 18): the 3^i-epoch learning-rate stages, the ``--preset burda``
flag set, the tanh MLP; the stages in a real run's logged learning rate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vaecore.cli import build_parser, explicit_flags
from vaecore.config import ConfigError
from vaecore.options import resolve
from vaecore.schedules import BURDA_EPOCHS, burda_lr_scale, burda_stage

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
