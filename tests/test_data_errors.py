"""Data that cannot make a run is one line and exit 2 before any training (issue 33): a batch larger
than the training data, a --min-freq that empties the vocabulary, an --iw-samples whose step cannot fit
in memory."""

import subprocess
import sys
from pathlib import Path

import pytest

from vaecore.data import batching
from vaecore.settings.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text("\n".join(["a b c", "b c d e", "c a", "d d a b"] * 5) + "\n")
    return folder  # 20 sentences; "a" 15 times, "b" 15, "c" 15, "d" 15, "e" 5


def refused(tmp_path: Path, *args: str) -> str:
    """The one error line of a train.py run that must be refused; nothing was written."""
    work = tmp_path / "run"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--backend", "torch", "--max-steps", "2",
                          "--workdir", str(work), *args], capture_output=True, text=True, timeout=600, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert not work.exists() or not any(work.iterdir())
    return lines[0]


def test_an_image_batch_larger_than_the_training_set(tmp_path):
    line = refused(tmp_path, "--batch-size", "5000", "--hidden-sizes", "8", "--latent-dim", "2")
    assert line == ("train.py: error: --batch-size 5000 is larger than the training set (4000 examples); lower "
                    "--batch-size to 4000 or less")


def test_a_text_batch_larger_than_the_training_set(tmp_path):
    line = refused(tmp_path, "--task", "text", "--data", str(corpus(tmp_path)), "--batch-size", "21")
    assert "batch size 21 is larger than the train split (20 sentences)" in line


def test_a_min_freq_that_empties_the_vocabulary(tmp_path):
    line = refused(tmp_path, "--task", "text", "--data", str(corpus(tmp_path)), "--min-freq", "16")
    assert line == ("train.py: error: --min-freq 16 leaves no word in the vocabulary (the most frequent word of the "
                    "train split occurs 15 times); use --min-freq 15 or lower")


def test_iw_samples_too_many_for_memory_on_images(tmp_path):
    line = refused(tmp_path, "--loss", "iwae", "--iw-samples", "1000000000", "--batch-size", "100",
                   "--hidden-sizes", "8", "--latent-dim", "2")
    # 1e9 x 100 x 784 float32s: 292,063 GiB, more than any machine has
    assert "--iw-samples 1000000000 with --batch-size 100: a training step's largest tensor (k x batch x 784 floats)" \
           " is 292062.8 GiB" in line and "use --iw-samples" in line


def test_iw_samples_too_many_for_memory_on_text(tmp_path):
    # the longest sentence, 4 words + <bos> + <eos>, is padded to 8 tokens; 9 words with the 4 special ones
    line = refused(tmp_path, "--task", "text", "--data", str(corpus(tmp_path)), "--loss", "iwae", "--iw-samples",
                   "1000000000000", "--batch-size", "4", "--embed-dim", "4", "--hidden-dim", "4", "--latent-dim", "2")
    assert "(k x batch x 8 tokens x 9 words) is 1072883.6 GiB" in line


def test_check_step_memory_names_the_size_and_the_largest_k_that_fits():
    # 64 x 784 x 4 bytes = 196 KiB a sample; 3 copies of 8 samples fill 4.6 MiB
    memory = 3 * 8 * 64 * 784 * 4
    batching.check_step_memory(8, 64, 784, "k x batch x 784 floats", memory=memory)
    with pytest.raises(ConfigError, match=r"^--iw-samples 9 with --batch-size 64: a training step's largest tensor "
                                          r"\(k x batch x 784 floats\) is 1\.7 MiB, and a step holds it about 3 times; "
                                          r"this machine has 4\.6 MiB of memory; use --iw-samples 8 or fewer$"):
        batching.check_step_memory(9, 64, 784, "k x batch x 784 floats", memory=memory)
    # even one sample does not fit: the batch must shrink
    with pytest.raises(ConfigError, match=r"lower --batch-size \(k = 1 needs 6\.0 GiB\)$"):
        batching.check_step_memory(2, 2**20, 512, "x", memory=4 * GiB)
