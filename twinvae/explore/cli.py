"""``twinvae-explore`` and ``explore.py``: a local web app to explore a model's latent space.

    python explore.py --workdir runs/mnist-torch-mlp-elbo            (then open http://127.0.0.1:8765)
    python explore.py --workdir exported/ --backend jax --port 9000
    python explore.py --workdir runs/ptb --data ~/ptb                 (the test split of another copy)

It serves on 127.0.0.1 (``--host`` opens it wider, with a warning), reads the run or exported folder
once and never writes to it. Bad input prints one line and exits with status 2.
"""

from __future__ import annotations

import sys

from vaecore.settings.cli import EXIT_BAD_INPUT, OneLineParser

DEFAULT_PORT = 8765


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="twinvae-explore", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--workdir", required=True,
                   help="a run folder (config.json and checkpoints/), an exported folder or hf://owner/name")
    p.add_argument("--backend", choices=("jax", "torch"), help="the framework to run in (default: the one that "
                   "trained it)")
    p.add_argument("--device", help="torch's device: cpu, cuda, cuda:N (default: the GPU when there is one)")
    p.add_argument("--data", help="where the test split is read (default: the run's own --data); for an exported "
                   "model whose data moved")
    p.add_argument("--limit", type=int, help="map only the first LIMIT test examples (default: all)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on; anything but a loopback "
                   "address lets other machines use the explorer")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the port (0: any free one)")
    p.add_argument("--threads", type=int, default=1, help="torch's CPU threads (a request is a few small "
                   "matmuls: more threads spin against each other and against other work on a busy machine)")
    return p


def _fail(message: str) -> int:
    sys.stderr.write(f"twinvae-explore: error: {message.splitlines()[0] if message else 'failed'}\n")
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit must be >= 1; got {args.limit}")
    if args.threads < 1:
        return _fail(f"--threads must be >= 1; got {args.threads}")
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be from 0 to 65535; got {args.port}")
    from twinvae.explore import server

    try:  # bind first: a port in use is found before the model is read
        sock = server.bind(args.host, args.port)
    except OSError as e:
        return _fail(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); choose another --port "
                     f"(0: any free one)")
    if not server.is_loopback(args.host):
        sys.stderr.write(f"twinvae-explore: warning: listening on {args.host}: anyone who can reach this machine "
                         f"can use the explorer (it has no login)\n")
    import twinvae
    from twinvae.explore.app import build_app
    from twinvae.explore.explorer import Explorer
    from twinvae.portable import resolve

    try:
        model = twinvae.load(args.workdir, backend=args.backend, device=args.device)
    except (ValueError, OSError) as e:
        sock.close()
        return _fail(str(e))
    if model.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    try:
        explorer = Explorer(model, folder=resolve(args.workdir), data=args.data, limit=args.limit)
        explorer.warm()
    except (ValueError, OSError) as e:
        sock.close()
        hint = "" if args.data else " (--data DIR reads the test split from elsewhere)"
        return _fail(f"the test split: {str(e).splitlines()[0] if str(e) else type(e).__name__}{hint}")
    host, port = sock.getsockname()[:2]
    print(f"exploring {args.workdir} ({model.task}, {model.backend}, {len(explorer.test)} test examples mapped in "
          f"{explorer.map_seconds:.1f} s) at http://{host if ':' not in host else f'[{host}]'}:{port}/", flush=True)
    server.serve(build_app(explorer), sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
