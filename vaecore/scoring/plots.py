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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_interpolations(strips: np.ndarray, path: Path) -> None:
    """One row per strip: ``strips`` [rows, steps, side*side] in [0, 1] (for example an image, the
    decoded points of a latent path, and the other image) as one PNG grid."""
    rows, steps = strips.shape[:2]
    save_image_grid(strips.reshape(rows * steps, -1), path, ncols=steps)


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``points`` [n, d] (d >= 2) onto their two principal axes: (projection [n, 2], the
    fraction of the variance each axis explains [2])."""
    centred = np.asarray(points, np.float64) - np.mean(points, axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    return centred @ vt[:2].T, var[:2] / max(var.sum(), 1e-300)


def save_latent_scatter(means: np.ndarray, labels: np.ndarray, path: Path, title: str = "") -> None:
    """Posterior means [n, d] coloured by label [n]: the latent itself when d == 2, else its PCA."""
    plt = _pyplot()
    if means.shape[1] == 2:
        xy, axes = np.asarray(means), ("z[0]", "z[1]")
    else:
        xy, ratio = pca_2d(means)
        axes = (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%})")
    fig, ax = plt.subplots(figsize=(6.5, 6))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    kind = "latent" if means.shape[1] == 2 else f"PCA of the {means.shape[1]}-d latent"
    ax.set_title(title or f"posterior means E[z|x], {kind}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CURVE_TERMS = ("neg_elbo", "recon", "kl", "mmd", "mi", "au")


def save_training_curves(rows: list[dict], path: Path, terms: tuple[str, ...] = CURVE_TERMS) -> list[str]:
    """One panel per loss term found in ``rows`` (the points of ``metrics.jsonl``: ``step``,
    ``split`` and scalars), each split a line against steps. Returns the terms drawn."""
    present = [t for t in terms if any(isinstance(r.get(t), (int, float)) for r in rows)]
    if not present:
        return []
    plt = _pyplot()
    ncols = min(3, len(present))
    nrows = -(-len(present) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, term in zip(axes.flat, present):
        for split in sorted({r.get("split", "?") for r in rows}):
            pts = [(r["step"], r[term]) for r in rows
                   if r.get("split", "?") == split and isinstance(r.get(term), (int, float))]
            if any(v != 0 for _, v in pts):  # all zeros: a term this split does not compute (e.g. train mmd)
                steps, values = zip(*pts)
                ax.plot(steps, values, "o-" if len(pts) < 3 else "-", label=split, markersize=3)
        ax.set_title(term)
        ax.set_xlabel("step")
        if ax.get_lines():
            ax.legend(fontsize=8)
        else:  # every split is all zeros for this term
            ax.text(0.5, 0.5, "all zero", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return present
