"""Run configuration: frozen dataclasses, validated on construction, serialised to config.json.

Every invalid value raises ``ConfigError`` naming the field and what is allowed, so the CLI can
print one line and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaecore.settings.mmd_args import ESTIMATORS, KERNELS

BACKENDS = ("jax", "torch")
TASKS = ("mnist", "text")
IMAGE_MODELS = ("mlp", "conv")
ACTIVATIONS = ("relu", "tanh")  # of the MLP's hidden layers
LR_SCHEDULES = ("constant", "burda")  # the image task's learning rate (vaecore.schedules.burda_lr_scale)
# Named flag sets (train.py --preset, --task mnist): the values of the flags not given beside it.
# burda: Burda et al. (2015), section 5: 784-200-200-50 tanh MLPs, batch 20, Adam (beta1 0.9,
# beta2 0.999, epsilon 1e-4) at 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7: 3,280 epochs.
PRESETS = {
    "burda": {"model": "mlp", "hidden_sizes": (200, 200), "latent_dim": 50, "activation": "tanh", "batch_size": 20,
              "lr": 1e-3, "adam_eps": 1e-4, "lr_schedule": "burda", "epochs": 3280},
}
# The objectives, of both tasks: the ELBO, InfoVAE's, and the importance-weighted bound (Burda et al. 2015).
LOSSES = ("elbo", "mmd", "iwae")
TEXT_LOSSES = LOSSES
BINARIZATIONS = ("dynamic", "fixed")
DTYPES = ("float32", "float64")
KL_SCHEDULES = ("constant", "linear", "logistic", "cyclical")
# Defaults that differ between the tasks (train.py's flags default to None, meaning "the task's default").
TASK_DEFAULTS = {"mnist": {"latent_dim": 20, "batch_size": 128, "epochs": 10, "lr": 1e-3},
                 "text": {"latent_dim": 32, "batch_size": 32, "epochs": 12, "lr": 2e-3}}
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and the allowed values."""


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    check_finite(name, value)
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value!r}")


def parse_bandwidth(value: str | float | tuple | list) -> str | float | tuple[float, ...]:
    """``"2d"``, a positive number, or several comma-separated positive numbers (summed kernels)."""
    if isinstance(value, (int, float)):
        scales: tuple[float, ...] = (float(value),)
    elif isinstance(value, (tuple, list)):
        scales = tuple(float(v) for v in value)
    else:
        text = str(value).strip()
        if text == "2d":
            return "2d"
        try:
            scales = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(
                f"mmd bandwidth must be '2d' or positive numbers separated by commas (e.g. 1.0 or 0.5,1,2); "
                f"got {value!r}"
            ) from None
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ConfigError(f"mmd bandwidth scales must all be > 0 and finite; got {value!r}")
    return scales[0] if len(scales) == 1 else scales


@dataclass(frozen=True)
class ImageModelConfig:
    """Encoder/decoder of the image VAE. ``kind`` "mlp": dense layers of ``hidden_sizes``;
    "conv": two stride-2 convolutions (``conv_channels``) and a dense layer of ``conv_dense``,
    mirrored by the decoder (the DCGAN-style MNIST VAE)."""

    kind: str = "mlp"
    latent_dim: int = 20
    hidden_sizes: tuple[int, ...] = (512, 512)
    conv_channels: tuple[int, int] = (32, 64)
    conv_dense: int = 1024
    delta_rate: float = 0.0  # delta-VAE committed rate, nats per dimension (vaecore.posterior); 0: off
    bn_gamma: float = 0.0  # BN-VAE scale of the batch-normalised posterior means; 0: off
    activation: str = "relu"  # of the MLP's hidden layers ("tanh": Burda et al.'s)

    def __post_init__(self) -> None:
        check_choice("model", self.kind, IMAGE_MODELS)
        check_choice("activation", self.activation, ACTIVATIONS)
        if self.kind == "conv" and self.activation != "relu":
            raise ConfigError(f"--activation {self.activation} applies to --model mlp; the convolutional model uses relu")
        check_positive("delta_rate", self.delta_rate, allow_zero=True)
        check_positive("bn_gamma", self.bn_gamma, allow_zero=True)
        if self.delta_rate > 0:
            from vaecore.posterior import delta_logvar_bounds

            try:
                delta_logvar_bounds(self.delta_rate)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        check_positive("latent_dim", self.latent_dim)
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise ConfigError(f"hidden_sizes must be one or more positive integers; got {self.hidden_sizes!r}")
        if len(self.conv_channels) != 2 or any(c <= 0 for c in self.conv_channels):
            raise ConfigError(f"conv_channels must be two positive integers; got {self.conv_channels!r}")
        check_positive("conv_dense", self.conv_dense)


