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
into ``RUNS/<run>/`` and only there: it checks every archive whole before it writes anything, takes only
regular files and folders inside the one run folder (no links, devices, absolute or ``..`` paths), caps
what an archive may expand to, extracts into a hidden folder beside the target and renames it at the end,
and never lands on an existing folder (the newer state of the run may be there). The resumed run
continues bit-exactly from the packed step on the same software; data order, binarisation and noise are
functions of (seed, step). ``config.json`` records the data directory it trained on: the other machine
needs the same data at the same path (``--data`` may not change on ``--resume``).
"""


from __future__ import annotations

import gzip
import os
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vaecore.runs import rundir
from vaecore.settings.cli import EXIT_BAD_INPUT, OneLineParser

SMALL_FILES = (rundir.CONFIG, rundir.METRICS, rundir.VOCAB)
MAX_MEMBERS = 10_000  # an orbax step folder holds a few dozen files
# what an archive may expand to: a checkpoint is floats, which gzip shrinks by about a tenth, and
# metrics.jsonl is text, about a fourth; ten times the archive (at least MIN_CAP_MIB) holds any real run
CAP_RATIO, MIN_CAP_MIB = 10, 32
# reading a truncated or damaged .tar.gz raises any of these (BadGzipFile: not gzip at all)
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


class CarryError(ValueError):
    """A run folder or archive that cannot be carried; the message says why."""


def newest_checkpoint(run: Path) -> tuple[int, Path]:
    """The step and path of a run's newest complete checkpoint (``rundir.checkpoint_entries``)."""
    entries = rundir.checkpoint_entries(run)
    if not entries:
        raise CarryError(f"{run}: no complete checkpoint in {run / rundir.CHECKPOINTS}; nothing to carry")
    return max(entries.items())


def kind(info: tarfile.TarInfo) -> str:
    return "link" if info.issym() or info.islnk() else "device or fifo" if info.isdev() else "special member"


def pack(run: Path, out: Path) -> tuple[Path, int]:
    """Write ``OUT/<run>.tar.gz``, named after the run folder's real name (``pack .`` included); returns
    the archive and the checkpoint's step."""
    run = Path(run)
    if not (run / rundir.CONFIG).exists():
        raise CarryError(f"{run}: no {rundir.CONFIG}; not a run folder")
    if (run / rundir.RESULTS).exists():
        raise CarryError(f"{run}: the run has finished ({rundir.RESULTS}); keep its record instead "
                         f"(scripts/study.py --out, or evaluate.py)")
    step, ckpt = newest_checkpoint(run)
    name = run.resolve().name

    def files_only(info: tarfile.TarInfo) -> tarfile.TarInfo:  # what unpack takes, and nothing else
        if not (info.isreg() or info.isdir()):
            raise CarryError(f"{run}: {info.name} is a {kind(info)}; a run archive holds only files and folders")
        return info

    out.mkdir(parents=True, exist_ok=True)
    archive, tmp = out / f"{name}.tar.gz", out / f".{name}.tar.gz.tmp"
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for small in SMALL_FILES:
                if (run / small).exists():
                    tar.add(run / small, arcname=f"{name}/{small}", filter=files_only)
            tar.add(ckpt, arcname=f"{name}/{rundir.CHECKPOINTS}/{ckpt.name}", filter=files_only)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, archive)
    return archive, step


class Members:
    """Checks an archive's members one by one as it is read: each a regular file or a folder at a plain
    relative path under one top folder (the run), no name twice, at most ``cap`` bytes in all."""

    def __init__(self, archive: Path, cap: int):
        self.archive, self.cap = archive, cap
        self.top: str | None = None
        self.files: set[tuple[str, ...]] = set()
        self.paths: set[tuple[str, ...]] = set()
        self.size = 0

    def refuse(self, why: str) -> CarryError:
        return CarryError(f"{self.archive}: {why}; refusing the archive, nothing was unpacked")

    def add(self, info: tarfile.TarInfo) -> tuple[str, ...]:
        """The member's path components, once it has passed every check."""
        name = info.name.rstrip("/") if info.isdir() else info.name
        parts = tuple(name.split("/"))
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise self.refuse(f"member {info.name!r} is not a plain relative path")
        if not (info.isreg() or info.isdir()):
            raise self.refuse(f"member {info.name!r} is a {kind(info)}; a run archive holds only files and folders")
        if self.top is not None and parts[0] != self.top:
            raise self.refuse(f"holds more than one top-level folder ({self.top!r}, {parts[0]!r}); expected one run")
        if len(parts) == 1 and not info.isdir():
            raise self.refuse(f"member {info.name!r} is a file outside a run folder")
        if parts in self.paths:
            raise self.refuse(f"holds {info.name!r} twice")
        if len(self.paths) >= MAX_MEMBERS:
            raise self.refuse(f"holds more than {MAX_MEMBERS:,} members; a run archive holds a few dozen")
        self.size += max(info.size, 0) if info.isreg() else 0
        if self.size > self.cap:
            raise self.refuse(f"expands to more than {self.cap / 2**20:,.0f} MiB (a run archive expands to at most "
                              f"{CAP_RATIO} times its size, or {MIN_CAP_MIB} MiB; --max-mib raises the cap)")
        self.top = parts[0]
        self.paths.add(parts)
        if info.isreg():
            self.files.add(parts)
        return parts

    def finish(self) -> str:
        """The run's folder name, once the whole archive has been read."""
        if self.top is None:
            raise self.refuse("is empty")
        inner = {parts[:i] for parts in self.paths for i in range(1, len(parts))}
        if clash := sorted(self.files & inner):
            raise self.refuse(f"holds {'/'.join(clash[0])!r} both as a file and as a folder")
        if (self.top, rundir.CONFIG) not in self.files:
            raise self.refuse(f"holds no {self.top}/{rundir.CONFIG}; not a run archive written by pack")
        return self.top


