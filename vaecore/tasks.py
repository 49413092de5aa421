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

from vaecore.config import ConfigError, RunConfig


@dataclass(frozen=True)
class TaskSpec:
    """One task: ``name`` (``--task``); ``unit``, what one example is (``nats per UNIT``);
    ``eval_k`` and ``chunk_rows``, the importance samples and decoder rows per call of its
    evaluation by default; ``kind(cfg)``, its model's short name (run-folder names, labels);
    ``build(cfg, workdir, resume, generation, kernels)``, its training ``Task`` (``vaecore.driver``);
    ``eval_data(cfg, workdir, split, data, limit, batch_size)``, what ``evaluate.py`` evaluates
    (``EvalData``); ``result_line(results)``, the line ``train.py`` prints at the end;
    ``token_accuracy``: its evaluation also scores the greedy reconstructions token by token."""

    name: str
    unit: str
    eval_k: int
    chunk_rows: int
    kind: Callable[[RunConfig], str]
    build: Callable[..., Any]
    eval_data: Callable[..., EvalData]
    result_line: Callable[[dict], str]
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
    from vaecore.image_task import ImageTask

    return ImageTask(cfg, resume=resume, kernels=kernels)  # generation: the text task's outputs only


def _text_task(cfg, workdir, *, resume, generation, kernels):
    from vaecore.text_task import TextTask

    return TextTask(cfg, workdir, resume=resume, generation=generation, kernels=kernels)


def _image_eval(cfg, workdir, *, split, data, limit, batch_size) -> EvalData:
    from vaecore.image_task import eval_split

    images, labels, source = eval_split(cfg, split=split, data=data, limit=limit)
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    return EvalData(batches, source, images, labels)


def _text_eval(cfg, workdir, *, split, data, limit, batch_size) -> EvalData:
    from vaecore.text_task import eval_split

    batches, source = eval_split(cfg, workdir, split=split, data=data, limit=limit, batch_size=batch_size)
    return EvalData(batches, source, count_tokens=lambda b: b.num_targets)


def _line(keys: tuple[str, ...], tail: Callable[[dict], str]) -> Callable[[dict], str]:
    return lambda r: "test: " + ", ".join(f"{k} {r[k]:.2f}" for k in keys) + tail(r)


REGISTRY: dict[str, TaskSpec] = {
    # Burda et al. evaluate MNIST with K = 5000; He et al. text with K = 500
    "mnist": TaskSpec("mnist", "image", 5000, 20_000, lambda c: c.model.kind, _image_task, _image_eval,
                      _line(("neg_elbo", "recon", "kl", "mmd"), lambda r: f" ({r['units']})")),
    "text": TaskSpec("text", "sentence", 500, 256, lambda c: c.text.rnn, _text_task, _text_eval,
                     _line(("neg_elbo", "recon", "kl", "ppl_bound"),
                           lambda r: f" (nats per sentence; {r['sentences']} sentences, {r['tokens']} tokens)"),
                     token_accuracy=True),
}


def task(name: str) -> TaskSpec:
    if name not in REGISTRY:
        raise ConfigError(f"no task {name!r}; the tasks are {', '.join(REGISTRY)}")
    return REGISTRY[name]


def default_workdir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.task}-{cfg.backend}-{task(cfg.task).kind(cfg)}-{cfg.loss.objective}"
