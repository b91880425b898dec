"""The run directory: everything a run leaves behind, each file written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import UserError

#: Version of the run-directory layout, recorded in summary.json and checked on reading.
RUN_FORMAT = 1


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def create_run_dir(recipe_name: str, out: str | Path | None) -> Path:
    """``out`` exactly, or ``runs/<recipe>/<timestamp>/``; never an existing non-empty folder."""
    if out is not None:
        path = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / recipe_name / stamp
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path("runs") / recipe_name / f"{stamp}-{suffix}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"output folder {path} already exists and is not empty; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write the run directory {path}: {e.strerror or e}") from None
    return path


class MetricsLog:
    """``metrics.jsonl``: one JSON line per epoch and split, appended and flushed as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