def read_error(archive: Path, e: BaseException) -> CarryError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return CarryError(f"{archive}: not a readable run archive (truncated, or not a .tar.gz written by pack: "
                      f"{first}); nothing was unpacked, pack the run again")


def default_cap(archive: Path) -> int:
    return max(MIN_CAP_MIB * 2**20, CAP_RATIO * archive.stat().st_size)


def check_archive(archive: Path, runs: Path, cap: int | None = None) -> Path:
    """Read the whole archive and check every member and the target; returns ``RUNS/<run>``. Writes
    nothing."""
    if not archive.is_file():
        raise CarryError(f"{archive}: no such archive")
    members = Members(archive, cap or default_cap(archive))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                members.add(info)
    except READ_ERRORS as e:
        raise read_error(archive, e) from None
    except OSError as e:
        raise CarryError(f"{archive}: cannot read it ({e})") from None
    target = runs / members.finish()
    if runs.exists() and not runs.is_dir():
        raise CarryError(f"--runs {runs}: not a folder")
    if target.exists() or target.is_symlink():
        held = "holds checkpoints" if rundir.has_checkpoint(target) else "exists"
        raise CarryError(f"{target} already {held} (the run's newer state may be there); nothing was unpacked: "
                         f"move it away or unpack into another --runs")
    return target


def unpack(archive: Path, runs: Path, cap: int | None = None) -> Path:
    """Extract one archive into ``RUNS/<run>/``, which must not exist; returns that folder."""
    return unpack_checked(archive, check_archive(archive, runs, cap), cap)


def unpack_checked(archive: Path, target: Path, cap: int | None) -> Path:
    """Extract an archive that ``check_archive`` passed into ``target``. Only regular files and folders are
    written, into a hidden folder beside the target that is renamed to it at the end, so a refused or damaged
    archive leaves nothing behind."""
    runs = target.parent
    runs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpacking-", dir=runs))
    try:
        members = Members(archive, cap or default_cap(archive))
        members.top = target.name  # the run that was checked, and no other
        extract(archive, members, tmp)
        if target.exists() or target.is_symlink():  # appeared while we extracted
            raise CarryError(f"{target} appeared while unpacking; nothing was unpacked")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def extract(archive: Path, members: Members, into: Path) -> None:
    """Write the archive's members under ``into`` (the run folder's contents), checking each again: the
    archive is read a second time and may have changed since it was checked."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                dest = into.joinpath(*members.add(info)[1:])
                if info.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                # O_EXCL | O_NOFOLLOW: a new regular file, never through anything already there
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out, tar.extractfile(info) as src:
                    shutil.copyfileobj(src, out)
        members.finish()
    except READ_ERRORS as e:
        raise read_error(archive, e) from None
    except OSError as e:
        raise CarryError(f"{archive}: could not write {into} ({e}); nothing was unpacked") from None


def unpack_all(archives: list[Path], runs: Path, cap: int | None) -> None:
    """Check every archive, then unpack them: one refused archive and none is unpacked."""
    targets = [check_archive(archive, runs, cap) for archive in archives]
    if len(set(targets)) < len(targets):
        same = next(t for t in targets if targets.count(t) > 1)
        raise CarryError(f"two archives hold the run {same.name}; unpack one of them")
    for archive, target in zip(archives, targets):
        print(f"{archive} -> {unpack_checked(archive, target, cap)}")


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="carry.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="archive runs' newest checkpoints")
    a.add_argument("runs", nargs="+", type=Path, help="run folders")
    a.add_argument("--out", type=Path, required=True, help="folder for the archives")
    b = sub.add_parser("unpack", help="extract archives into run folders")
    b.add_argument("archives", nargs="+", type=Path)
    b.add_argument("--runs", type=Path, required=True, help="where the run folders go")
    b.add_argument("--max-mib", type=int, default=None,
                   help=f"refuse an archive that expands to more (default {CAP_RATIO} times its size, at least "
                        f"{MIN_CAP_MIB})")
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            for run in args.runs:
                archive, step = pack(run, args.out)
                print(f"{run} -> {archive} (step {step:,}, {archive.stat().st_size / 2**20:.1f} MiB)")
        else:
            if args.max_mib is not None and args.max_mib < 1:
                raise CarryError(f"--max-mib {args.max_mib}: must be a positive number of MiB")
            unpack_all(args.archives, args.runs, args.max_mib * 2**20 if args.max_mib else None)
    except (CarryError, OSError) as e:  # OSError: a folder that cannot be read or written
        print(f"carry.py: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
