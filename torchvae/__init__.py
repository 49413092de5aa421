"""The torch backend: the twin of ``jaxvae``, module for module.

Its entry points are ``BACKEND``'s, each importing its module when first used (so ``import torchvae``
alone costs nothing, and every edge is a visible import): ``engine(task)``, the training engine of a
task (``vaecore.driver.Engine``); ``parallel``, the device layout of a run; ``evaluation``,
``load_model`` and the evaluation kernels (``vaecore.evaluation.EvalBackend``); ``decoding``, the
greedy, beam and sampled decodings of the sentence VAE; ``params``, ``export_params`` /
``import_params`` (the canonical weights that move between backends).
"""

from __future__ import annotations


class Backend:
    """The torch backend's entry points (``vaecore.evaluation`` and ``twinvae`` reach a backend only here)."""

    name = "torch"

    def engine(self, task: str):
        """The engine class of ``task`` (a name of ``vaecore.tasks.REGISTRY``)."""
        from torchvae.text_train import TorchTextEngine
        from torchvae.train import TorchEngine

        return {"mnist": TorchEngine, "text": TorchTextEngine}[task]

    @property
    def parallel(self):
        import torchvae.parallel as module

        return module

    @property
    def evaluation(self):
        import torchvae.evaluation as module

        return module

    @property
    def decoding(self):
        import torchvae.decoding as module

        return module

    @property
    def params(self):
        import torchvae.params as module

        return module


BACKEND = Backend()


def engine(task: str):
    """The engine class of ``task``."""
    return BACKEND.engine(task)
