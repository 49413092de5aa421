"""Configuration of the sentence VAE (Bowman et al. 2016), shared by both backends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

RNN_KINDS = ("lstm", "gru")
DECODER_KINDS = ("rnn", "transformer")
ENCODER_KINDS = ("rnn", "transformer")  # the Transformer encoder: bidirectional blocks, mean-pooled
Z_INJECTIONS = ("memory", "embedding", "both")  # how z enters a Transformer decoder
POSITION_KINDS = ("sinusoidal", "learned")
LEARNED_POSITIONS = 512  # rows of the learned position table: the longest decoder input (<bos> + words)
# The sentence VAE's top-level modules by side, for the training modes that update or re-initialise
# one side only (aggressive inference, a pretrained encoder with a fresh decoder). The word embedding
# is shared by both sides (and tied to the output layer): it counts as the decoder's, so an
# encoder-only update leaves every parameter the decoder uses untouched.
ENCODER_MODULES = ("encoder_rnn", "encoder_transformer", "to_mean", "to_logvar", "posterior")
DECODER_MODULES = ("embedding", "latent_to_hidden", "decoder_rnn", "output", "output_projection", "output_bias",
                   "decoder_transformer", "latent_to_memory", "latent_to_embedding")
# Re-initialised after pretraining: the decoder without the shared embedding (the encoder reads it).
DECODER_REINIT_MODULES = DECODER_MODULES[1:]


def module_side(name: str) -> str:
    """"encoder" or "decoder" for a canonical parameter name (its first component)."""
    top = name.split(".")[0]
    if top in ENCODER_MODULES:
        return "encoder"
    if top in DECODER_MODULES:
        return "decoder"
    raise KeyError(f"{name!r} is neither an encoder nor a decoder parameter")


@dataclass(frozen=True)
class TextModelConfig:
    """Sizes and switches of ``SentenceVAE`` (``jaxvae/text_model.py``, ``torchvae/text_model.py``).

    Architecture: one token embedding shared by encoder and decoder (as in Bowman et al. and the
    common public PyTorch implementation: the encoder and decoder see the same word space, and it
    halves the embedding parameters); an RNN encoder whose final hidden states (every layer, both
    directions, in torch's ``h_n`` order; for an LSTM the ``h`` part only) are concatenated and
    mapped by two linears to the posterior mean and log-variance; a unidirectional RNN decoder
    whose initial state (``h`` and, for an LSTM, ``c`` of every layer) is a linear map of z
    (``decoder_init_tanh`` adds a tanh), optionally with z concatenated to every decoder input
    (``z_every_step``); a projection to the vocabulary, by default tied to the word embedding
    (``tie_embeddings``: logits = P(h) @ E^T + b, P the linear ``output_projection`` when hidden and
    embedding sizes differ and the identity when they are equal, ``output_bias`` zero-initialised,
    the embedding initialised uniform in +-1/sqrt(embed_dim)).

    ``decoder`` "transformer" replaces the RNN decoder by causal self-attention blocks that read z as
    ``z_injection`` says (``torchvae/transformer.py``); ``encoder`` "transformer" replaces the RNN encoder by
    bidirectional blocks of the same sizes (``transformer_*``, ``positions``) over w1..wn <eos>, without
    dropout (as the RNN encoder), whose final-LayerNorm outputs are averaged over the sentence.

    How each default was chosen, with the measurements:
    ``docs/2026-11-26-ptb-defaults-history.md``. A config.json saved before ``output_dropout`` or
    ``tie_embeddings`` existed loads with neither (0, untied), as those runs trained.
    """

    vocab_size: int | None  # None until the corpus is read (vaecore.task.text_task.TextTask fills it in)
    embed_dim: int = 256
    hidden_dim: int = 256
    latent_dim: int = 32
    rnn: str = "lstm"
    num_layers: int = 1
    bidirectional: bool = False
    embedding_dropout: float = 0.25
    word_dropout: float = 0.0
    output_dropout: float = 0.25
    z_every_step: bool = False
    decoder_init_tanh: bool = False
    tie_embeddings: bool = True
    delta_rate: float = 0.0
    bn_gamma: float = 0.0
    use_latent: bool = True
    decoder: str = "rnn"
    encoder: str = "rnn"
    z_injection: str = "memory"
    transformer_layers: int = 3
    transformer_heads: int = 8
    transformer_ff: int = 1024
    positions: str = "sinusoidal"
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0

    def built(self) -> TextModelConfig:
        """This config, for building a model: its vocabulary size must be known."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not known until the corpus is read (vaecore.task.text_task.TextTask sets it)")
        return self

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden_dim", "latent_dim", "num_layers", "transformer_layers",
                     "transformer_heads", "transformer_ff"):
            value = getattr(self, name)
            if name == "vocab_size" and value is None:  # not known until the corpus is read
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.vocab_size is not None and self.vocab_size < 5:
            raise ValueError(f"vocab_size must be >= 5 (4 special tokens and a word), got {self.vocab_size}")
        if not self.use_latent and (self.delta_rate > 0 or self.bn_gamma > 0):
            raise ValueError("the language-model baseline (use_latent false) has no posterior: delta_rate and "
                             "bn_gamma must be 0")
        if self.rnn not in RNN_KINDS:
            raise ValueError(f"rnn must be one of {list(RNN_KINDS)}, got {self.rnn!r}")
        for name, allowed in (("decoder", DECODER_KINDS), ("encoder", ENCODER_KINDS), ("z_injection", Z_INJECTIONS), ("positions", POSITION_KINDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.transformer and self.hidden_dim % self.transformer_heads:
            raise ValueError(f"--hidden-dim {self.hidden_dim} does not split into --transformer-heads "
                             f"{self.transformer_heads} equal heads; choose a divisor of it")
        for name in ("embedding_dropout", "word_dropout", "output_dropout", "attention_dropout", "residual_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        for name in ("delta_rate", "bn_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < float("inf"):
                raise ValueError(f"{name} must be a number >= 0 (0: off), got {value!r}")
        if self.delta_rate > 0:
            from vaecore.posterior import delta_logvar_bounds

            delta_logvar_bounds(self.delta_rate)  # raises ValueError for a rate too large to commit to
        for name in ("bidirectional", "z_every_step", "decoder_init_tanh", "tie_embeddings", "use_latent"):
            if type(getattr(self, name)) is not bool:  # 1 and 0 are not accepted as switches
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def transformer(self) -> bool:
        """Whether the decoder or the encoder is a Transformer (``transformer_*`` and ``positions`` apply)."""
        return "transformer" in (self.decoder, self.encoder)

    @property
    def encoder_features(self) -> int:
        """Width of what the posterior heads read: the concatenated final RNN states (layers x directions
        x hidden), or the Transformer encoder's mean over the sentence (hidden)."""
        if self.encoder == "transformer":
            return self.hidden_dim
        return self.num_layers * self.num_directions * self.hidden_dim

    @property
    def head_dim(self) -> int:
        """The Transformer decoder's width per attention head."""
        return self.hidden_dim // self.transformer_heads

    @property
    def z_memory(self) -> bool:
        """Whether a Transformer decoder reads z as a memory (``z_injection`` memory or both)."""
        return self.z_injection in ("memory", "both")

    @property
    def z_embedding(self) -> bool:
        """Whether a Transformer decoder adds a map of z to its input embeddings (embedding or both)."""
        return self.z_injection in ("embedding", "both")

    def dropout_sites(self, steps: int) -> tuple[tuple[float, tuple[int, ...]], ...]:
        """Every dropout of the decoder in a teacher-forced pass over ``steps`` positions, in the order
        the model applies them: (rate, the mask's shape after the batch axis). The torch engine draws
        one mask per site for the global batch (``torchvae/text_train.py``)."""
        if self.decoder == "rnn":
            return ((self.embedding_dropout, (steps, self.embed_dim)), (self.output_dropout, (steps, self.hidden_dim)))
        d, residual = self.hidden_dim, (self.residual_dropout, (steps, self.hidden_dim))
        block = ((self.attention_dropout, (self.transformer_heads, steps, steps)), residual,
                 *((residual,) if self.z_memory else ()), (self.residual_dropout, (steps, self.transformer_ff)),
                 residual)
        return ((self.embedding_dropout, (steps, d)), *block * self.transformer_layers, (self.output_dropout, (steps, d)))

    @property
    def decoder_state_size(self) -> int:
        """Width of ``latent_to_hidden``'s output: (h [, c]) x layers x hidden."""
        return (2 if self.rnn == "lstm" else 1) * self.num_layers * self.hidden_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextModelConfig:
        """Build from a dict (e.g. a run's config.json); unknown keys are an error, naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TextModelConfig fields {unknown}; allowed: {sorted(known)}")
        return cls(**d)