@dataclass(frozen=True)
class LossConfig:
    """The objective: the ELBO; InfoVAE's general objective
    ``recon + (1 - alpha) * KL + (alpha + lam - 1) * MMD(q(z), p(z))``; or the importance-weighted
    bound of Burda et al. 2015, ``-log (1/k) sum_i p(x, z_i) / q(z_i | x)`` over ``iw_samples`` = k
    samples of q(z|x) (k = 1: the ELBO with a sampled KL)."""

    objective: str = "elbo"
    alpha: float = 0.0
    lam: float = 1000.0
    kernel: str = "imq"
    bandwidth: str | float | tuple[float, ...] = "2d"
    estimator: str = "unbiased"
    kl_weight: float = 1.0
    iw_samples: int = 1

    def __post_init__(self) -> None:
        check_choice("loss", self.objective, LOSSES)
        if isinstance(self.iw_samples, bool) or not isinstance(self.iw_samples, int) or self.iw_samples < 1:
            raise ConfigError(f"--iw-samples must be a positive integer; got {self.iw_samples!r}")
        if self.iw_samples > 1 and self.objective != "iwae":
            raise ConfigError(f"--iw-samples applies to --loss iwae; this run optimises the {self.objective}")
        if self.objective == "iwae" and self.kl_weight != 1.0:
            raise ConfigError("--kl-weight does not apply to --loss iwae (the bound weighs p(z) / q(z|x) as it is)")
        check_finite("alpha", self.alpha)
        check_finite("lambda", self.lam)
        check_choice("mmd_kernel", self.kernel, KERNELS)
        check_choice("mmd_estimator", self.estimator, ESTIMATORS)
        object.__setattr__(self, "bandwidth", parse_bandwidth(self.bandwidth))
        check_positive("kl_weight", self.kl_weight, allow_zero=True)
        if self.objective == "mmd" and self.alpha + self.lam - 1 < 0:
            raise ConfigError(f"alpha + lambda - 1 must be >= 0 for a valid InfoVAE objective; got {self.alpha + self.lam - 1}")
        if self.objective == "mmd" and self.alpha > 1:
            raise ConfigError(f"alpha must be <= 1 (1 - alpha weights the KL); got {self.alpha}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    validate_every: int = 1  # epochs between validations; the last epoch is always validated
    binarization: str = "dynamic"
    dtype: str = "float32"
    device: str = "auto"  # torch engines: "auto" (CUDA when torch sees it), "cpu", "cuda", "cuda:N"
    lr_schedule: str = "constant"  # image task: "burda", Burda et al.'s 3^i-epoch stages (vaecore.schedules)

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_positive("eps", self.eps)
        if not DEVICE_RE.match(str(self.device)):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if self.max_steps is not None:
            check_positive("max_steps", self.max_steps)
        check_positive("batch_size", self.batch_size)
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (the MMD needs pairs); got {self.batch_size}")
        check_positive("lr", self.lr)
        check_positive("checkpoint_every", self.checkpoint_every)
        check_positive("keep_checkpoints", self.keep_checkpoints)
        check_positive("log_every", self.log_every)
        check_positive("validate_every", self.validate_every)
        check_choice("binarization", self.binarization, BINARIZATIONS)
        check_choice("dtype", self.dtype, DTYPES)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2^32); got {self.seed!r}")


