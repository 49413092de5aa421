"""scripts/carry.py unpack only ever creates regular files and folders inside the one run folder it names,
checks a whole archive before it writes anything, and refuses in one line (exit 2); pack names the archive
after the run folder's real name. Archives are built here by hand, as a hostile or damaged one would be."""

import importlib.util
import io
import os
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("carry", ROOT / "scripts" / "carry.py")
carry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(carry)


def member(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = (tarfile.DIRTYPE if data is None and kind == tarfile.REGTYPE else kind), link
    info.size = len(data) if data is not None else 0
    return info, io.BytesIO(data) if data is not None else None


def archive(path: Path, *members: tuple) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


def run_main(capsys, *argv: str) -> tuple[int, list[str]]:
    code = carry.main(list(argv))
    return code, capsys.readouterr().err.splitlines()


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder): what a refusal must leave as it was."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs folder holding a sibling run (``other``) and a file beside it, which an archive must not reach."""
    runs = tmp_path / "runs"
    (runs / "other").mkdir(parents=True)
    (runs / "other" / "config.json").write_text('{"seed": 1}')
    (runs / "train.py").write_text("print('the real one')")
    return runs


def run_members() -> tuple:
    """A run archive's first members (fresh each time: a member's data is read once)."""
    return member("run"), member("run/config.json", b"{}"), member("run/metrics.jsonl", b'{"step": 1}\n')


@pytest.mark.parametrize("link_kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
@pytest.mark.parametrize("victim", ["../other/config.json", "../train.py"])
def test_a_link_member_cannot_carry_a_write_out_of_the_run(runs, tmp_path, capsys, link_kind, victim):
    """A link followed by a regular file of the same name once wrote through the link into any file under
    --runs (a sibling run's config.json, or train.py with --runs at the repository root)."""
    # a symbolic link names its target from its own folder, a hard link from the extraction root
    target = victim if link_kind == tarfile.SYMTYPE else victim.removeprefix("../")
    evil = archive(tmp_path / "run.tar.gz", *run_members(), member("run/x", kind=link_kind, link=target),
                   member("run/x", b"overwritten"))
    before = listing(runs)
    code, err = run_main(capsys, "unpack", str(evil), "--runs", str(runs))
    assert code == 2 and len(err) == 1 and "member 'run/x' is a link" in err[0], err
    assert listing(runs) == before  # the sibling untouched, and no run folder nor temporary folder left


@pytest.mark.parametrize(("name", "kind", "why"), [
    ("run/.", tarfile.DIRTYPE, "is not a plain relative path"),
    ("run/../escape", tarfile.REGTYPE, "is not a plain relative path"),
    ("/tmp/absolute", tarfile.REGTYPE, "is not a plain relative path"),
    ("run//twice", tarfile.REGTYPE, "is not a plain relative path"),
    ("run/dev", tarfile.CHRTYPE, "is a device or fifo"),
    ("run/fifo", tarfile.FIFOTYPE, "is a device or fifo"),
    ("another/config.json", tarfile.REGTYPE, "more than one top-level folder"),
    ("run/config.json", tarfile.REGTYPE, "holds 'run/config.json' twice"),
])
def test_a_refused_member_after_good_ones_leaves_nothing(runs, tmp_path, capsys, name, kind, why):
    bad = member(name, b"x" if kind == tarfile.REGTYPE else None, kind)
    evil = archive(tmp_path / "run.tar.gz", *run_members(), bad)
    before = listing(runs)
    code, err = run_main(capsys, "unpack", str(evil), "--runs", str(runs))
    assert code == 2 and len(err) == 1 and why in err[0] and "nothing was unpacked" in err[0], err
    assert listing(runs) == before


def test_an_archive_that_expands_past_the_cap_is_refused(runs, tmp_path, capsys):
    """40 MiB of zeros pack into about 40 KB: past ten times the archive and past 32 MiB; --max-mib lets
    a user who trusts it through."""
    zeros = archive(tmp_path / "run.tar.gz", *run_members(), member("run/checkpoints/step_00000010.pt", bytes(40 * 2**20)))
    assert zeros.stat().st_size < 200_000
    before = listing(runs)
    code, err = run_main(capsys, "unpack", str(zeros), "--runs", str(runs))
    assert code == 2 and len(err) == 1 and "expands to more than 32 MiB" in err[0] and "--max-mib" in err[0], err
    assert listing(runs) == before
    code, _ = run_main(capsys, "unpack", str(zeros), "--runs", str(runs), "--max-mib", "64")
    assert code == 0 and (runs / "run" / "checkpoints" / "step_00000010.pt").stat().st_size == 40 * 2**20


def test_unpack_never_lands_on_an_existing_run(runs, tmp_path, capsys):
    """A finished run without checkpoints once had its config and metrics replaced, its results kept."""
    done = runs / "run"
    done.mkdir()
    (done / "config.json").write_text('{"finished": true}')
    (done / "results.json").write_text('{"step": 50}')
    before = listing(runs)
    good = archive(tmp_path / "run.tar.gz", *run_members())
    code, err = run_main(capsys, "unpack", str(good), "--runs", str(runs))
    assert code == 2 and err == [(f"carry.py: error: {done} already exists (the run's newer state may be there); "
                                  f"nothing was unpacked: move it away or unpack into another --runs")]
    assert listing(runs) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "plain tar"])
