"""Pictures of a run, drawn with matplotlib's headless Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def image_grid(images: np.ndarray, ncols: int, side: int = 28, pad: int = 2) -> np.ndarray:
    """Tile ``images`` [n, side*side] with values in [0, 1] into one 2-D array, ``ncols`` per row."""
    n = len(images)
    nrows = -(-n // ncols)
    grid = np.ones((nrows * (side + pad) + pad, ncols * (side + pad) + pad), dtype=np.float32)
    for i, img in enumerate(np.asarray(images, dtype=np.float32).reshape(n, side, side)):
        r, c = divmod(i, ncols)
        top, left = pad + r * (side + pad), pad + c * (side + pad)
        grid[top:top + side, left:left + side] = img
    return grid


def save_image_grid(images: np.ndarray, path: Path, ncols: int = 8) -> None:
    """Write a PNG grid of grey images (black background digits as in MNIST)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(str(path), image_grid(images, ncols), cmap="gray", vmin=0.0, vmax=1.0)
