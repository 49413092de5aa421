"""What reports and model cards say of each task's runs, read from a ``config.json`` dict (the hooks
``describe_model``, ``setup`` and ``published_nll`` of ``vaecore.task.tasks.TaskSpec``). Pure functions of
dicts: a report reads run folders of either backend, and of older versions, without importing a task's
data code or a framework."""

from __future__ import annotations

from typing import Any

# Burda et al. (2015), Table 1, one stochastic layer: test NLL (K = 5000, dynamically binarised MNIST)
# after their protocol (config.PRESETS["burda"]), by the number of samples of the training bound:
# the VAE (k = 1, the ELBO), IWAE k = 5 and IWAE k = 50.
BURDA_PUBLISHED = {1: 86.76, 5: 85.54, 50: 84.78}


def g(value: Any) -> str:
    """A number as ``%g`` ("0.0025", "2500"), anything else as it prints."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def burda_nll(config: dict) -> float | None:
    """The published test NLL of the image model and protocol a run's ``config.json`` describes (nats
    per image), or None. Only Burda et al.'s protocol is known: every setting of ``--preset burda``
    (whether given by the preset or flag by flag), Adam's betas 0.9 and 0.999, the full 3,280 epochs,
    dynamic binarisation, no remedy, KL weight 1, and the ELBO or the IWAE bound with k in ``BURDA_PUBLISHED``."""
    from vaecore.settings.config import PRESETS

    model, loss, train = config.get("model") or {}, config.get("loss") or {}, config.get("train") or {}
    preset = PRESETS["burda"]
    settings = {"model": model.get("kind"), "hidden_sizes": tuple(model.get("hidden_sizes") or ()),
                "latent_dim": model.get("latent_dim"), "activation": model.get("activation"),
                "batch_size": train.get("batch_size"), "lr": train.get("lr"), "adam_eps": train.get("eps"),
                "lr_schedule": train.get("lr_schedule"), "epochs": train.get("epochs")}
    if (settings != preset or train.get("binarization") != "dynamic" or model.get("delta_rate")
            or model.get("bn_gamma") or train.get("max_steps") is not None or loss.get("kl_weight", 1.0) != 1.0
            or (train.get("b1"), train.get("b2")) != (0.9, 0.999)):
        return None
    k = {"elbo": 1, "iwae": loss.get("iw_samples")}.get(loss.get("objective"))
    return BURDA_PUBLISHED.get(k)


def image_setup(config: dict) -> list[str]:
    """An image run's choices that differ from the image defaults: MLP layers and activation, batch
    size, Adam's epsilon, Burda et al.'s learning-rate stages. E.g. ["MLP 200-200 tanh", "batch 20",
    "Adam eps 0.0001", "Burda lr stages"]."""
    from vaecore.settings.config import TASK_DEFAULTS, ImageModelConfig, TrainConfig

    model, train = config.get("model") or {}, config.get("train") or {}
    d_model, d_train, parts = ImageModelConfig(), TrainConfig(), []
    default_batch = TASK_DEFAULTS["mnist"]["batch_size"]
    hidden, activation = tuple(model.get("hidden_sizes") or d_model.hidden_sizes), model.get("activation", d_model.activation)
    if model.get("kind", "mlp") == "mlp" and (hidden != tuple(d_model.hidden_sizes) or activation != d_model.activation):
        parts.append(f"MLP {'-'.join(map(str, hidden))} {activation}")
    if train.get("batch_size", default_batch) != default_batch:
        parts.append(f"batch {train['batch_size']}")
    if train.get("eps", d_train.eps) != d_train.eps:
        parts.append(f"Adam eps {g(train['eps'])}")
    if train.get("lr_schedule", "constant") == "burda":
        parts.append("Burda lr stages")
    return parts


def text_setup(config: dict) -> list[str]:
    """A sentence VAE's choices: the KL schedule (with its parameters) and free bits unless it is the
    language model (no KL to shape), a Transformer decoder (its blocks and how z enters) or encoder,
    embedding, word and output dropout (and a Transformer decoder's attention and residual dropout), tied embeddings, how z reaches
    the decoder (every step, a tanh initial state), the learning-rate decay. Nothing without a
    ``text_train`` section."""
    text_train, text, parts = config.get("text_train"), config.get("text") or {}, []
    if not text_train:
        return parts
    if text.get("use_latent") is not False:  # the LM baseline (use_latent False): no KL to shape
        schedule = text_train.get("kl_schedule")
        detail = {"linear": f" ({g(text_train.get('kl_warmup_steps'))} steps)",
                  "logistic": f" (k {g(text_train.get('kl_logistic_k'))}, x0 {g(text_train.get('kl_logistic_x0'))})",
                  "cyclical": (f" ({g(text_train.get('kl_cycles'))} cycles, ratio "
                               f"{g(text_train.get('kl_cycle_ratio'))})")}.get(schedule, "")
        parts.append(f"{schedule} KL{detail}")
        if text_train.get("free_bits"):
            parts.append(f"free bits {g(text_train['free_bits'])}")
    transformer = text.get("decoder") == "transformer"
    if transformer:
        z = f", z as {text.get('z_injection')}" if text.get("use_latent") is not False else ""  # the LM has none
        parts.append(f"transformer decoder {g(text.get('transformer_layers'))}x{g(text.get('hidden_dim'))}{z}")
    if text.get("encoder") == "transformer":
        parts.append("transformer encoder")
    for name in ("embedding_dropout", "word_dropout", "output_dropout",
                 *(("attention_dropout", "residual_dropout") if transformer else ())):
        if text.get(name):
            parts.append(f"{name.replace('_', ' ')} {g(text[name])}")
    if text.get("tie_embeddings"):
        parts.append("tied embeddings")
    if text.get("z_every_step"):
        parts.append("z at every decoder step")
    if text.get("decoder_init_tanh"):
        parts.append("tanh initial state")
    if text_train.get("lr_decay", 1.0) != 1.0:
        parts.append(f"lr x{g(text_train['lr_decay'])} per epoch after {g(text_train.get('lr_decay_start'))}")
    return parts


def image_model(model: dict) -> str:
    """E.g. "mlp [512, 512]", "conv [32, 64]"."""
    sizes = model.get("hidden_sizes") if model.get("kind") == "mlp" else model.get("conv_channels")
    return f"{model.get('kind')} {sizes}"


def text_kind(text: dict) -> str:
    """The sentence VAE's short name from its ``text`` section: its RNN cell, or "transformer" for a
    Transformer decoder; "tenc-" before it with a Transformer encoder (a config.json from before the
    Transformers has an RNN on both sides)."""
    kind = text.get("rnn") if text.get("decoder", "rnn") == "rnn" else "transformer"
    return f"tenc-{kind}" if text.get("encoder", "rnn") == "transformer" else kind


def text_model(text: dict) -> str:
    """E.g. "lstm 1x256, embed 256, embedding dropout 0.25", or for a Transformer decoder "transformer
    decoder 3x256, 8 heads, ff 1024, sinusoidal positions, z as memory; lstm encoder 1x256, embed 256,
    embedding dropout 0.2"."""
    rnn = f"{text.get('rnn')} {text.get('num_layers')}x{text.get('hidden_dim')}"
    tail = f"embed {text.get('embed_dim')}, embedding dropout {text.get('embedding_dropout')}"
    if text.get("decoder", "rnn") == "rnn" and text.get("encoder", "rnn") == "rnn":
        return f"{rnn}, {tail}"
    blocks = (f"{text.get('transformer_layers')}x{text.get('hidden_dim')}, {text.get('transformer_heads')} heads, "
              f"ff {text.get('transformer_ff')}, {text.get('positions')} positions")
    decoder = (f"transformer decoder {blocks}, z as {text.get('z_injection')}" if text.get("decoder") == "transformer"
               else f"{rnn} decoder")
    encoder = "transformer encoder" if text.get("encoder") == "transformer" else f"{rnn} encoder"
    return f"{decoder}; {encoder}, {tail}"
