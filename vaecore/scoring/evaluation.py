"""Evaluation as the papers do it, the framework-neutral half (numpy only).

The metrics (Burda et al. 2015; He et al. 2019):

- ``nll``: -log p(x) by importance sampling with K samples of q(z|x),
  log p(x) ~= logmeanexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)], a stochastic lower bound on
  log p(x) that tightens as K grows (so ``nll`` is an upper bound on the true NLL, on average);
- ``recon``: -log p(x|z) averaged over the same K samples; ``kl``: the analytic KL(q(z|x) || N(0, I));
  ``neg_elbo`` = recon + kl (a K-sample estimate of the negative ELBO);
- ``mi``: I(x; z) under q with the estimator of Hoffman & Johnson as coded by He et al. 2019,
  E_x[-H(q(z|x))] - E[log q(z)], where q(z) is the aggregate posterior of an evaluation batch of
  ``mi_batch_size`` examples (log-mean-exp over their posteriors), so the estimate depends on that
  batch size and is at most log(mi_batch_size) plus sampling noise (the entropy term is analytic,
  the log q(z) term a one-sample average);
- ``mi_split``: the same estimator with the aggregate posterior of the whole split (Li et al. 2019),
  computed in chunks; at most log(N);
- ``token_acc`` (text, ``evaluate.py``): reconstruction token accuracy, the greedy decoding of each
  sentence's posterior mean against the sentence, position by position (``token_accuracy``);
- ``au``: active units, latent dimensions whose posterior mean varies over the split:
  Var_x(E_q[z|x]) > ``au_threshold`` (0.01), the variance with ddof=1 as in He et al.'s code;
- text: perplexities exp(sum NLL / tokens) from the IW NLL (``ppl``) and from the ELBO (``ppl_elbo``,
  a bound), tokens counting every target including <eos>.

The numeric kernels live in each backend (``jaxvae/evaluation.py``, ``torchvae/evaluation.py``, the
same names); this module holds the driver that runs them over a split (``evaluate_split``), the
importance noise (numpy, derived from a seed, so both backends can be fed the same samples), active
units, perplexity, the result table and the atomic JSON merge.

A *model adapter* is anything with
``latent_dim: int``, ``prepare(batch) -> x`` (numpy batch -> backend input),
``encode(x) -> (mean, logvar)`` ([B, D] each) and ``log_likelihood(x, z) -> [k, B]`` for
``z: [k, B, D]`` (log p(x|z) of every sample), so the metrics work for any latent-variable model with
a diagonal Gaussian posterior and a standard-normal prior, not only the project's VAEs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vaecore.files import atomic_write_json
from vaecore.runs.rundir import read_json

AU_THRESHOLD = 0.01
MI_BATCH_SIZE = 500
# Decoder rows (samples x examples) per backend call, which bounds memory: an MNIST row is 784
# logits, a sentence row T x vocab (about 40 x 10,000 on PTB).
CHUNK_ROWS = 20_000  # decoder rows per call unless the caller says (a task's: vaecore.task.tasks)
IW_STREAM, MI_STREAM = 0, 1


class ModelAdapter(Protocol):
    latent_dim: int

    def prepare(self, batch: Any) -> Any: ...
    def encode(self, x: Any) -> tuple[Any, Any]: ...
    def log_likelihood(self, x: Any, z: Any) -> Any: ...


class EvalBackend(Protocol):
    """The kernels each backend's ``evaluation`` module provides (same names in both)."""

    def importance_terms(self, model: ModelAdapter, x: Any,
                         eps_chunks: Iterable[np.ndarray]) -> dict[str, np.ndarray]: ...
    def mutual_information(self, mean: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> float: ...


# ------------------------------------------------------------------------------------ numerics


def log_mean_exp(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """log(mean(exp(a))) along ``axis``, stable for any magnitude: the max is taken out first.

    All -inf along the axis gives -inf; any +inf gives +inf; NaN propagates."""
    a = np.asarray(a, dtype=np.float64)
    n = a.size if axis is None else a.shape[axis]
    m = np.max(a, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(np.sum(np.exp(a - m_safe), axis=axis, keepdims=True)) + m_safe - math.log(n)
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def active_units(means: np.ndarray, threshold: float = AU_THRESHOLD) -> tuple[int, np.ndarray]:
    """Active units from posterior means ``means`` [N, D] over a split: (count, variances [D]).

    A dimension is active when Var_x(E_q[z|x]) > ``threshold`` (variance with ddof=1, He et al.)."""
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2 or len(means) < 2:
        raise ValueError(f"active_units needs posterior means [N >= 2, D]; got shape {means.shape}")
    variances = means.var(axis=0, ddof=1)
    return int(np.sum(variances > threshold)), variances


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(total_nll / tokens): ``total_nll`` in nats summed over a split of ``tokens`` target tokens."""
    if tokens <= 0:
        raise ValueError(f"perplexity needs a positive token count; got {tokens}")
    return float(math.exp(total_nll / tokens))


def mutual_information_split(mean: np.ndarray, logvar: np.ndarray, *, seed: int = 0, chunk: int = 256) -> float:
    """I(x; z) with the aggregate posterior of the whole split (Li et al. 2019's ``calc_mi``):
    E_x[-H(q(z|x))] - E_{x, z~q(z|x)}[log q(z)], q(z) = (1/N) sum_j q(z|x_j) over all N examples,
    one z per example (the same ``posterior_noise`` as ``latent_usage``); at most log(N) plus
    sampling noise. numpy, float64, in chunks of ``chunk`` samples against all N posteriors."""
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    n, d = mean.shape
    if n < 2:
        raise ValueError(f"the split must hold at least 2 examples; got {n}")
    z = mean + np.exp(0.5 * logvar) * posterior_noise(seed, n, d)
    neg_entropy = float(np.mean(-0.5 * d * math.log(2 * math.pi) - 0.5 * np.sum(1.0 + logvar, axis=1)))
    inv_var = np.exp(-logvar)  # [N, D]
    norm = -0.5 * d * math.log(2 * math.pi) - 0.5 * logvar.sum(1)  # [N]
    log_qz = np.empty(n)
    for start in range(0, n, chunk):
        zc = z[start:start + chunk, None, :]  # [c, 1, D] against every posterior [1, N, D]
        log_density = norm[None, :] - 0.5 * np.sum((zc - mean[None]) ** 2 * inv_var[None], axis=2)
        log_qz[start:start + chunk] = log_mean_exp(log_density, axis=1)
    return neg_entropy - float(np.mean(log_qz))


def token_accuracy(decoded: list[list[int]], tokens: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
    """Reconstruction token accuracy of greedy decodings of the posterior means: (correct, total)
    over the target tokens (words and <eos>) of a ``TextBatch``. Position t of a decoding (its words,
    then <eos> if it ended) is compared with position t of the sentence; positions a decoding does
    not reach count as wrong, positions past the sentence's end are not counted."""
    from vaecore.data.text_data import EOS_ID

    correct = total = 0
    for ids, row, length in zip(decoded, np.asarray(tokens), np.asarray(lengths)):
        target = row[1:int(length)]  # w1..wn <eos>
        pred = np.asarray(list(ids) + [EOS_ID], np.int64)[:len(target)]
        correct += int(np.sum(pred == target[:len(pred)]))
        total += len(target)
    return correct, total


# --------------------------------------------------------------------------------------- noise


def importance_noise(seed: int, first_index: int, batch: int, latent_dim: int, k: int,
                     k_chunk: int) -> Iterator[np.ndarray]:
    """Standard-normal eps for the K importance samples of examples ``first_index ..
    first_index + batch - 1``, in chunks ``[k_chunk, batch, latent_dim]`` (float64; the last chunk
    may be shorter).

    Example i always gets the same K draws (its own generator, keyed by (seed, i)), whatever the
    batch size and chunking, so a result does not depend on how the split was cut."""
    gens = [np.random.default_rng([seed, IW_STREAM, first_index + i]) for i in range(batch)]
    for start in range(0, k, k_chunk):
        size = min(k_chunk, k - start)
        yield np.stack([g.standard_normal((size, latent_dim)) for g in gens], axis=1)


def posterior_noise(seed: int, n: int, latent_dim: int) -> np.ndarray:
    """One standard-normal eps per example [n, latent_dim] (float64), for the MI estimate."""
    return np.random.default_rng([seed, MI_STREAM]).standard_normal((n, latent_dim))


def batch_length(batch: Any) -> int:
    """Examples in a batch: ``len(batch.lengths)`` for a ``TextBatch``, else ``len(batch)``."""
    lengths = getattr(batch, "lengths", None)
    return len(lengths) if lengths is not None else len(batch)


# -------------------------------------------------------------------------------------- driver


def evaluate_split(backend: EvalBackend, model: ModelAdapter, batches: Iterable[Any], *, k: int, seed: int = 0,
                   chunk_rows: int = CHUNK_ROWS, mi_batch_size: int = MI_BATCH_SIZE,
                   au_threshold: float = AU_THRESHOLD, count_tokens: Callable[[Any], int] | None = None,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Every metric over a split given as ``batches`` (numpy batches ``model.prepare`` accepts).

    Memory stays bounded: at most ``chunk_rows`` decoder rows (importance samples x examples) at a
    time; only the posterior means and log-variances ([N, D]) are kept for MI and AU.
    ``count_tokens(batch)`` (text) adds ``tokens``, ``ppl`` and ``ppl_elbo``. ``progress(n)`` is
    called with the number of examples done after each batch. Returns per-example means (nats)."""
    if k < 1:
        raise ValueError(f"k (importance samples) must be >= 1; got {k}")
    if mi_batch_size < 2:
        raise ValueError(f"mi_batch_size must be >= 2; got {mi_batch_size}")
    t0 = time.perf_counter()
    sums = {"nll": 0.0, "recon": 0.0, "kl": 0.0}
    means, logvars = [], []
    n = tokens = 0
    for batch in batches:
        size = batch_length(batch)
        k_chunk = max(1, min(k, chunk_rows // max(size, 1)))
        noise = importance_noise(seed, n, size, model.latent_dim, k, k_chunk)
        terms = backend.importance_terms(model, model.prepare(batch), noise)
        sums["nll"] -= float(np.sum(terms["log_px"]))
        sums["recon"] += float(np.sum(terms["recon"]))
        sums["kl"] += float(np.sum(terms["kl"]))
        means.append(terms["mean"])
        logvars.append(terms["logvar"])
        n += size
        if count_tokens is not None:
            tokens += count_tokens(batch)
        if progress is not None:
            progress(n)
    if n < 2:
        raise ValueError(f"the split must hold at least 2 examples; got {n}")
    out: dict[str, Any] = {
        "examples": n, "k": k, "seed": seed,
        "nll": sums["nll"] / n, "neg_elbo": (sums["recon"] + sums["kl"]) / n,
        "recon": sums["recon"] / n, "kl": sums["kl"] / n,
        **latent_usage(backend, np.concatenate(means), np.concatenate(logvars), seed=seed,
                       mi_batch_size=mi_batch_size, au_threshold=au_threshold),
        "mi_split": mutual_information_split(np.concatenate(means), np.concatenate(logvars), seed=seed),
    }
    if count_tokens is not None:
        out.update(tokens=tokens, ppl=perplexity(sums["nll"], tokens),
                   ppl_elbo=perplexity(sums["recon"] + sums["kl"], tokens))
    out["seconds"] = time.perf_counter() - t0
    return out


def latent_usage(backend: EvalBackend, mean: np.ndarray, logvar: np.ndarray, *, seed: int = 0,
                 mi_batch_size: int = MI_BATCH_SIZE, au_threshold: float = AU_THRESHOLD) -> dict[str, Any]:
    """Mutual information and active units from the posteriors ``mean``, ``logvar`` [N, D] of a
    split: ``mi`` averaged over consecutive batches of ``mi_batch_size`` examples (a trailing single
    example is left out: it has no aggregate posterior), ``au`` and the per-dimension variances."""
    n = len(mean)
    if n < 2:
        raise ValueError(f"the split must hold at least 2 examples; got {n}")
    if mi_batch_size < 2:
        raise ValueError(f"mi_batch_size must be >= 2; got {mi_batch_size}")
    eps = posterior_noise(seed, n, mean.shape[1])
    mi_sum = 0.0
    for start in range(0, n, mi_batch_size):
        part = slice(start, min(start + mi_batch_size, n))
        size = part.stop - part.start
        if size >= 2:
            mi_sum += backend.mutual_information(mean[part], logvar[part], eps[part]) * size
    mi_n = n if n % mi_batch_size != 1 else n - 1
    au, variances = active_units(mean, au_threshold)
    return {"mi": mi_sum / mi_n, "mi_batch_size": min(mi_batch_size, n), "au": au, "au_threshold": au_threshold,
            "latent_dim": int(mean.shape[1]), "au_variances": [float(v) for v in variances]}


# -------------------------------------------------------------------------------- result files

TABLE_ROWS = (
    ("nll", "NLL (importance sampled, K={k})"),
    ("neg_elbo", "negative ELBO"),
    ("recon", "reconstruction -log p(x|z)"),
    ("kl", "KL(q(z|x) || p(z))"),
    ("mi", "mutual information I(x; z) (batch {mi_batch_size})"),
    ("mi_split", "mutual information I(x; z) (whole split)"),
    ("token_acc", "reconstruction token accuracy (greedy, posterior mean)"),
    ("au", "active units (Var > {au_threshold}) of {latent_dim}"),
    ("ppl", "perplexity from the NLL"),
    ("ppl_elbo", "perplexity bound from the ELBO"),
)


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) for each metric present in ``metrics``."""
    rows = []
    for key, label in TABLE_ROWS:
        if key in metrics:
            value = metrics[key]
            rows.append((label.format(**metrics), str(value) if isinstance(value, int) else f"{value:.3f}"))
    return rows


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of the metrics, with the split, size and units in the header."""
    rows = metric_rows(metrics)
    width = max(len(label) for label, _ in rows)
    head = (f"{metrics.get('split', '?')} split, {metrics['examples']} examples, {metrics.get('units', 'nats')}, "
            f"{metrics['seconds']:.1f} s")
    return "\n".join([head, *(f"  {label:<{width}}  {value:>10}" for label, value in rows)])


def merge_json(path: Path, updates: dict) -> dict:
    """Merge ``updates`` into the JSON object at ``path`` (created if absent), keeping every other
    key; written atomically. Returns the merged object. A damaged file is a ``RunFileError`` (left
    as it is)."""
    path = Path(path)
    current = read_json(path) if path.exists() else {}
    current.update(updates)
    atomic_write_json(path, current)
    return current