@dataclass(frozen=True)
class TextTrainConfig:
    """What the sentence-VAE task adds to training: the KL-weight schedule (``vaecore.schedules``;
    its peak is ``LossConfig.kl_weight``), free bits (nats per latent dimension), and how the corpus
    becomes data (``max_len``: words kept per sentence in every split, None keeps all; ``min_freq``
    and ``max_vocab`` shape the vocabulary built on the train split), and the learning-rate decay:
    the first ``lr_decay_start`` epochs train at ``TrainConfig.lr``, and every epoch after them
    multiplies it by ``lr_decay`` (1 keeps it constant). A config.json saved before the decay
    existed loads as a constant rate, which is what those runs did (``RunConfig.from_dict``).
    How the defaults were chosen: ``docs/2026-11-26-ptb-defaults-history.md``.

    Two training modes against posterior collapse (``vaecore.task.text_task``):

    - ``pretrain_epochs`` (Li et al. 2019): the first epochs train an autoencoder (KL weight 0);
      then the decoder (``text_config.DECODER_REINIT_MODULES``: all of it but the shared word
      embedding) is re-initialised, the optimiser state reset, and the ELBO with free bits trains
      for the remaining epochs, the KL schedule starting again from step 0.
    - ``aggressive`` (He et al. 2019): each decoder update is preceded by encoder-only updates, the
      first on the step's batch and the others on random training batches, at most
      ``aggressive_max_inner - 1`` of them; every ``aggressive_window`` of them the mean loss per token
      of the window is compared with the previous window's, and the inner loop stops once it did not
      improve. The mode ends for good after the first epoch whose validation MI is below the
      previous epoch's; then encoder and decoder are updated together as usual."""

    kl_schedule: str = "logistic"
    kl_warmup_steps: int = 5000
    kl_logistic_k: float = 0.0025
    kl_logistic_x0: float = 2500.0
    kl_cycles: int = 4
    kl_cycle_ratio: float = 0.5
    free_bits: float = 0.05
    max_len: int | None = None
    min_freq: int = 1
    max_vocab: int | None = None
    lr_decay_start: int = 8
    lr_decay: float = 0.6
    pretrain_epochs: int = 0
    aggressive: bool = False
    aggressive_max_inner: int = 100
    aggressive_window: int = 15

    def __post_init__(self) -> None:
        check_choice("kl_schedule", self.kl_schedule, KL_SCHEDULES)
        if not isinstance(self.pretrain_epochs, int) or self.pretrain_epochs < 0:
            raise ConfigError(f"pretrain_epochs must be an integer >= 0; got {self.pretrain_epochs!r}")
        if type(self.aggressive) is not bool:
            raise ConfigError(f"aggressive must be true or false; got {self.aggressive!r}")
        if self.aggressive and self.pretrain_epochs:
            raise ConfigError("aggressive inference and a pretrained encoder are separate remedies; choose one")
        check_positive("aggressive_max_inner", self.aggressive_max_inner)
        check_positive("aggressive_window", self.aggressive_window)
        check_positive("kl_warmup_steps", self.kl_warmup_steps)
        check_positive("kl_logistic_k", self.kl_logistic_k)
        check_finite("kl_logistic_x0", self.kl_logistic_x0)
        check_positive("kl_cycles", self.kl_cycles)
        if not 0 < self.kl_cycle_ratio <= 1:
            raise ConfigError(f"kl_cycle_ratio must be in (0, 1]; got {self.kl_cycle_ratio!r}")
        check_positive("free_bits", self.free_bits, allow_zero=True)
        if self.max_len is not None:
            check_positive("max_len", self.max_len)
        check_positive("min_freq", self.min_freq)
        if self.max_vocab is not None and self.max_vocab <= 4:
            raise ConfigError(f"max_vocab must be > 4 (the special tokens); got {self.max_vocab!r}")
        if not isinstance(self.lr_decay_start, int) or self.lr_decay_start < 0:
            raise ConfigError(f"lr_decay_start must be an integer >= 0 (epochs at the full learning rate); "
                              f"got {self.lr_decay_start!r}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1] (1 keeps the learning rate constant); got {self.lr_decay!r}")

    def lr_scale(self, step: int, steps_per_epoch: int) -> float:
        """The factor on ``TrainConfig.lr`` at ``step`` (0-based): 1 for the first ``lr_decay_start``
        epochs, then ``lr_decay`` to the power of the number of epochs past them, this one included."""
        epochs_past = step // steps_per_epoch - self.lr_decay_start + 1
        return self.lr_decay ** max(0, epochs_past)

    def schedule(self, kl_weight: float, total_steps: int):
        """The KL-weight schedule (``weight = schedule(step)``) peaking at ``kl_weight``."""
        from vaecore.schedules import make_schedule

        kwargs = {
            "constant": {"value": kl_weight},
            "linear": {"warmup_steps": self.kl_warmup_steps, "start": 0.0, "end": kl_weight},
            "logistic": {"k": self.kl_logistic_k, "x0": self.kl_logistic_x0, "max_weight": kl_weight},
            "cyclical": {"total_steps": total_steps, "n_cycles": self.kl_cycles, "ratio": self.kl_cycle_ratio,
                         "max_weight": kl_weight},
        }[self.kl_schedule]
        return make_schedule(self.kl_schedule, **kwargs)


