"""The torch backend's entry points, one object (``BACKEND``): ``engine(task)``, the training engine
of a task (``vaecore.runner.driver.Engine``); ``parallel``, the device layout of a run; ``evaluation``,
``load_model`` and the evaluation kernels (``vaecore.scoring.evaluation.EvalBackend``); ``decoding``, the
greedy, beam and sampled decodings of the sentence VAE; ``params``, ``export_params`` /
``import_params`` (the canonical weights that move between backends). Each imports its module when
first used, and no module of the backend imports this one, so the package has no import cycle."""

from __future__ import annotations


class Backend:
    """The torch backend's entry points (``vaecore.scoring.evaluation`` and ``twinvae`` reach a backend only here)."""

    name = "torch"

    def engine(self, task: str):
        """The engine class of ``task`` (a name of ``vaecore.task.tasks.REGISTRY``): its model family's
        (``torchvae.evaluation.FAMILIES``)."""
        from vaecore.task.tasks import task as spec

        return self.evaluation.FAMILIES[spec(task).family].engine()

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
