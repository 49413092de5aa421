#!/usr/bin/env python
"""Explore a trained model's latent space in the browser: ``twinvae-explore`` (``twinvae/explore/cli.py``)
run from the repository. ``python explore.py --help`` lists the flags."""

from twinvae.explore.cli import build_parser, main  # noqa: F401  (explore.build_parser: tests, tools)

if __name__ == "__main__":
    raise SystemExit(main())
