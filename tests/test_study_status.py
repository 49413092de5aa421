"""scripts/study.py's view of a row, and what it refuses: a row is finished only when results.json holds
the test figures of its last step and evaluated only when the evaluation is of that step; a folder it
cannot read is reported in one line (``--status`` lists it among the others); bad flags are one line."""

import importlib.util
import json
from pathlib import Path

import pytest

from vaecore.settings.config import RunConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("study", ROOT / "scripts" / "study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)
study_state = importlib.import_module("study_state")  # beside study.py, which put it on the path

POINTS = [{"step": 250, "split": "train", "epoch": 1.0, "images_per_s": 900.0},
          {"step": 500, "split": "train", "epoch": 2.0, "images_per_s": 1000.0}]


def make_run(folder: Path, results: dict | None = None, evaluation: dict | None = None, **train) -> Path:
    """A run folder of 10 epochs of 250 steps (2,500 steps) that has logged 500 of them."""
    folder.mkdir(parents=True)
    cfg = RunConfig(backend="jax", task="mnist", train=TrainConfig(**{"epochs": 10, "batch_size": 20, **train}))
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(p) + "\n" for p in POINTS))
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))
    if evaluation is not None:
        (folder / "eval_test.json").write_text(json.dumps(evaluation))
    return folder


FINAL = {"split": "test", "step": 2500, "epochs": 10.0}


@pytest.mark.parametrize(("results", "evaluation", "train", "state"), [
    # evaluate.py run on a run stopped at step 500 merged its figures into a results.json of its own
    ({"eval_test": {"k": 5000, "step": 500}}, {"k": 5000, "step": 500}, {}, "training"),
    # the test figures of an earlier total: the run was resumed with --epochs 10 after 5
    ({"split": "test", "step": 1250, "epochs": 5.0}, {"k": 5000, "step": 1250}, {}, "training"),
    (FINAL, {"k": 5000, "step": 500}, {}, "finished, not evaluated"),  # evaluated midway, then finished
    (FINAL, {"k": 100, "step": 2500}, {}, "finished, not evaluated"),  # at another K
    (FINAL, {"k": 5000, "step": 2500}, {}, "evaluated (K 5000)"),
    ({"split": "test", "step": 2500, "epochs": 10.0}, None, {"max_steps": 3000}, "training"),  # --max-steps 3000
    ({"split": "test", "step": 3000, "epochs": 12.0}, {"k": 5000, "step": 3000}, {"max_steps": 3000},
     "evaluated (K 5000)"),
])
def test_finished_and_evaluated_mean_the_last_step(tmp_path, results, evaluation, train, state):
    folder = make_run(tmp_path / "burda-vae-jax", results, evaluation, **train)
    assert study_state.progress(folder, 5000)["state"] == state
    assert study.row_state(folder, 5000) == {"finished, not evaluated": "finished",
                                             "evaluated (K 5000)": "evaluated"}.get(state, state)


CORRUPTIONS = {
    "config.json": (b'{"backend": "jax", ', "unreadable run configuration (JSONDecodeError"),
    "results.json": (b"\xff garbage", "results.json: unreadable (UnicodeDecodeError"),
    "eval_test.json": (b"[1, 2]", "eval_test.json: not a JSON object"),
    "metrics.jsonl": (b'{"step": "500", "split": "train", "epoch": 2.0}\n', "has no whole step and positive epoch"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_status_lists_a_corrupt_row_among_the_others(tmp_path, capsys, name):
    """A user asking where eight rows stand wants all eight: the unreadable one says why, the others are
    listed as ever, and the exit status (2) tells a script that something needs a hand."""
    runs = tmp_path / "runs"
    make_run(runs / "burda-iwae5-jax")
    finished = name == "eval_test.json"  # read only once the run has finished
    bad = make_run(runs / "burda-vae-jax", FINAL if finished else None, {"k": 5000, "step": 2500} if finished else None)
    data, why = CORRUPTIONS[name]
    (bad / name).write_bytes(data)
    code = study.main(["--study", "mnist-record", "--runs", str(runs), "--rows", "burda-vae,burda-iwae5,mlp-long",
                       "--status"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 2 and len(lines) == 3 and lines[0].startswith(f"burda-vae-jax: corrupt: {bad}") and why in lines[0]
    assert lines[1].startswith("burda-iwae5-jax: training, step 500 of 2,500 (20.0 %)")
    assert lines[2] == "mlp-long-jax: not started"
    assert err.splitlines() == [("study.py: error: 1 of 3 row folders cannot be read (their lines say why); "
                                 "restore the files or move the folders away")]


def test_a_corrupt_row_stops_the_study_before_anything_starts(tmp_path, capsys):
    runs = tmp_path / "runs"
    bad = make_run(runs / "burda-vae-jax")
    (bad / "config.json").write_text("{")
    with pytest.raises(SystemExit) as e:
        study.main(["--study", "mnist-record", "--runs", str(runs), "--rows", "burda-vae,mlp-long"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and "started" not in out and len(err.splitlines()) == 1
    assert err.startswith(f"study.py: error: {bad / 'config.json'}: unreadable run configuration (JSONDecodeError")
    assert "(nothing was started) (see --help)" in err
    assert sorted(p.name for p in runs.iterdir()) == ["burda-vae-jax"]  # no log, no mlp-long folder


@pytest.mark.parametrize(("flags", "error"), [
    (["--rows", "lm,bn-0.7,lm"], "--rows names lm more than once; name each row once"),
    (["--jobs", "0", "--status"], "argument --jobs: expected a positive whole number, got 0"),  # looped forever
    (["--jobs", "-2"], "argument --jobs: expected a positive whole number, got -2"),
    (["--jobs", "two"], "argument --jobs: expected a positive whole number, got 'two'"),
    (["--k", "0"], "argument --k: expected a positive whole number, got 0"),
    (["--cores", "a,b"], "argument --cores: expected CPU core numbers separated by commas, got 'a,b'"),
    (["--cores", "0,0"], "argument --cores: expected distinct cores among those this process may use"),
    (["--cores", "100000,0"], "argument --cores: expected distinct cores among those this process may use"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_are_refused_in_one_line(tmp_path, capsys, flags, error):
    with pytest.raises(SystemExit) as e:
        study.main(["--runs", str(tmp_path / "runs"), *flags])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith(f"study.py: error: {error}"), err
    assert err[0].endswith("(see --help)") and not (tmp_path / "runs").exists()


def test_default_cores_are_those_this_process_may_use(tmp_path, capsys, monkeypatch):
    """--jobs 3 on two usable cores once pinned a job to a core taskset refuses; the default cores are the
    first --jobs of those this process may use."""
    monkeypatch.setattr(study.os, "sched_getaffinity", lambda pid: {4, 7})
    with pytest.raises(SystemExit) as e:
        study.main(["--runs", str(tmp_path / "runs"), "--jobs", "3"])
    assert e.value.code == 2 and capsys.readouterr().err.splitlines() == [
        ("study.py: error: this process may use 2 cores for --jobs 3; name at least as many, or pass fewer --jobs "
         "(see --help)")]
    assert not (tmp_path / "runs").exists()
