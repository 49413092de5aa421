"""The one atomic writer of the project (run configs, results, metrics summaries, vocabularies,
generated text, pictures). Its reader, for a run's files, is ``vaecore.runs.rundir.read_text``."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path


def os_reason(e: OSError) -> str:
    """An ``OSError`` in a few words (``strerror``, or the errno's name)."""
    return e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write through a temporary file and ``os.replace``, so a reader (or a run killed while it
    writes) never sees half a file. The temporary name carries the process id: two writers never
    share one. On a failure (a full disk) the temporary file is removed and the ``OSError`` raised:
    ``path`` keeps its old contents."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")
