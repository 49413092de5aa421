#!/usr/bin/env python
"""Evaluate a finished run as the papers do, or compare several evaluated runs: ``twinvae-evaluate``
(``twinvae/evaluate_cli.py``) run from the repository. ``python evaluate.py --help`` lists the flags."""

from twinvae.evaluate_cli import build_parser, evaluate_run, main  # noqa: F401  (evaluate.main: tests, tools)

if __name__ == "__main__":
    raise SystemExit(main())
