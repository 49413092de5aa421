"""scripts/study.py end to end: the PTB collapse study on a tiny corpus, the MNIST record on the offline
subset with a tiny model: trains the rows, evaluates them, writes the comparison; a second call continues
rather than retrains."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = "--embed-dim 8 --hidden-dim 8 --batch-size 8 --epochs 2 --num-samples 1 --log-every 5"
STUDY = [sys.executable, str(ROOT / "scripts" / "study.py")]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT, check=False)


def tiny_corpus(data: Path, seed: int) -> Path:
    """40 / 10 / 10 sentences of 2 to 6 letters."""
    r = random.Random(seed)
    data.mkdir()
    for split, n in (("train", 40), ("valid", 10), ("test", 10)):
        (data / f"{split}.txt").write_text("\n".join(" ".join(r.choice("abcdefgh") for _ in range(r.randint(2, 6)))
                                                     for _ in range(n)) + "\n")
    return data


def test_study_trains_evaluates_and_compares(tmp_path):
    data = tiny_corpus(tmp_path / "data", 1)
    cmd = [*STUDY, "--runs", str(tmp_path / "runs"), "--rows", "lm,bn-0.7", "--jobs", "2", "--k", "3",
           "--train-args", f"{TINY} --data {data}", "--eval-args", "--batch-size 4"]
    out = run(cmd)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "runs" / "comparison.csv").open())}
    assert set(rows) == {"lm-torch", "bn-0.7-torch"}
    lm, bn = rows["lm-torch"], rows["bn-0.7-torch"]
    assert lm["remedy"] == "LM (no latent)" and bn["remedy"] == "BN-VAE gamma 0.7"
    # q(z|x) = p(z) for the language model: no KL, and importance sampling is exact (NLL = -ELBO)
    assert float(lm["kl"]) == 0.0 and abs(float(lm["nll"]) - float(lm["neg_elbo"])) < 1e-5 * float(lm["nll"])
    assert int(lm["au"]) == 0 and 0.0 <= float(lm["token_acc"]) <= 1.0
    assert int(bn["k"]) == 3 and int(bn["examples"]) == 10
    again = run(cmd)
    assert again.returncode == 0 and "started" not in again.stdout  # nothing left to train or evaluate
    # --out: records of the runs (no checkpoints) and a table that keeps the rows of the earlier one
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    (out_dir / "comparison.csv").write_text((tmp_path / "runs" / "comparison.csv").read_text().replace("lm-torch", "old-row"))
    recorded = run(cmd + ["--out", str(out_dir)])
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    rows = [row["run"] for row in csv.DictReader((out_dir / "comparison.csv").open())]
    assert rows == ["old-row", "lm-torch", "bn-0.7-torch"]
    assert sorted(p.name for p in (out_dir / "bn-0.7-torch").iterdir()) == sorted(
        ["config.json", "results.json", "eval_test.json", "samples.txt", "reconstructions.txt", "interpolations.txt",
         "training_curves.png"])


def test_best_evaluates_the_kept_checkpoint_of_the_lowest_validation_elbo(tmp_path):
    data = tiny_corpus(tmp_path / "data", 2)
    # 40 sentences in batches of 8: 5 steps an epoch, 3 epochs, each validated and kept
    tiny = TINY.replace("--epochs 2", "--epochs 3")
    cmd = [*STUDY, "--runs", str(tmp_path / "runs"), "--rows", "bn-0.7", "--jobs", "2", "--k", "3", "--best",
           "--train-args", f"{tiny} --data {data} --checkpoint-every 5 --keep-checkpoints 10",
           "--eval-args", "--batch-size 4", "--out", str(tmp_path / "results")]
    out = run(cmd)
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "bn-0.7-torch" / "metrics.jsonl").read_text().splitlines()]
    valid = {m["step"]: m["neg_elbo"] for m in metrics if m.get("split") == "valid"}
    assert sorted(valid) == [5, 10, 15]
    best = min(valid, key=valid.get)
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "results" / "comparison.csv").open())}
    assert set(rows) == {"bn-0.7-torch", f"bn-0.7-torch@{best}"}
    assert rows["bn-0.7-torch"]["step"] == "15" and rows[f"bn-0.7-torch@{best}"]["step"] == str(best)
    picked = json.loads((tmp_path / "results" / "bn-0.7-torch" / f"eval_test_step{best}.json").read_text())
    assert picked["k"] == 3 and picked["valid_neg_elbo"] == valid[best]
    again = run(cmd)
    assert again.returncode == 0 and "started" not in again.stdout  # both evaluations are there


def test_mnist_record_rows_train_with_burdas_protocol_and_evaluate_mi_over_the_split(tmp_path):
    """--study mnist-record: the preset's rows (JAX by default) on the offline subset, a tiny MLP for a
    few steps; evaluated with MI over the whole (limited) split and pictures kept in the record."""
    base = [*STUDY, "--study", "mnist-record", "--runs", str(tmp_path / "runs"), "--jobs", "2", "--k", "5",
            "--cores", "1,0"]
    cmd = [*base, "--rows", "burda-vae,burda-iwae5", "--out", str(tmp_path / "results"),
           "--train-args", "--max-steps 6 --hidden-sizes 16 --latent-dim 4 --log-every 2 --checkpoint-every 3",
           "--eval-args", "--limit 40"]
    out = run(cmd)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started train burda-vae on core 1" in out.stdout and "started train burda-iwae5 on core 0" in out.stdout
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "results" / "comparison.csv").open())}
    assert set(rows) == {"burda-vae-jax", "burda-iwae5-jax"}
    vae, iwae = rows["burda-vae-jax"], rows["burda-iwae5-jax"]
    assert (vae["task"], vae["backend"], vae["objective"], iwae["objective"]) == ("mnist", "jax", "elbo", "iwae")
    assert vae["setup"] == "MLP 16 tanh; batch 20; Adam eps 0.0001; Burda lr stages"
    assert iwae["setup"].startswith("k 5; ")
    for row in (vae, iwae):
        assert int(row["k"]) == 5 and int(row["examples"]) == 40 and int(row["step"]) == 6
        assert int(row["mi_batch_size"]) == 40  # --mi-batch-size 10000: the whole split in one batch
        assert float(row["nll"]) <= float(row["neg_elbo"]) + 1e-3
    assert (tmp_path / "results" / "burda-vae-jax" / "samples.png").exists()
    assert not (tmp_path / "results" / "burda-vae-jax" / "checkpoints").exists()
    saved = json.loads((tmp_path / "runs" / "burda-vae-jax" / "config.json").read_text())["train"]
    assert (saved["validate_every"], saved["checkpoint_every"]) == (10, 3)  # the row's, then --train-args'
    again = run(cmd)
    assert again.returncode == 0 and "started" not in again.stdout
    status = run([*base, "--rows", "burda-vae,burda-iwae5,mlp-long", "--status"])
    assert status.returncode == 0 and status.stdout.splitlines() == [
        "burda-vae-jax: evaluated (K 5)", "burda-iwae5-jax: evaluated (K 5)", "mlp-long-jax: not started"]
    bad = run([*base, "--rows", "bn-0.7"])
    assert bad.returncode == 2 and "unknown rows ['bn-0.7'] for --study mnist-record" in bad.stderr
    few = run([*base, "--cores", "0", "--rows", "burda-vae"])
    assert few.returncode == 2 and "--cores 0 names 1 cores for --jobs 2" in few.stderr


def test_status_of_a_run_in_training_from_its_folder(tmp_path):
    """--status reads a run's progress from its folder: the last logged step of the total (epochs times
    the steps per epoch the log implies, or --max-steps), and the hours of steps left at the logged rate."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("study_state", ROOT / "scripts" / "study_state.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    from vaecore.settings.config import RunConfig, TrainConfig

    folder = tmp_path / "burda-vae-jax"
    assert study.progress(folder, 5000) == {"state": "not started"}
    folder.mkdir()
    cfg = RunConfig(backend="jax", task="mnist", train=TrainConfig(epochs=10, batch_size=20))
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert study.progress(folder, 5000) == {"state": "training", "step": 0}
    points = [{"step": 250, "split": "train", "epoch": 1.0, "images_per_s": 900.0},
              {"step": 250, "split": "valid", "epoch": 1, "neg_elbo": 99.0},
              {"step": 500, "split": "train", "epoch": 2.0, "images_per_s": 1000.0}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points) + '{"step": 75')  # being written
    now = (folder / "metrics.jsonl").stat().st_mtime + 120
    st = study.progress(folder, 5000, now)
    assert (st["step"], st["total"], st["epoch"], st["rate"]) == (500, 2500, 2.0, "1,000 images/s")
    assert st["hours_left"] == 2000 * 20 / 1000 / 3600 and st["logged_ago_s"] == 120
    table = study.status_table(tmp_path, ["burda-vae"], "jax", 5000, now)
    assert table == (("burda-vae-jax: training, step 500 of 2,500 (20.0 %), epoch 2.0, 1,000 images/s, "
                      "0.0 h of steps left at that rate; last logged 2 min ago"), 0)
    (folder / "results.json").write_text('{"split": "test", "step": 2500, "epochs": 10.0}')  # its last step
    assert study.progress(folder, 5000) == {"state": "finished, not evaluated"}


