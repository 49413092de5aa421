"""The one atomic writer of the project (run configs, results, metrics summaries, vocabularies,
generated text, pictures)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write through a temporary file and ``os.replace``, so a reader (or a run killed while it
    writes) never sees half a file. The temporary name carries the process id: two writers never
    share one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")
