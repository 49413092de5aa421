"""``Explorer``: the computations behind the explorer's JSON API, on a ``twinvae.Model`` and its test
set. Each public method takes a request's JSON object (a dict) and returns the answer's; bad input
raises ``BadRequest``. The test set is encoded once, at start: its posterior means give the map, the
per-dimension KL, the active units and the nearest neighbours of any code. Nothing is written."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from twinvae.explore import fields
from twinvae.explore.fields import BadRequest
from twinvae.explore.sides import SIDES, TestSet
from vaecore.task import tasks
from vaecore.task.decoding import interpolation_path

ACTIVE_THRESHOLD = 0.01  # Burda et al.: a unit is active when Cov_x(E[z_d | x]) exceeds it
ENCODE_BATCH = 500
MAP_DECIMALS = 4


def kl_per_dim(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(q(z_d|x) || N(0, 1)) per example and dimension: mean, logvar [N, D] -> [N, D] nats."""
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    return 0.5 * (mean * mean + np.exp(logvar) - logvar - 1.0)


def slerp_path(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` points from a to b whose directions follow the great circle at even angles and whose
    norms go linearly from |a| to |b| (spherical interpolation, White 2016: the points stay where the
    prior's mass is, where the line's middle shrinks towards 0): [steps, D]. Collinear ends: the line."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return interpolation_path(a, b, steps)
    cos = float(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return interpolation_path(a, b, steps)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    directions = (np.sin((1.0 - t) * omega) * (a / na) + np.sin(t * omega) * (b / nb)) / np.sin(omega)
    return ((1.0 - t) * na + t * nb) * directions


class Explorer:
    """The model, its test set (encoded once) and the API's operations. Model calls are serialised:
    the frameworks' CPU kernels already use every core, and a handle is not meant for threads."""

    def __init__(self, model, *, folder: Path, data: str | None = None, limit: int | None = None):
        self.model, self.side = model, SIDES[tasks.task(model.task).family](model)
        self.lock = threading.Lock()
        started = time.perf_counter()
        self.test: TestSet = self.side.load_test_set(folder, data, limit)
        self.means, self.logvars = self._encode_test_set()
        self.map_seconds = time.perf_counter() - started
        self.center = self.means.mean(axis=0)
        self.kl = kl_per_dim(self.means, self.logvars).mean(axis=0)
        self.activity = self.means.astype(np.float64).var(axis=0)
        self._pca = self._pca_basis()
        self._map_cache: dict[tuple, dict] = {}

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def _encode_test_set(self) -> tuple[np.ndarray, np.ndarray]:
        examples = self.test.examples
        if self.side.kind == "sentences":  # similar lengths in one batch: little padding
            order = np.argsort([len(s.split()) for s in examples], kind="stable")
            mean, logvar = self.model.encode([examples[i] for i in order], batch_size=ENCODE_BATCH)
            back = np.empty_like(order)
            back[order] = np.arange(len(order))
            return mean[back], logvar[back]
        return self.model.encode(examples, batch_size=ENCODE_BATCH)

    def _pca_basis(self) -> np.ndarray:
        """The two leading principal axes of the test set's means, [2, D] (one axis and zero when D = 1)."""
        centered = self.means.astype(np.float64) - self.center
        _, s, vt = np.linalg.svd(centered, full_matrices=False)
        axes = np.zeros((2, self.latent_dim))
        axes[:min(2, len(vt))] = vt[:2]
        self._explained = (s[:2] ** 2 / max(float(np.sum(s ** 2)), 1e-12)).tolist()
        return axes

    def warm(self) -> None:
        """One call of each kind, so that the first user request pays no compilation (JAX)."""
        with self.lock:
            self.side.warm(self.latent_dim)

    # ------------------------------------------------------------------------------ inputs
    def _index(self, value, name: str) -> int:
        n = len(self.test)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
            raise BadRequest(f"'{name}' must be a test index from 0 to {n - 1}; got {value!r:.40}")
        return value

    def _posterior(self, value, name: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """The posterior (mean [D], logvar [D]) of a test index or a typed sentence, and what was read."""
        if isinstance(value, int) and not isinstance(value, bool):
            i = self._index(value, name)
            return self.means[i], self.logvars[i], self.side.example(self.test, i)
        sentence = self.side.read_sentence(value, name)
        words, cut = self.side.read_words(sentence)
        with self.lock:
            mean, logvar = self.model.encode([sentence])
        return mean[0], logvar[0], {"sentence": sentence, "read": words, "truncated": cut}

    def _decode(self, z: np.ndarray, options: dict) -> dict:
        if len(z) > self.side.max_outputs:
            raise BadRequest(f"the request asks for {len(z)} decodings; at most {self.side.max_outputs}")
        with self.lock:
            return self.side.present(self.side.decode(np.asarray(z, np.float32), options))

    # ------------------------------------------------------------------------------ the API
    def info(self) -> dict:
        m = self.model
        return {"task": m.task, "outputs": self.side.kind, "backend": m.backend, "trained_in": m.config.backend,
                "latent_dim": self.latent_dim, "step": m.step, "test_examples": len(self.test),
                "test_source": self.test.source, "labels": self.test.labels is not None,
                "kl_per_dim": self.kl.tolist(), "kl_total": float(self.kl.sum()),
                "activity": self.activity.tolist(), "active_threshold": ACTIVE_THRESHOLD,
                "active_units": int(np.sum(self.activity > ACTIVE_THRESHOLD)),
                "map_seconds": round(self.map_seconds, 3), "max_outputs": self.side.max_outputs,
                "limits": {"max_steps": fields.MAX_STEPS, "max_codes": fields.MAX_CODES,
                           "max_sentence_chars": fields.MAX_SENTENCE_CHARS,
                           "max_sentence_words": fields.MAX_SENTENCE_WORDS, "max_body_bytes": fields.MAX_BODY_BYTES,
                           "max_nearest": fields.MAX_NEAREST, "max_span": fields.MAX_SPAN}}

    def map(self, query: dict) -> dict:
        """The test set's means in two dimensions: {"x", "y", "labels", "origin", "axes"}; the point
        (x, y) of the map is the code origin + x * axes[0] + y * axes[1]. ``dims`` "i,j": those two
        dimensions (the others at the test set's mean); none: the two leading principal axes."""
        key = query.get("dims") or "pca"
        if key not in self._map_cache:
            self._map_cache[key] = self._map(key)
        return self._map_cache[key]

    def _map(self, key: str) -> dict:
        if key == "pca":
            origin, axes, method = self.center, self._pca, "pca"
        else:
            try:
                chosen = [int(d) for d in key.split(",")]
            except ValueError:
                raise BadRequest(f"'dims' must be two dimensions as 'i,j' (integers); got {key!r:.40}") from None
            chosen = fields.dims({"dims": chosen}, "dims", self.latent_dim, count=2)
            axes = np.eye(self.latent_dim)[chosen]
            origin, method = self.center.copy(), "dims"
            origin[chosen] = 0.0
        xy = (self.means.astype(np.float64) - origin) @ axes.T
        labels = None if self.test.labels is None else self.test.labels.tolist()
        if len(self._map_cache) > 64:  # one entry per pair of dimensions asked for: keep it bounded
            self._map_cache.clear()
        return {"method": method, "x": np.round(xy[:, 0], MAP_DECIMALS).tolist(),
                "y": np.round(xy[:, 1], MAP_DECIMALS).tolist(), "labels": labels,
                "origin": origin.tolist(), "axes": axes.tolist(),
                "explained": self._explained if method == "pca" else None}

    def example(self, body: dict) -> dict:
        return self.side.example(self.test, self._index(body.get("index"), "index"))

    def encode(self, body: dict) -> dict:
        """The posterior of ``input`` (a test index, or a sentence for text): mean, logvar, the KL per
        dimension, and the reconstruction (the mean decoded with ``method`` for text)."""
        if "input" not in body:
            raise BadRequest("'input' is required: a test index" + (" or a sentence" if self.side.kind == "sentences"
                                                                      else ""))
        options = self.side.decode_options(body)
        mean, logvar, read = self._posterior(body["input"], "input")
        kl = kl_per_dim(mean, logvar)
        return {"input": read, "mean": mean.tolist(), "logvar": logvar.tolist(), "kl_per_dim": kl.tolist(),
                "kl": float(kl.sum()), "reconstruction": self._decode(mean[None], options)}

    def decode(self, body: dict) -> dict:
        z = np.asarray(fields.codes(body, "z", self.latent_dim), np.float64)
        return self._decode(z, self.side.decode_options(body))

    def interpolate(self, body: dict) -> dict:
        steps = fields.integer(body, "steps", 8, 2, fields.MAX_STEPS)
        mode = fields.choice(body, "mode", "linear", ("linear", "spherical"))
        options = self.side.decode_options(body)
        for name in ("a", "b"):
            if name not in body:
                raise BadRequest(f"'{name}' is required: a test index"
                                 + (" or a sentence" if self.side.kind == "sentences" else ""))
        a, _, read_a = self._posterior(body["a"], "a")
        b, _, read_b = self._posterior(body["b"], "b")
        path = (slerp_path if mode == "spherical" else interpolation_path)(a.astype(np.float64), b.astype(np.float64),
                                                                           steps)
        return {"a": read_a, "b": read_b, "mode": mode, "z": path.tolist(), **self._decode(path, options)}

    def traverse(self, body: dict) -> dict:
        """A grid: one row per dimension in ``dims``, ``steps`` values from -span to +span each, the other
        dimensions at ``base`` (a test index's mean; none: the prior mean, 0)."""
        chosen = fields.dims(body, "dims", self.latent_dim)
        steps = fields.integer(body, "steps", 9, 2, fields.MAX_STEPS)
        span = fields.number(body, "span", 3.0, 0.0, fields.MAX_SPAN, open_low=True)
        options = self.side.decode_options(body)
        base = np.zeros(self.latent_dim)
        if body.get("base") is not None:
            base = self.means[self._index(body["base"], "base")].astype(np.float64)
        values = np.linspace(-span, span, steps)
        grid = np.repeat(base[None], len(chosen) * steps, axis=0)
        for row, d in enumerate(chosen):
            grid[row * steps:(row + 1) * steps, d] = values
        return {"dims": chosen, "values": values.tolist(), "rows": len(chosen), "cols": steps,
                **self._decode(grid, options)}

    def sample(self, body: dict) -> dict:
        n = fields.integer(body, "n", 16 if self.side.kind == "images" else 5, 1, self.side.max_outputs)
        temperature = fields.number(body, "temperature", 1.0, 0.0, fields.MAX_TEMPERATURE, open_low=True)
        seed = fields.integer(body, "seed", 0, 0, fields.MAX_SEED)
        options = self.side.decode_options(body, "sample")
        with self.lock:
            decoded = self.side.sample(n, temperature, seed, options)
        return {"n": n, "temperature": temperature, "seed": seed, **self.side.present(decoded)}

    def nearest(self, body: dict) -> dict:
        """The ``k`` test examples whose posterior means are closest (Euclidean) to ``z`` or to the mean
        of ``input`` (a test index or a sentence)."""
        k = fields.integer(body, "k", 5, 1, fields.MAX_NEAREST)
        if "z" in body:
            z = np.asarray(fields.codes({"z": body["z"]}, "z", self.latent_dim)[0], np.float64)
        elif "input" in body:
            z = self._posterior(body["input"], "input")[0].astype(np.float64)
        else:
            raise BadRequest("'z' (a latent code) or 'input' (a test index or a sentence) is required")
        d2 = np.sum((self.means.astype(np.float64) - z) ** 2, axis=1)
        k = min(k, len(d2))
        top = np.argpartition(d2, k - 1)[:k]
        top = top[np.argsort(d2[top], kind="stable")]
        return {"indices": top.tolist(), "distances": np.sqrt(d2[top]).tolist(),
                "examples": self.side.describe(self.test, top)}
