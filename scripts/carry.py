#!/usr/bin/env python
"""Carry unfinished runs to another machine: one archive per run, which ``--resume`` continues.

    python scripts/carry.py pack runs/mnist/burda-vae-jax runs/mnist/burda-iwae5-jax --out carry/
    python scripts/carry.py unpack carry/*.tar.gz --runs runs/mnist
    python train.py --workdir runs/mnist/burda-vae-jax --resume        # or scripts/study.py, which resumes

``pack`` writes ``OUT/<run>.tar.gz`` holding what a resume needs and nothing else: ``config.json``,
``metrics.jsonl``, ``vocab.json`` (text runs) and the newest complete checkpoint (the backend's format:
an orbax step folder, or a torch ``step_XXXXXXXX.pt``); no TensorBoard files, no older checkpoints. A
run may keep training while it is packed: its newest checkpoint is read while the run writes the next
(``--keep-checkpoints`` 2 or more). The archive is written to a temporary name and renamed, so an
earlier archive of the same run stays whole until the new one is. ``unpack`` extracts each archive
into ``RUNS/<run>/``, and refuses a run folder that already holds checkpoints (the newer state may be
there). The resumed run continues bit-exactly from the packed step on the same software; data order,
binarisation and noise are functions of (seed, step). ``config.json`` records the data directory it
trained on: the other machine needs the same data at the same path (``--data`` may not change on
``--resume``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vaecore import rundir

SMALL_FILES = (rundir.CONFIG, rundir.METRICS, rundir.VOCAB)


class CarryError(ValueError):
    """A run folder or archive that cannot be carried; the message says why."""


def newest_checkpoint(run: Path) -> Path:
    """The newest complete checkpoint of a run: an orbax step folder (named by its step alone, with
    its commit marker) or a torch checkpoint file."""
    folder = run / rundir.CHECKPOINTS
    entries = list(folder.iterdir()) if folder.is_dir() else []
    done = [p for p in entries if p.is_dir() and p.name.isdigit() and (p / "commit_success.txt").exists()]
    done += [p for p in entries if p.is_file() and rundir.TORCH_CHECKPOINT_RE.match(p.name)]
    if not done:
        raise CarryError(f"{run}: no complete checkpoint in {folder}; nothing to carry")
    return max(done, key=lambda p: int(re.sub(r"\D", "", p.name)))


def pack(run: Path, out: Path) -> tuple[Path, int]:
    """Write ``OUT/<run>.tar.gz``; returns the archive and the checkpoint's step."""
    run = Path(run)
    if not (run / rundir.CONFIG).exists():
        raise CarryError(f"{run}: no {rundir.CONFIG}; not a run folder")
    if (run / rundir.RESULTS).exists():
        raise CarryError(f"{run}: the run has finished ({rundir.RESULTS}); keep its record instead "
                         f"(scripts/study.py --out, or evaluate.py)")
    ckpt = newest_checkpoint(run)
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{run.name}.tar.gz"
    tmp = out / f".{run.name}.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for name in SMALL_FILES:
            if (run / name).exists():
                tar.add(run / name, arcname=f"{run.name}/{name}")
        tar.add(ckpt, arcname=f"{run.name}/{rundir.CHECKPOINTS}/{ckpt.name}")
    os.replace(tmp, archive)
    return archive, int(re.sub(r"\D", "", ckpt.name))


def unpack(archive: Path, runs: Path) -> Path:
    """Extract one archive into ``RUNS/<run>/``; returns that folder."""
    with tarfile.open(archive, "r:*") as tar:
        names = {Path(m.name).parts[0] for m in tar.getmembers()}
        if len(names) != 1:
            raise CarryError(f"{archive}: holds {len(names)} top-level folders; expected one run")
        name = names.pop()
        target = runs / name
        if rundir.has_checkpoint(target):
            raise CarryError(f"{target} already holds checkpoints; move it away or unpack into another --runs")
        runs.mkdir(parents=True, exist_ok=True)
        tar.extractall(runs, filter="data")
    return target


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="archive runs' newest checkpoints")
    a.add_argument("runs", nargs="+", type=Path, help="run folders")
    a.add_argument("--out", type=Path, required=True, help="folder for the archives")
    b = sub.add_parser("unpack", help="extract archives into run folders")
    b.add_argument("archives", nargs="+", type=Path)
    b.add_argument("--runs", type=Path, required=True, help="where the run folders go")
    args = p.parse_args()
    try:
        if args.command == "pack":
            for run in args.runs:
                archive, step = pack(run, args.out)
                print(f"{run} -> {archive} (step {step:,}, {archive.stat().st_size / 2**20:.1f} MiB)")
        else:
            for archive in args.archives:
                if not archive.is_file():
                    raise CarryError(f"{archive}: no such archive")
                print(f"{archive} -> {unpack(archive, args.runs)}")
    except (CarryError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
