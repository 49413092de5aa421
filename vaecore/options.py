"""From ``train.py``'s flags to a ``RunConfig``: the task's defaults, the rules that refuse a flag
the run would ignore, and the resume policy (which flags may change on ``--resume``)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vaecore import rundir
from vaecore.config import (
    PRESETS,
    TASK_DEFAULTS,
    ConfigError,
    ImageModelConfig,
    LossConfig,
    RunConfig,
    TextTrainConfig,
    TrainConfig,
)

# Flags that may differ between a run and its --resume (everything else must match config.json): how
# long it trains, where, and how often it logs, validates and checkpoints; none changes what a step computes.
RESUMABLE_CHANGES = {"epochs", "max_steps", "device", "checkpoint_every", "keep_checkpoints", "log_every",
                     "validate_every"}


# Flags that only one task reads: giving them to the other task is an error, not silently ignored.
IMAGE_ONLY = {"model", "hidden_sizes", "conv_channels", "conv_dense", "binarization", "activation",
              "lr_schedule", "preset"}
TEXT_ONLY = {"rnn", "num_layers", "bidirectional", "embed_dim", "hidden_dim", "word_dropout", "embedding_dropout",
             "output_dropout", "z_every_step", "decoder_init_tanh", "tie_embeddings", "no_latent", "max_len",
             "min_freq",
             "max_vocab", "kl_schedule", "kl_warmup_steps", "kl_logistic_k", "kl_logistic_x0", "kl_cycles", "kl_cycle_ratio", "free_bits",
             "lr_decay_start", "lr_decay", "pretrain_ae_epochs", "aggressive",
             "aggressive_max_inner", "num_samples", "beam_width", "temperature", "interp_steps"}


def text_configs(args: argparse.Namespace, latent_dim: int):
    """(TextModelConfig, TextTrainConfig) from the flags; invalid values raise ConfigError."""
    from vaecore.text_config import TextModelConfig

    try:
        model = TextModelConfig(
            vocab_size=None, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
            latent_dim=latent_dim, rnn=args.rnn, num_layers=args.num_layers, bidirectional=args.bidirectional,
            embedding_dropout=args.embedding_dropout, word_dropout=args.word_dropout, output_dropout=args.output_dropout,
            z_every_step=args.z_every_step, decoder_init_tanh=args.decoder_init_tanh,
            tie_embeddings=args.tie_embeddings, delta_rate=args.delta_rate, bn_gamma=args.bn_gamma,
            use_latent=not args.no_latent)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    train = TextTrainConfig(
        kl_schedule="constant" if args.loss == "iwae" else args.kl_schedule, kl_warmup_steps=args.kl_warmup_steps, kl_logistic_k=args.kl_logistic_k,
        kl_logistic_x0=args.kl_logistic_x0, kl_cycles=args.kl_cycles, kl_cycle_ratio=args.kl_cycle_ratio,
        free_bits=0.0 if args.no_latent or args.loss == "iwae" else args.free_bits, max_len=args.max_len, min_freq=args.min_freq, max_vocab=args.max_vocab,
        lr_decay_start=args.lr_decay_start, lr_decay=args.lr_decay, pretrain_epochs=args.pretrain_ae_epochs,
        aggressive=args.aggressive, aggressive_max_inner=args.aggressive_max_inner)
    return model, train


def config_from_args(args: argparse.Namespace) -> RunConfig:
    defaults = TASK_DEFAULTS[args.task]
    latent_dim = defaults["latent_dim"] if args.latent_dim is None else args.latent_dim
    batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    lr = defaults["lr"] if args.lr is None else args.lr
    text, text_train = text_configs(args, latent_dim) if args.task == "text" else (None, None)
    image = (ImageModelConfig(kind=args.model, latent_dim=latent_dim, hidden_sizes=tuple(args.hidden_sizes),
                              conv_channels=tuple(args.conv_channels), conv_dense=args.conv_dense,
                              delta_rate=args.delta_rate, bn_gamma=args.bn_gamma, activation=args.activation)
             if args.task == "mnist" else None)
    return RunConfig(
        backend=args.backend, task=args.task, data=args.data, text=text, text_train=text_train, model=image,
        loss=LossConfig(objective=args.loss, alpha=args.alpha, lam=args.lam, kernel=args.mmd_kernel,
                        bandwidth=args.mmd_bandwidth, estimator=args.mmd_estimator, kl_weight=args.kl_weight,
                        iw_samples=args.iw_samples),
        train=TrainConfig(epochs=epochs, max_steps=args.max_steps, batch_size=batch_size, lr=lr,
                          seed=args.seed, binarization=args.binarization, dtype=args.dtype, device=args.device,
                          checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                          log_every=args.log_every, validate_every=args.validate_every, eps=args.adam_eps,
                          lr_schedule=args.lr_schedule),
    )


def resumed_config(saved: RunConfig, args: argparse.Namespace, given: set[str]) -> RunConfig:
    """The saved config, with the ``RESUMABLE_CHANGES`` flags taken from the command line if given;
    any other flag that contradicts the saved run is an error."""

    if "task" in given and args.task != saved.task:
        raise ConfigError(f"--resume: --task {args.task!r} differs from the run's config.json ({saved.task!r}); "
                          f"drop the flag or use a new --workdir")
    fresh = config_from_args(argparse.Namespace(**{**vars(args), "task": saved.task})).to_dict()
    old = saved.to_dict()

    def flat(d: dict) -> dict:  # for text runs the text sections come last (their latent_dim wins)
        sections = ("model", "loss", "train", "text", "text_train")
        return {k: v for s in (d, *(d[name] or {} for name in sections)) for k, v in s.items()}

    flat_fresh, flat_old = flat(fresh), flat(old)
    rename = {"model": "kind", "loss": "objective", "lam": "lam", "mmd_kernel": "kernel",
              "mmd_bandwidth": "bandwidth", "mmd_estimator": "estimator"}
    for dest in given - {"resume", "workdir"} - RESUMABLE_CHANGES:
        key = rename.get(dest, dest)
        if key in flat_old and flat_fresh.get(key) != flat_old[key]:
            raise ConfigError(f"--resume: --{dest.replace('_', '-')} {flat_fresh.get(key)!r} differs from the run's "
                              f"config.json ({flat_old[key]!r}); drop the flag or use a new --workdir")
    changes = {dest: getattr(args, dest) for dest in RESUMABLE_CHANGES & given}
    return dataclasses.replace(saved, train=dataclasses.replace(saved.train, **changes))  # validated again


SCHEDULE_FLAGS = {"linear": {"kl_warmup_steps"}, "logistic": {"kl_logistic_k", "kl_logistic_x0"},
                  "cyclical": {"kl_cycles", "kl_cycle_ratio"}, "constant": set()}


def check_schedule_flags(cfg: RunConfig, given: set[str]) -> None:
    """A KL-schedule parameter of another schedule, or any KL flag on the language model, would be ignored."""
    schedule = cfg.text_train.kl_schedule
    other = sorted(given & (set().union(*SCHEDULE_FLAGS.values()) - SCHEDULE_FLAGS[schedule]))
    if other:
        raise ConfigError(f"--{other[0].replace('_', '-')} is not a parameter of the {schedule} KL schedule "
                          f"(--kl-schedule {schedule}); drop it or choose its schedule")
    kl_flags = sorted(given & {"kl_weight", "kl_schedule", *set().union(*SCHEDULE_FLAGS.values())})
    if not cfg.text.use_latent and kl_flags:
        raise ConfigError(f"--{kl_flags[0].replace('_', '-')} shapes the code's KL, and --no-latent has no code; "
                          f"drop it")


def check_text_iwae_flags(given: set[str]) -> None:
    """The sentence IWAE weighs p(z) / q(z|x) as the bound has it: no KL schedule, no free bits, no
    KL-free pretraining, and it needs a code."""
    wrong = sorted(given & {"kl_schedule", "free_bits", "pretrain_ae_epochs", "no_latent",
                            *set().union(*SCHEDULE_FLAGS.values())})
    if wrong:
        raise ConfigError(f"--{wrong[0].replace('_', '-')} does not apply to --loss iwae (the bound weighs "
                          f"p(z) / q(z|x) as it is); drop it or use --loss elbo")


def check_model_flags(cfg: RunConfig, given: set[str]) -> None:
    """The image model's flags of the other kind (MLP sizes on a conv model, and the reverse) would be ignored."""
    other = {"mlp": {"conv_channels", "conv_dense"}, "conv": {"hidden_sizes", "activation"}}[cfg.model.kind]
    wrong = sorted(given & other)
    if wrong:
        raise ConfigError(f"--{wrong[0].replace('_', '-')} applies to --model "
                          f"{'conv' if cfg.model.kind == 'mlp' else 'mlp'}; this run is --model {cfg.model.kind}")


