"""train.py as a user meets it: help, bad input (one line, exit 2), a diverging run (exit 1)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden-sizes", "32", "--latent-dim", "4", "--batch-size", "100"]


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def test_help_documents_every_flag():
    out = run("--help")
    assert out.returncode == 0
    import train

    for action in train.build_parser()._actions:
        for opt in action.option_strings:
            assert opt in out.stdout
        assert action.help, f"{action.option_strings} has no help text"


def test_help_imports_no_backend():
    code = "import sys, train; train.build_parser(); print('torch' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
    (["--epochs", "three"], "invalid int value: 'three'"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--mmd-bandwidth", "wide"], "'2d' or positive numbers"),
    (["--latent-dim", "0"], "latent_dim must be > 0"),
    (["--data", "/nonexistent/mnist"], "no such directory"),
    (["--device", "gpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["--backend", "jax", "--device", "cpu"], "--device cpu applies to --backend torch"),
    (["--validate-every", "0"], "validate_every must be > 0"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    out = run(*args, "--workdir", str(tmp_path / "run"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_data_file_is_exit_2(tmp_path):
    from tests.test_mnist_data import make_mnist_dir

    make_mnist_dir(tmp_path, n_train=5200)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    out = run("--data", str(tmp_path), "--workdir", str(tmp_path / "run"))
    assert out.returncode == 2 and "t10k-images-idx3-ubyte.gz" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_run_folder_and_no_silent_overwrite(backend, tmp_path):
    work = tmp_path / "run"
    out = run("--backend", backend, "--max-steps", "12", "--checkpoint-every", "5", "--log-every", "4",
              *SMALL, "--loss", "mmd", "--workdir", str(work))
    assert out.returncode == 0, out.stderr
    for name in ("config.json", "metrics.jsonl", "results.json", "samples.png", "reconstructions.png"):
        assert (work / name).exists(), name
    results = json.loads((work / "results.json").read_text())
    assert results["units"] == "nats per image"
    assert results["neg_elbo"] == pytest.approx(results["recon"] + results["kl"], rel=1e-5)
    assert 100 < results["neg_elbo"] < 600 and results["mmd"] != 0
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [4, 8, 12]
    assert {"recon", "kl", "mmd", "total"} <= set(rows[0])
    assert json.loads((work / "config.json").read_text())["loss"]["objective"] == "mmd"
    # the same workdir again, without --resume, must not clobber the run
    before = (work / "results.json").read_bytes()
    again = run("--backend", backend, "--max-steps", "12", *SMALL, "--workdir", str(work))
    assert again.returncode == 2 and "--resume" in again.stderr
    assert (work / "results.json").read_bytes() == before


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_diverging_run_names_the_step_and_keeps_the_checkpoint(backend, tmp_path):
    work = tmp_path / "run"
    out = run("--backend", backend, "--max-steps", "40", "--checkpoint-every", "1", "--lr", "1e30", *SMALL,
              "--workdir", str(work))
    assert out.returncode == 1, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "non-finite loss at step" in line and "last good checkpoint" in line
    step = int(line.split("at step ")[1].split()[0])
    good = int(line.split("(step ")[1].split(")")[0])
    assert good == step - 1
    assert not (work / "results.json").exists()
    # the last good checkpoint is there and resumable
    assert any(str(good) in p.name for p in (work / "checkpoints").iterdir())


def test_resume_rejects_contradicting_flags(tmp_path):
    work = tmp_path / "run"
    assert run("--max-steps", "3", *SMALL, "--workdir", str(work)).returncode == 0
    out = run("--resume", "--model", "conv", "--workdir", str(work))
    assert out.returncode == 2 and "--model 'conv' differs" in out.stderr
    out = run("--resume", "--device", "cpu", "--max-steps", "4", "--workdir", str(work))  # the device may change
    assert out.returncode == 0, out.stderr
    # it continued the run (one more step from the checkpoint at step 3), not a new one
    assert "resuming from the checkpoint at step 3" in out.stdout
    assert json.loads((work / "results.json").read_text())["step"] == 4
    steps = [json.loads(line)["step"] for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) >= 1 and steps[-1] == 4
    assert json.loads((work / "config.json").read_text())["train"]["device"] == "cpu"
    out = run("--resume", "--workdir", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "no config.json" in out.stderr


def test_cuda_device_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU (tests/test_torch_cuda.py covers it)")
    out = run("--device", "cuda", "--max-steps", "2", "--workdir", str(tmp_path / "run"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "sees no CUDA GPU; use --device cpu or auto" in lines[0], out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def _damage_every_checkpoint(folder: Path) -> int:
    files = [p for p in (folder / "checkpoints").rglob("*") if p.is_file()]
    for p in files:
        p.write_bytes(b"\x00garbage" * 7)
    return len(files)


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("task", ["mnist", "text"])
def test_resume_with_only_damaged_checkpoints_fails_and_touches_nothing(task, backend, tmp_path):
    """--resume must continue from a checkpoint or stop: never start again from step 0 and
    truncate metrics.jsonl / overwrite results.json (issue 14)."""
    work = tmp_path / "run"
    if task == "mnist":
        args = ["--hidden-sizes", "16", "--latent-dim", "2", "--batch-size", "16"]
    else:
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        for split in ("train", "valid", "test"):
            (corpus / f"{split}.txt").write_text("\n".join(["a b c", "b c d e", "c a", "d d a b"] * 5) + "\n")
        args = ["--task", "text", "--data", str(corpus), "--embed-dim", "8", "--hidden-dim", "8", "--latent-dim",
                "2", "--batch-size", "4", "--num-samples", "1"]
    common = ["--backend", backend, *args, "--max-steps", "20", "--checkpoint-every", "10", "--log-every", "5",
              "--workdir", str(work)]
    first = subprocess.run([sys.executable, str(ROOT / "train.py"), *common], capture_output=True, text=True,
                           timeout=600, check=False)
    assert first.returncode == 0, first.stderr
    assert _damage_every_checkpoint(work) > 0
    before = {name: (work / name).read_bytes() for name in ("metrics.jsonl", "results.json", "config.json")}
    again = subprocess.run([sys.executable, str(ROOT / "train.py"), *common, "--max-steps", "30", "--resume"],
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 2, again.stdout + again.stderr
    *skipped, last = again.stderr.strip().splitlines()  # one line per damaged checkpoint, then the error
    assert skipped and all(line.startswith("warning: skipping checkpoint") for line in skipped), again.stderr
    assert "no readable checkpoint" in last and "Traceback" not in again.stderr
    assert {name: (work / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("script,args", [
    ("train.py", ["--rn", "gru"]), ("train.py", ["--word-drop", "0.5"]), ("train.py", ["--mod", "conv"]),
    ("train.py", ["--task", "text", "--max-st", "5"]), ("evaluate.py", ["--work", "x"]),
    ("evaluate.py", ["--compare", "a", "--ou", "b"]),
])
def test_abbreviated_flags_are_refused(script, args, tmp_path):
    """argparse's prefix matching would let --rn reach an MNIST run past the task-only check (issue 14)."""
    out = subprocess.run([sys.executable, str(ROOT / script), *args, "--seed", "1"], capture_output=True, text=True,
                         timeout=120, check=False, cwd=tmp_path)
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_help_states_each_default_once_and_interpolation_methods():
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    flat = " ".join(out.split())
    lr_decay = flat[flat.index("--lr-decay LR_DECAY text:"):]
    lr_decay = lr_decay[:lr_decay.index("(default: 0.6)") + len("(default: 0.6)")]
    assert lr_decay.count("default") == 1 and "--lr-decay-start" in lr_decay
    interpolate = flat[flat.index("--interpolate SENTENCE_A SENTENCE_B do not train"):]
    assert "greedy and the beam-search decodings" in interpolate[:300]


