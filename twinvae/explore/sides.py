"""What differs between the explorer of an image VAE and that of a sentence VAE: the test set it maps,
how a request names an input (a test index; for text also a typed sentence), how decodings are
decoded and shown in JSON (images as base64 bytes, sentences as strings). ``SIDES`` finds a model family's (``vaecore.task.tasks``)."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinvae.explore import fields
from twinvae.explore.fields import BadRequest

IMAGE_SIDE = 28


@dataclass
class TestSet:
    """The examples the map shows: images [N, 784] in [0, 1] or N sentences (as the model reads them:
    unknown words are <unk>), their labels (None for text) and where they came from."""

    examples: Any
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.examples)


def image_bytes(images: np.ndarray) -> list[str]:
    """Images [N, 784] in [0, 1] -> N base64 strings of 784 row-major bytes (0 black .. 255 white)."""
    pixels = np.clip(np.rint(np.asarray(images, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in pixels]


def _bucket(n: int) -> int:
    """The next power of two: JAX compiles once per batch shape, so decodes share a few shapes."""
    return 1 << max(n - 1, 0).bit_length()


class ImageSide:
    """An MNIST VAE: inputs are test indices, outputs are images."""

    kind = "images"
    max_outputs = 128

    def __init__(self, model):
        self.model = model

    def load_test_set(self, folder: Path, data: str | None, limit: int | None) -> TestSet:
        from vaecore.task import tasks

        cfg = self.model.config
        split = tasks.task(cfg.task).eval_data(cfg, folder, split="test", data=data, limit=limit, batch_size=1000)
        return TestSet(np.asarray(split.images, np.float32), np.asarray(split.labels, np.int64), split.source)

    def example(self, test: TestSet, i: int) -> dict:
        return {"index": i, "image": image_bytes(test.examples[i:i + 1])[0], "label": int(test.labels[i])}

    def read_sentence(self, value: Any, name: str) -> str:
        raise BadRequest(f"'{name}' must be a test index (an integer): an image VAE takes no sentences")

    def decode_options(self, body: dict, default: str = "greedy") -> dict:
        return {}

    def decode(self, z: np.ndarray, options: dict) -> np.ndarray:
        rows = _bucket(len(z))
        padded = np.zeros((rows, z.shape[1]), np.float32)
        padded[:len(z)] = z
        return self.model.decode(padded)[:len(z)]

    def sample(self, n: int, temperature: float, seed: int, options: dict) -> np.ndarray:
        # numpy draws z row after row: the first n of a padded draw are the n of an exact one
        return self.model.sample(_bucket(n), temperature=temperature, seed=seed)[:n]

    def present(self, decoded) -> dict:
        return {"images": image_bytes(decoded), "height": IMAGE_SIDE, "width": IMAGE_SIDE}

    def describe(self, test: TestSet, indices: np.ndarray) -> list:
        return [int(test.labels[i]) for i in indices]

    def warm(self, latent_dim: int) -> None:
        for n in (1, 2, 4, 8, 16, 32, 64, 128):
            self.decode(np.zeros((n, latent_dim), np.float32), {})


class TextSide:
    """A sentence VAE: inputs are test indices or typed sentences, outputs are sentences."""

    kind = "sentences"
    max_outputs = 32
    methods = ("greedy", "beam", "sample")

    def __init__(self, model):
        self.model = model

    def load_test_set(self, folder: Path, data: str | None, limit: int | None) -> TestSet:
        from vaecore.data.text_data import load_run_data, run_data_source

        cfg = self.model.config if data is None else dataclasses.replace(self.model.config, data=data)
        test = load_run_data(cfg, self.model.vocab).splits["test"]
        n = len(test) if limit is None else min(limit, len(test))
        return TestSet([self.model.vocab.to_text(ids) or "<eos>" for ids in test.ids[:n]], None,
                       run_data_source(cfg))

    def example(self, test: TestSet, i: int) -> dict:
        return {"index": i, "sentence": test.examples[i]}

    def read_sentence(self, value: Any, name: str) -> str:
        return fields.sentence(value, name)

    def read_words(self, sentence: str) -> tuple[list[str], bool]:
        """The words the model reads (unknown ones as <unk>) and whether the sentence was cut."""
        vocab, max_len = self.model.vocab, self.model.config.text_train.max_len
        words = sentence.split()
        kept = words[:max_len] if max_len else words
        return [vocab.itos[i] for i in vocab.encode(kept)], len(kept) < len(words)

    def decode_options(self, body: dict, default: str = "greedy") -> dict:
        method = fields.choice(body, "method", default, self.methods)
        if method == "beam":
            return {"method": method, "beam_width": fields.integer(body, "beam_width", 5, 1, fields.MAX_BEAM)}
        if method == "sample":
            return {"method": method, "seed": fields.integer(body, "seed", 0, 0, fields.MAX_SEED),
                    "temperature": fields.number(body, "temperature", 1.0, 0.0, fields.MAX_TEMPERATURE,
                                                 open_low=True)}
        return {"method": method}

    def decode(self, z: np.ndarray, options: dict) -> list[str]:
        return self.model.decode(z, **options)

    def sample(self, n: int, temperature: float, seed: int, options: dict) -> list[str]:
        method = options.get("method", "sample")
        if method != "sample" and temperature != 1.0:
            raise BadRequest(f"'temperature' applies to method 'sample'; {method!r} decoding takes the best words")
        extra = {"beam_width": options["beam_width"]} if method == "beam" else {}
        return self.model.sample(n, temperature=temperature, seed=seed, method=method, **extra)

    def present(self, decoded) -> dict:
        return {"sentences": list(decoded)}

    def describe(self, test: TestSet, indices: np.ndarray) -> list:
        return [test.examples[i] for i in indices]

    def warm(self, latent_dim: int) -> None:
        z = np.zeros((1, latent_dim))
        for options in ({"method": "greedy"}, {"method": "beam", "beam_width": 5}):
            self.decode(z, options)
        self.model.sample(5, method="sample")
        for words in range(6, fields.MAX_SENTENCE_WORDS + 8, 8):  # the encoder's padded lengths
            self.model.encode([" ".join(["the"] * words)])


SIDES = {"image": ImageSide, "sentence": TextSide}  # by model family (vaecore.task.tasks.TaskSpec.family)