def check_task_flags(task: str, given: set[str]) -> None:
    wrong = sorted(given & (TEXT_ONLY if task == "mnist" else IMAGE_ONLY))
    if wrong:
        other = "text" if task == "mnist" else "mnist"
        raise ConfigError(f"--{wrong[0].replace('_', '-')} applies to --task {other} only (this run is --task {task})")




def default_workdir(cfg: RunConfig) -> Path:
    kind = cfg.text.rnn if cfg.task == "text" else cfg.model.kind
    return Path("runs") / f"{cfg.task}-{cfg.backend}-{kind}-{cfg.loss.objective}"


def apply_preset(args: argparse.Namespace, given: set[str]) -> argparse.Namespace:
    """``--preset NAME``: its values (``config.PRESETS``) for every flag not given beside it."""
    if args.preset is None:
        return args
    if args.task != "mnist":
        raise ConfigError(f"--preset {args.preset} applies to --task mnist only (this run is --task {args.task})")
    return argparse.Namespace(**{**vars(args), **{k: v for k, v in PRESETS[args.preset].items() if k not in given}})


def resolve(args: argparse.Namespace, given: set[str]) -> tuple[RunConfig, Path]:
    """The run's config and folder from the parsed flags (``given``: the flags typed): a new run's
    config, or the saved one on ``--resume``; every flag the run would ignore is a ``ConfigError``."""
    args = apply_preset(args, given)
    cfg = config_from_args(args)
    workdir = args.workdir or default_workdir(cfg)
    if args.resume:
        if not (workdir / rundir.CONFIG).exists():
            raise ConfigError(f"--resume: {workdir} has no {rundir.CONFIG}; start the run without --resume")
        cfg = resumed_config(rundir.read_config(workdir, flag="--resume: --workdir"), args, given)
    elif rundir.has_checkpoint(workdir):
        raise ConfigError(f"{workdir} already holds a run's checkpoints; pass --resume to continue it "
                          f"or choose another --workdir")
    check_task_flags(cfg.task, given)
    if cfg.task == "text" and not cfg.text.use_latent and "free_bits" in given and args.free_bits > 0:
        raise ConfigError("--free-bits applies to the code's KL, and --no-latent has no code; drop --free-bits")
    mmd_only = sorted(given & {"alpha", "lam", "mmd_kernel", "mmd_bandwidth", "mmd_estimator"})
    if mmd_only and cfg.loss.objective != "mmd":
        flag = "--lambda" if mmd_only[0] == "lam" else "--" + mmd_only[0].replace("_", "-")
        raise ConfigError(f"{flag} applies to --loss mmd (InfoVAE); this run optimises the {cfg.loss.objective}")
    if cfg.task == "text" and cfg.loss.objective == "iwae":
        check_text_iwae_flags(given)
    if cfg.task == "text":
        check_schedule_flags(cfg, given)
    else:
        check_model_flags(cfg, given)
    if "lr_decay_start" in given and cfg.task == "text" and cfg.text_train.lr_decay == 1.0:
        raise ConfigError("--lr-decay-start applies when --lr-decay is below 1 (the rate is constant); "
                          "give --lr-decay or drop it")
    if cfg.task == "text" and "aggressive_max_inner" in given and not cfg.text_train.aggressive:
        raise ConfigError("--aggressive-max-inner applies to --aggressive training; add --aggressive or drop it")
    if cfg.backend == "jax" and "device" in given and args.device != "auto":
        raise ConfigError(f"--device {args.device} applies to --backend torch; JAX runs on its default backend "
                          f"(set JAX_PLATFORMS=cpu to force the CPU)")
    return cfg, workdir


GENERATION_FLAGS = {"workdir", "sample", "interpolate", "num_samples", "beam_width", "temperature", "interp_steps"}


def generation_run(args: argparse.Namespace, given: set[str]) -> RunConfig:
    """``--sample`` / ``--interpolate``: the text run they read (its config.json is the run's)."""
    if given - GENERATION_FLAGS:
        raise ConfigError(f"--sample and --interpolate read the run's config.json; drop "
                          f"--{min(given - GENERATION_FLAGS).replace('_', '-')}")
    if args.workdir is None:
        raise ConfigError("--sample and --interpolate need --workdir, a text run's folder with config.json")
    cfg = rundir.read_config(args.workdir)
    if cfg.task != "text":
        raise ConfigError(f"{args.workdir} is a {cfg.task} run; --sample and --interpolate need a --task text run")
    return cfg
