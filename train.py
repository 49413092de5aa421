#!/usr/bin/env python
"""Train a VAE, InfoVAE or sentence VAE with the JAX or the PyTorch backend: ``twinvae-train``
(``twinvae/train_cli.py``) run from the repository. ``python train.py --help`` lists the flags."""

from twinvae.train_cli import build_parser, main, train  # noqa: F401  (train.build_parser: tests, tools)

if __name__ == "__main__":
    raise SystemExit(main())
