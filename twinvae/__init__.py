"""twinvae: VAEs and sentence VAEs in JAX and PyTorch, used from Python.

    import twinvae
    model = twinvae.load("runs/mnist-torch-mlp-elbo")          # a run folder: newest checkpoint
    model = twinvae.load("exported/", backend="jax")            # an exported folder, in either framework
    model = twinvae.load("hf://owner/name")                     # a Hub repository (huggingface_hub)
    mean, logvar = model.encode(x); model.log_likelihood(x, k=5000); model.export("exported/")
    run = twinvae.train(task="mnist", backend="jax", max_steps=100, workdir="runs/x")

``load`` returns a ``Model`` (``twinvae.model``); the exported folder is ``twinvae.portable``'s. Only
the framework a model runs in is imported (both when a run moves from one to the other).
"""

from __future__ import annotations

from pathlib import Path

from twinvae import backends, portable
from twinvae.model import Model
from twinvae.training import Trained, train
from vaecore.data.text_data import Vocab
from vaecore.settings.config import ConfigError, on_any_device
from vaecore.task import tasks

__all__ = ["ConfigError", "Model", "Trained", "export", "load", "train"]


def load(path: str | Path, backend: str | None = None, device: str | None = None, step: int | None = None) -> Model:
    """The model in ``path`` (a run folder, an exported folder, ``hf://owner/name[@revision]``) in
    ``backend`` ("jax" or "torch"; default: the one that trained it), on ``device`` (torch: "cpu",
    "cuda", "cuda:N"; default: the GPU when there is one); of a run folder, its newest checkpoint or
    ``step``'s (one it keeps). Bad input is a one-line ValueError."""
    from vaecore.runs import rundir

    folder = portable.resolve(path)
    kind = portable.kind(folder)
    if step is not None and kind != "run":
        raise ValueError(f"{path}: an exported folder holds one set of weights; step= applies to a run folder")
    config = portable.read_json(folder / rundir.CONFIG)
    cfg = on_any_device(rundir.read_config(folder, flag="twinvae.load"))
    backend = backend or cfg.backend
    backends.check_backend(backend)
    cfg = backends.with_device(cfg, backend, device)
    vocab = _vocab(folder, cfg) if tasks.task(cfg.task).has_vocab else None
    if kind == "run":
        adapter, step = backends.load_run(cfg, backend, folder, step)
    else:
        params, meta = portable.read_weights(folder)
        adapter, step = backends.build(cfg, backend, params), int(meta["step"]) if "step" in meta else None
    results = portable.read_json(folder / rundir.RESULTS)
    if results is not None and results.get("step", step) != step:
        results = None  # a finished run's figures are of its last step, not of an older checkpoint loaded
    return Model(config, adapter, backend, vocab=vocab, step=step, results=results)


def _vocab(folder: Path, cfg) -> Vocab:
    from vaecore.runs import rundir

    if not (folder / rundir.VOCAB).is_file():
        raise ValueError(f"{folder}: a text model needs its {rundir.VOCAB}")
    vocab = Vocab.load(str(folder / rundir.VOCAB))
    if len(vocab) != cfg.text.vocab_size:
        raise ValueError(f"{folder / rundir.VOCAB}: {len(vocab)} words, but config.json's model has "
                         f"vocab_size {cfg.text.vocab_size}")
    return vocab


def export(run: str | Path, folder: str | Path, *, overwrite: bool = False, step: int | None = None) -> Path:
    """Export a run folder's newest checkpoint (or ``step``'s; or re-export an exported folder) to
    ``folder``: the portable model folder of ``Model.export``. Nothing in ``run`` changes."""
    return load(run, step=step).export(folder, overwrite=overwrite)