def test_a_damaged_archive_is_one_line(runs, tmp_path, capsys, damage):
    whole = archive(tmp_path / "whole.tar.gz", *run_members(), member("run/checkpoints/step_00000010.pt", os.urandom(50_000)))
    bad = tmp_path / "run.tar.gz"
    if damage == "truncated":
        bad.write_bytes(whole.read_bytes()[:30_000])
    elif damage == "garbage":
        bad.write_bytes(b"not an archive\n" * 100)
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        with tarfile.open(bad, "w") as tar:
            tar.addfile(*member("run/config.json", b"{}"))
    before = listing(runs)
    code, err = run_main(capsys, "unpack", str(bad), "--runs", str(runs))
    assert code == 2 and len(err) == 1 and "not a readable run archive" in err[0], err
    assert listing(runs) == before


def test_one_refused_archive_and_none_is_unpacked(runs, tmp_path, capsys):
    good = archive(tmp_path / "run.tar.gz", *run_members())
    evil = archive(tmp_path / "evil.tar.gz", member("evil"), member("evil/config.json", b"{}"),
                   member("evil/link", kind=tarfile.SYMTYPE, link="../other"))
    before = listing(runs)
    code, err = run_main(capsys, "unpack", str(good), str(evil), "--runs", str(runs))
    assert code == 2 and len(err) == 1 and "'evil/link' is a link" in err[0]
    assert listing(runs) == before
    code, err = run_main(capsys, "unpack", str(good), str(good), "--runs", str(runs))
    assert code == 2 and err == ["carry.py: error: two archives hold the run run; unpack one of them"]
    assert listing(runs) == before


def fake_run(folder: Path) -> Path:
    """A run folder as pack sees it: a config, metrics and a torch checkpoint (pack reads no content)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text('{"seed": 3}')
    (folder / "metrics.jsonl").write_text('{"step": 10, "split": "train"}\n')
    (folder / "checkpoints" / "step_00000010.pt").write_bytes(b"weights")
    return folder


def test_pack_dot_names_the_archive_after_the_run_and_unpacks(tmp_path, capsys, monkeypatch):
    """``pack .`` once wrote ``.tar.gz`` with members at absolute paths, which unpack refused."""
    run = fake_run(tmp_path / "burda-vae-jax")
    monkeypatch.chdir(run)
    code, err = run_main(capsys, "pack", ".", "--out", str(tmp_path / "carry"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "carry").iterdir()) == ["burda-vae-jax.tar.gz"]
    code, err = run_main(capsys, "unpack", str(tmp_path / "carry" / "burda-vae-jax.tar.gz"),
                         "--runs", str(tmp_path / "there"))
    assert code == 0, err
    assert listing(tmp_path / "there") == {
        "burda-vae-jax": None, "burda-vae-jax/checkpoints": None, "burda-vae-jax/config.json": b'{"seed": 3}',
        "burda-vae-jax/metrics.jsonl": b'{"step": 10, "split": "train"}\n',
        "burda-vae-jax/checkpoints/step_00000010.pt": b"weights"}


def test_pack_refuses_a_link_and_leaves_no_archive(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    (run / "checkpoints" / "step_00000020.pt").symlink_to(tmp_path / "secret")
    (tmp_path / "secret").write_text("not the run's")
    code, err = run_main(capsys, "pack", str(run), "--out", str(tmp_path / "carry"))
    assert code == 2 and len(err) == 1 and "step_00000020.pt is a link" in err[0], err
    assert list((tmp_path / "carry").iterdir()) == []


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        carry.main(["unpack", "x.tar.gz"])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and err == [
        "carry.py unpack: error: the following arguments are required: --runs (see --help)"]
    code, err = run_main(capsys, "unpack", "x.tar.gz", "--runs", "r", "--max-mib", "0")
    assert code == 2 and err == ["carry.py: error: --max-mib 0: must be a positive number of MiB"]


def test_extraction_checks_the_archive_again(runs, tmp_path):
    """The archive is read twice (checked, then extracted): one swapped in between, here another run's,
    is refused on the second reading and leaves nothing."""
    other = archive(tmp_path / "run.tar.gz", member("swapped"), member("swapped/config.json", b"{}"))
    before = listing(runs)
    with pytest.raises(carry.CarryError, match="more than one top-level folder \\('run', 'swapped'\\)"):
        carry.unpack_checked(other, runs / "run", None)
    assert listing(runs) == before
