"""``twinvae-train`` and ``train.py``: train a VAE, InfoVAE or sentence VAE with the JAX or the PyTorch backend.

    python train.py --backend torch --task mnist --loss elbo --model mlp
    python train.py --backend jax --task mnist --loss mmd --data ~/mnist --epochs 10
    python train.py --backend jax --task text --kl-schedule logistic --workdir runs/ptb
    python train.py --workdir runs/ptb --sample                  (samples from a text run's newest checkpoint)
    python train.py --workdir runs/ptb --interpolate "the market fell" "prices rose sharply"

Only the chosen backend is imported. Bad input prints one line and exits with status 2; a run
that diverges (NaN loss) exits with status 1 and keeps its last good checkpoint. The flags are
``vaecore.settings.cli``'s, the rules that turn them into a config ``vaecore.runner.options``'s, the loop
``vaecore.runner.driver``'s.
"""

from __future__ import annotations

import sys

from vaecore.settings.cli import EXIT_BAD_INPUT, EXIT_FAILED, build_parser, explicit_flags
from vaecore.settings.config import ConfigError


def engine_class(backend: str, task: str):
    """The engine of ``task`` in ``backend`` (only that backend is imported)."""
    from twinvae.backends import backend_package

    return backend_package(backend).engine(task)


def generation_options(args):
    from vaecore.task.text_outputs import GenerationOptions

    return GenerationOptions(num_samples=args.num_samples, beam_width=args.beam_width,
                             temperature=args.temperature, interp_steps=args.interp_steps)


def generate(args, given: set[str]) -> None:
    """--sample / --interpolate: generated text from a finished (or checkpointed) text run."""
    from vaecore.runner import options
    from vaecore.task import text_outputs

    cfg = options.generation_run(args, given)
    text_outputs.generate(args.workdir, engine_class(cfg.backend, cfg.task), sample=args.sample,
                          between=tuple(args.interpolate) if args.interpolate else None,
                          opts=generation_options(args))


def train(args, given: set[str]) -> dict:
    from twinvae.backends import backend_package
    from vaecore.runner import driver, options
    from vaecore.task import tasks

    cfg, workdir = options.resolve(args, given)
    backend, spec = backend_package(cfg.backend), tasks.task(cfg.task)
    layout = backend.parallel.start(cfg)  # several devices or processes
    task = spec.build(cfg, workdir, resume=args.resume, generation=generation_options(args),
                      kernels=backend.evaluation)
    finished = False
    try:
        results = driver.run(task, backend.engine(cfg.task), workdir, resume=args.resume, layout=layout)
        finished = True
    finally:
        backend.parallel.stop(finished)
    if layout.main:
        print(f"{spec.result_line(results)}; run folder {workdir}")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    from vaecore.data.mnist import DataError
    from vaecore.data.text_data import TextDataError
    from vaecore.runner.driver import TrainingError

    try:
        given = explicit_flags(parser, argv)
        if args.sample or args.interpolate:
            generate(args, given)
        else:
            train(args, given)
    except (ConfigError, DataError, TextDataError) as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return EXIT_BAD_INPUT
    except TrainingError as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        return EXIT_FAILED
    return 0
