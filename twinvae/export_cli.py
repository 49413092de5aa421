"""``twinvae-export RUN DIR [--step N]``: a run folder's newest checkpoint (or step N's; or an exported folder) as a portable
model folder (``model.safetensors``, ``config.json``, ``vocab.json`` for text, ``README.md``), which
``twinvae.load`` reads in either framework. Nothing in RUN changes; bad input is one line, exit 2."""

from __future__ import annotations

import sys

from vaecore.settings.cli import EXIT_BAD_INPUT, OneLineParser


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="twinvae-export", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("run", help="a run folder (config.json and checkpoints/) or an exported folder")
    p.add_argument("out", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing export in OUT")
    p.add_argument("--step", type=int, default=None,
                   help="a run folder's checkpoint of this step (one it keeps) instead of the newest")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import twinvae

    try:
        folder = twinvae.export(args.run, args.out, overwrite=args.overwrite, step=args.step)
    except (ValueError, OSError) as e:
        sys.stderr.write(f"twinvae-export: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
        return EXIT_BAD_INPUT
    print(f"exported {args.run} to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
