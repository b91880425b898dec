"""Writing files atomically: the previous version or the whole new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import UserError, clipped, shown_repr


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it over.

    Either the old file or the whole new one is there afterwards, whatever happens meanwhile
    (a full disk, a signal): a failed write leaves no temporary file and raises a UserError.
    Only a file (or a link, itself replaced) is ever replaced: a pipe, a socket or a device at
    ``path`` is refused (as root, ``--force`` onto ``/dev/full`` replaced the device).
    """
    try:
        mode = path.lstat().st_mode
    except OSError:  # nothing there (or not reachable: mkstemp below says why)
        mode = stat.S_IFREG
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):  # a folder: os.replace refuses it
        raise UserError(f"cannot write {path}: it is not a regular file (a pipe, a socket or a device); digitsum replaces files only")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes it owner-only; the file should look like any other
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(e, path.parent)
        if cause is not None:
            raise UserError(f"cannot write {path}: {cause.strerror or cause}; the previous version, if any, is intact") from None
        raise


def _os_error(error: BaseException, folder: Path) -> OSError | None:
    """The OS error behind a failed write: ``error`` itself, the OSError it wraps (``torch.save``
    turns a full disk into ``RuntimeError: ... unexpected pos``, raised while handling it), or,
    for a wrapper that lost it, ENOSPC when ``folder``'s file system has no space left."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if not isinstance(error, Exception):
        return None  # KeyboardInterrupt, SystemExit: not a failed write
    try:
        full = os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if full else None


def _file_mode(path: Path) -> int:
    """The mode a new file gets from ``open`` (0o666 less the umask), or the replaced file's own."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def file_in_the_way(folder: Path) -> Path | None:
    """The file, if any, at ``folder`` or at a folder above it: what keeps ``folder`` from being made."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def why_not_made(folder: Path, error: OSError) -> str:
    """Why ``folder`` could not be made: a file in its way, named, else the system's reason."""
    blocked = file_in_the_way(folder)
    return f"{blocked} is a file, not a folder" if blocked is not None else (error.strerror or str(error))


def path_arg(value: Any, what: str, *, optional: bool = False) -> str | os.PathLike[str] | None:
    """``value``, an argument ``what`` of the Python API, when it is a path (a str or an
    os.PathLike, returned as given: ``"out/"`` keeps its slash), or None where ``optional``; a
    UserError naming the argument otherwise (pathlib's TypeError names nothing)."""
    if (isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes)) or (optional and value is None):
        return value
    raise UserError(f"{what}: a path (a str or a pathlib.Path), not {clipped(shown_repr(value))} ({type(value).__name__})")


def read_bytes(path: Path) -> bytes:
    """The bytes of the regular file ``path`` (a link to one is followed). A pipe, a socket or a
    device is refused with an OSError (EINVAL) before anything is read: opened without blocking,
    so that a FIFO named like a file digitsum reads back never hangs it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe, a socket or a device)", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return f.read()


def read_text(path: Path) -> str:
    """:func:`read_bytes` as UTF-8 text (a UnicodeDecodeError, a ValueError, where it is not)."""
    return read_bytes(path).decode("utf-8")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, where a document nested too deep for the parser (a hostile file: a
    ``[[[...]]]`` 100,000 deep) is a ValueError like any other malformed one, not a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def is_plain(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance``, except that a bool is not a number."""
    return isinstance(value, kind) and not isinstance(value, bool)


_TYPE_NAMES = {str: "a string", int: "an integer", (int, float): "a number", dict: "a table", list: "a list"}


def field_problems(data: dict[str, Any], fields: dict[str, type | tuple[type, ...]], required: Any = ()) -> list[str]:
    """``'key' is missing`` for each ``required`` key ``data`` lacks, ``'key' should be a table``
    (...) for each key of ``fields`` it holds as another type."""
    keys = dict.fromkeys([*fields, *required])  # a required key without a type is still required
    return [f"'{key}' is missing" if key not in data else f"'{key}' should be {_TYPE_NAMES[fields[key]]}" for key in keys
            if (key not in data and key in required) or (key in data and key in fields and not is_plain(data[key], fields[key]))]  # fmt: skip


def is_metrics(value: Any) -> bool:
    """Whether ``value`` is one split's metrics, ``{head: {metric: number}}``."""
    return isinstance(value, dict) and all(isinstance(head, str) and isinstance(metrics, dict) and all(
        isinstance(k, str) and is_plain(v, (int, float)) for k, v in metrics.items()) for head, metrics in value.items())


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; None when it is missing, unreadable or not JSON."""
    try:
        return parse_json(read_text(path))
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` as CSV with a header of ``columns``, atomically."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def metric_text(value: float | None) -> str:
    """A metric in a table: four decimals, blank when there is none."""
    return "" if value is None else f"{value:.4f}"


class MetricsLog:
    """``metrics.jsonl``: one JSON line per epoch and split.

    Each append rewrites the (small) file atomically, so a full disk or a kill never leaves
    half a line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        """The whole records in the file (a torn or foreign line, or one that is not UTF-8 text,
        is skipped)."""
        try:
            lines = read_bytes(self.path).splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = parse_json(line.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError included
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def flat_records(self) -> list[dict[str, Any]]:
        """:meth:`records` with each head's metrics as ``head.metric`` keys (``digit.accuracy``)."""
        return [flat_record(r) for r in self.records()]

    def append(self, record: dict[str, Any]) -> None:
        self._write(self.records() + [record])

    def keep_epochs(self, epochs: int) -> None:
        """Drop the records of epochs after ``epochs`` (a resumed run logs them again)."""
        records = self.records()
        kept = [r for r in records if isinstance(r.get("epoch"), int) and r["epoch"] <= epochs]
        if kept != records or (self.path.exists() and not kept):
            self._write(kept)

    def _write(self, records: list[dict[str, Any]]) -> None:
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))


def flat_record(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record with each head's metrics as ``head.metric`` keys."""
    flat = {k: v for k, v in record.items() if k != "heads"}
    for head, values in (record.get("heads") or {}).items():
        flat.update({f"{head}.{metric}": value for metric, value in values.items()})
    return flat