@pytest.mark.parametrize("args,message", [
    (["--alpha", "0.5"], "--alpha applies to --loss mmd"),
    (["--task", "text", "--lambda", "10"], "--lambda applies to --loss mmd"),
    (["--mmd-kernel", "rbf"], "--mmd-kernel applies to --loss mmd"),
    (["--model", "conv", "--hidden-sizes", "64"], "--hidden-sizes applies to --model mlp"),
    (["--conv-dense", "64"], "--conv-dense applies to --model conv"),
    (["--task", "text", "--lr-decay", "1", "--lr-decay-start", "3"], "--lr-decay-start applies when"),
])
def test_flags_that_would_be_ignored_are_refused(args, message, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "--workdir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_max_steps_overrides_epochs(tmp_path):
    """--max-steps beyond --epochs trains that many steps (it was capped at the epochs silently)."""
    work = tmp_path / "r"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--epochs", "1", "--max-steps", "40",
                          "--batch-size", "128", "--hidden-sizes", "16", "--latent-dim", "2", "--log-every", "10",
                          "--workdir", str(work)], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    results = json.loads((work / "results.json").read_text())
    assert results["step"] == 40 and results["epochs"] == pytest.approx(40 / 31)  # 4,000 images: 31 steps/epoch


def test_device_auto_takes_the_gpu_only_when_torch_sees_one(monkeypatch):
    import torch

    from torchvae import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.resolve("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.resolve("auto") == torch.device("cuda")