def test_a_pinned_run_sees_one_core_and_one_thread():
    """study.py's (and bench/run_overhead.py's) one-core children: the affinity is the core asked for, and
    XLA, OpenMP and MKL are told to use one thread."""
    from vaecore.pinning import on_core

    core = max(os.sched_getaffinity(0))
    probe = "import os; print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'], os.environ['XLA_FLAGS'])"
    cmd, env = on_core([sys.executable, "-c", probe], core)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split(maxsplit=2)
    assert out == [f"[{core}]", "1", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1\n"]


def test_every_row_of_every_study_is_a_valid_run(tmp_path):
    """Each row's flags resolve to a config as train.py would build it (no flag the run would ignore, no
    bad value): a typo in a row costs hours only when its turn comes."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import study

    from vaecore.runner import options
    from vaecore.settings.cli import build_parser, explicit_flags

    parser = build_parser()
    for name, (task, rows, backend, _, _) in study.STUDIES.items():
        for row, flags in rows.items():
            argv = ["--task", task, "--backend", backend, "--workdir", str(tmp_path / f"{name}-{row}"), *flags]
            cfg, _ = options.resolve(parser.parse_args(argv), explicit_flags(parser, argv))
            assert cfg.task == task, (name, row)
    # the dropout-0.4 Transformer rows: the later flag wins over the shared configuration's 0.2
    argv = ["--task", "text", *study.TRANSFORMER_ROWS["pretrain-fb-d0.4"]]
    cfg, _ = options.resolve(parser.parse_args(argv), explicit_flags(parser, argv))
    assert (cfg.text.embedding_dropout, cfg.text.residual_dropout, cfg.text.attention_dropout) == (0.4, 0.4, 0.2)
    assert (cfg.train.checkpoint_every, cfg.train.keep_checkpoints, cfg.text_train.pretrain_epochs) == (1314, 30, 2)
