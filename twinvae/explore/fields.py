"""The explorer's request bounds and the readers of a request's JSON fields. Every field a request may
carry is read here, checked against its type and its bound, and refused with a ``BadRequest`` whose
message says what is wrong and what is accepted (the API answers it as 4xx ``{"error": message}``)."""

from __future__ import annotations

import math
from typing import Any

MAX_BODY_BYTES = 16 * 1024  # the largest request: a few latent codes or two sentences
MAX_SENTENCE_CHARS = 400
MAX_SENTENCE_WORDS = 60
MAX_IMAGE_SAMPLES = 64
MAX_TEXT_SAMPLES = 16
MAX_CODES = 64  # latent codes in one /api/decode
MAX_STEPS = 16  # interpolation and traversal points
MAX_TRAVERSE_DIMS = 8  # rows of a traversal grid
MAX_NEAREST = 20
MAX_BEAM = 8
MAX_TEMPERATURE = 5.0
MAX_SPAN = 10.0  # a traversal runs from -span to +span standard deviations of the prior
MAX_SEED = 2**31 - 1
MAX_ABS_Z = 100.0


class BadRequest(ValueError):
    """A request the explorer refuses: ``status`` (400, 404, 413, ...) and a one-line message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _get(body: dict, name: str, default: Any) -> Any:
    return body[name] if name in body and body[name] is not None else default


def integer(body: dict, name: str, default: int | None, low: int, high: int) -> int:
    """``body[name]`` as an int in [low, high] (``default`` when absent; None: required)."""
    value = _get(body, name, default)
    if value is None:
        raise BadRequest(f"'{name}' is required (an integer from {low} to {high})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer from {low} to {high}; got {value!r:.40}")
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be from {low} to {high}; got {value}")
    return value


def number(body: dict, name: str, default: float, low: float, high: float, *, open_low: bool = False) -> float:
    """``body[name]`` as a finite float in [low, high] ((low, high] with ``open_low``)."""
    value = _get(body, name, default)
    bound = f"{'(' if open_low else '['}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a number in {bound}; got {value!r:.40}")
    if not (low < value if open_low else low <= value) or value > high:
        raise BadRequest(f"'{name}' must be in {bound}; got {value:g}")
    return float(value)


def choice(body: dict, name: str, default: str, options: tuple[str, ...]) -> str:
    value = _get(body, name, default)
    if value not in options:
        raise BadRequest(f"'{name}' must be one of {', '.join(options)}; got {value!r:.40}")
    return value


def sentence(value: Any, name: str) -> str:
    """A typed sentence: a non-empty string of at most MAX_SENTENCE_CHARS characters and
    MAX_SENTENCE_WORDS words (words are separated by white space)."""
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a sentence (a string of words separated by spaces)")
    words = value.split()
    if not words:
        raise BadRequest(f"'{name}' is empty: type at least one word")
    if len(value) > MAX_SENTENCE_CHARS or len(words) > MAX_SENTENCE_WORDS:
        raise BadRequest(f"'{name}' is too long ({len(value)} characters, {len(words)} words); the limit is "
                         f"{MAX_SENTENCE_CHARS} characters and {MAX_SENTENCE_WORDS} words")
    return " ".join(words)


def codes(body: dict, name: str, latent_dim: int) -> list[list[float]]:
    """``body[name]``: one latent code (a list of ``latent_dim`` numbers) or a list of at most
    MAX_CODES of them, each entry finite and within +-MAX_ABS_Z."""
    value = _get(body, name, None)
    if value is None:
        raise BadRequest(f"'{name}' is required: a list of {latent_dim} numbers (a latent code) or a list of such "
                         f"lists")
    rows = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
    if len(rows) > MAX_CODES:
        raise BadRequest(f"'{name}' holds {len(rows)} codes; at most {MAX_CODES} per request")
    for row in rows:
        ok = isinstance(row, list) and len(row) == latent_dim and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_ABS_Z
            for v in row)
        if not ok:
            raise BadRequest(f"'{name}' must hold codes of {latent_dim} finite numbers within +-{MAX_ABS_Z:g}")
    return rows


def dims(body: dict, name: str, latent_dim: int, *, count: int | None = None, most: int = MAX_TRAVERSE_DIMS
         ) -> list[int]:
    """``body[name]``: a list of distinct latent dimensions (0 .. latent_dim - 1); exactly ``count``
    of them when given, else 1 to ``most``."""
    value = _get(body, name, None)
    n = f"{count}" if count else f"1 to {most}"
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise BadRequest(f"'{name}' must be a list of {n} latent dimensions (integers from 0 to {latent_dim - 1})")
    if (count and len(value) != count) or not 1 <= len(value) <= (count or most) or len(set(value)) != len(value):
        raise BadRequest(f"'{name}' must hold {n} distinct dimensions; got {value!r:.60}")
    for d in value:
        if not 0 <= d < latent_dim:
            raise BadRequest(f"dimension {d} is out of range: the latent space has dimensions 0 to {latent_dim - 1}")
    return value
