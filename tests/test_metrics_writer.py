"""metrics.jsonl and its TensorBoard mirror after a resume: the replayed steps appear once (issue 14)."""

import struct
from collections import Counter
from pathlib import Path

from tensorboardX.proto import event_pb2

from vaecore.runs.metrics import MetricsWriter


def read_scalars(tb: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the event files (TFRecord: length, crc, data, crc)."""
    out = []
    for path in sorted(tb.glob("events.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.append((value.tag, event.step, value.simple_value))
    return out


def test_resume_truncates_tensorboard_like_metrics_jsonl(tmp_path):
    first = MetricsWriter(tmp_path)
    for step in range(10, 60, 10):
        first.write(step, "train", {"loss": float(step)})
    first.write(50, "valid", {"loss": -1.0})
    first.close()  # the run is killed after step 50; its last checkpoint was at step 30

    resumed = MetricsWriter(tmp_path)
    resumed.truncate_after(30)
    for step in range(40, 70, 10):
        resumed.write(step, "train", {"loss": step + 0.5})
    resumed.close()

    scalars = read_scalars(tmp_path / "tb")
    counts = Counter((tag, step) for tag, step, _ in scalars)
    assert all(n == 1 for n in counts.values()), counts
    assert sorted(step for tag, step, _ in scalars if tag == "train/loss") == [10, 20, 30, 40, 50, 60]
    assert {(step, value) for tag, step, value in scalars if tag == "train/loss" and step > 30} == {
        (40, 40.5), (50, 50.5), (60, 60.5)}
    assert not [s for s in scalars if s[0] == "valid/loss"]  # logged after the checkpoint: gone
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 6
