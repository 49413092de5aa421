"""The torch engines on a CUDA GPU: the same steps as on the CPU (float64, so cuDNN's and the CPU's
arithmetic agree to rounding), checkpoints that move between devices, and the CLI's --device.
Skipped where torch sees no GPU (CI); run on a GPU machine with ``python -m pytest tests/test_torch_cuda.py``."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")

from vaecore.data.text_data import TextBatch
from vaecore.settings.config import LossConfig, RunConfig, TextTrainConfig, TrainConfig
from vaecore.settings.text_config import TextModelConfig

ROOT = Path(__file__).resolve().parents[1]


def text_cfg(device: str, objective: str) -> RunConfig:
    return RunConfig(backend="torch", task="text",
                     text=TextModelConfig(vocab_size=40, embed_dim=16, hidden_dim=24, latent_dim=4,
                                          embedding_dropout=0.25, output_dropout=0.25, word_dropout=0.2),
                     text_train=TextTrainConfig(),
                     loss=LossConfig(objective=objective, lam=10.0),
                     train=TrainConfig(batch_size=6, dtype="float64", device=device))


def batches(n: int, seed: int = 0) -> list[TextBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lengths = rng.integers(3, 9, size=6).astype(np.int32)
        tokens = np.zeros((6, int(lengths.max())), np.int32)
        for i, n_tok in enumerate(lengths):
            tokens[i, 0], tokens[i, n_tok - 1] = 1, 2
            tokens[i, 1:n_tok - 1] = rng.integers(4, 40, size=n_tok - 2)
        out.append(TextBatch(tokens, lengths))
    return out


@pytest.mark.parametrize("objective", ["elbo", "mmd"])
def test_text_engine_on_cuda_matches_the_cpu_without_dropout(objective, tmp_path):
    """Dropout draws differ between the CPU and CUDA generators, so it is off here; eps, the word
    mask and the MMD's prior samples are drawn on the CPU and moved, so they are the same."""
    from torchvae.text_train import TorchTextEngine

    losses = {}
    for device in ("cpu", "cuda"):
        cfg = text_cfg(device, objective)
        cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, embedding_dropout=0.0, output_dropout=0.0))
        engine = TorchTextEngine(cfg, tmp_path / device)
        assert next(engine._model.parameters()).device.type == device
        losses[device] = [engine.train_step(b, s, 0.5, 1.0) for s, b in enumerate(batches(4))]
        losses[device].append(engine.evaluate(batches(2, seed=1)))
        params = {k: v.detach().cpu().numpy() for k, v in engine._model.state_dict().items()}
        losses[device].append(params)
    for a, b in zip(losses["cpu"], losses["cuda"]):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9, err_msg=k)


def test_text_checkpoint_moves_between_devices(tmp_path):
    """A checkpoint written on the GPU resumes on the CPU and continues with the same steps."""
    from torchvae.text_train import TorchTextEngine

    cfg = text_cfg("cuda", "elbo")
    gpu = TorchTextEngine(cfg, tmp_path)
    for s, b in enumerate(batches(3)):
        gpu.train_step(b, s, 1.0, 1.0)
    gpu.save(3, {"step": 3})
    cpu = TorchTextEngine(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu")), tmp_path)
    assert cpu.restore()["step"] == 3 and next(cpu._model.parameters()).device.type == "cpu"
    for k, v in gpu._model.state_dict().items():
        np.testing.assert_array_equal(cpu._model.state_dict()[k].numpy(), v.cpu().numpy())
    state = cpu.opt.state[next(iter(cpu._model.parameters()))]
    assert state["exp_avg"].device.type == "cpu"
    cpu.train_step(batches(1, seed=5)[0], 3, 1.0, 1.0)  # Adam's state moved with it


def test_image_engine_on_cuda_matches_the_cpu(tmp_path):
    from torchvae import mmd
    from torchvae.train import TorchEngine

    x = (np.random.default_rng(0).random((64, 784)) < 0.3).astype(np.float64)
    out = {}
    for device in ("cpu", "cuda"):
        cfg = RunConfig(loss=LossConfig(objective="mmd", lam=10.0),
                        train=TrainConfig(batch_size=64, dtype="float64", device=device))
        engine = TorchEngine(cfg, tmp_path / device)
        before = dict(mmd.PATH_COUNTS)
        out[device] = [engine.train_step(x, s, 1.0, 1.0) for s in range(3)]
        after = mmd.PATH_COUNTS
        assert after["reference" if device == "cuda" else "tiled"] > before.get(
            "reference" if device == "cuda" else "tiled", 0)
        out[device].append({"recon": engine.reconstruct(x[:4])})
    for a, b in zip(out["cpu"], out["cuda"]):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9, err_msg=k)


def test_cli_trains_a_text_run_on_cuda(tmp_path):
    from tests.test_text_cli import TINY, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    work = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--backend", "torch", *TINY, "--data", str(corpus),
           "--max-steps", "20", "--checkpoint-every", "10", "--device", "cuda", "--workdir", str(work)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ), check=False)
    assert out.returncode == 0, out.stderr
    assert RunConfig.load(work / "config.json").train.device == "cuda"
    assert (work / "results.json").exists() and (work / "samples.txt").exists()