@dataclass(frozen=True)
class RunConfig:
    backend: str = "torch"
    task: str = "mnist"
    data: str | None = None
    model: ImageModelConfig | None = field(default_factory=ImageModelConfig)  # task "mnist" only
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    text: Any = None  # vaecore.settings.text_config.TextModelConfig: task "text" only
    text_train: TextTrainConfig | None = None  # task "text" only

    def __post_init__(self) -> None:
        """A config holds its own task's sections only: a text config has no image model (None)."""
        check_choice("backend", self.backend, BACKENDS)
        check_choice("task", self.task, TASKS)
        if self.task == "text" and self.loss.objective not in TEXT_LOSSES:
            raise ConfigError(f"--loss {self.loss.objective} is built for --task mnist; the sentence VAE trains "
                              f"with {' or '.join(TEXT_LOSSES)}")
        if self.task == "text":
            if self.text is None or self.text_train is None:
                raise ConfigError("a text run's config needs its text and text_train sections")
            object.__setattr__(self, "model", None)
        elif self.model is None or self.text is not None or self.text_train is not None:
            raise ConfigError("an mnist run's config has an image model and no text sections")
        if self.text_train is not None and self.text_train.aggressive and self.train.validate_every != 1:
            raise ConfigError(f"--validate-every {self.train.validate_every} with --aggressive: aggressive "
                              f"inference ends on a fall in validation MI from one epoch to the next, so it "
                              f"validates every epoch; drop --validate-every")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        from vaecore.files import atomic_write_json

        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        def tuples(x: dict) -> dict:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}

        text = None
        if d.get("text") is not None:
            from vaecore.settings.text_config import TextModelConfig

            # a run saved before output dropout or tied embeddings existed had neither
            text = TextModelConfig(**{"output_dropout": 0.0, "tie_embeddings": False, **tuples(d["text"])})
        return cls(
            backend=d["backend"],
            task=d["task"],
            data=d.get("data"),
            # a text run saved before configs were typed by task carries an unused image section
            model=ImageModelConfig(**tuples(d["model"])) if d["task"] == "mnist" else None,
            loss=LossConfig(**tuples(d["loss"])),
            train=TrainConfig(**d["train"]),
            text=text,
            # a run saved before the learning-rate decay existed trained at a constant rate
            text_train=(TextTrainConfig(**{"lr_decay": 1.0, **d["text_train"]})
                        if d.get("text_train") is not None else None),
        )

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def on_any_device(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``train.device`` "auto": a run folder read later (samples, evaluation) runs
    wherever it is read, whatever device it was trained on."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="auto"))
