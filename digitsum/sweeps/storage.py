"""Where a study lives and who may write where: Optuna storages (journal files, database URLs,
their passwords kept out of every message and file), the lock workers ask for trials under, and
the one study a sweep folder belongs to."""

from __future__ import annotations

import contextlib
import json
import os
import re
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError, install_command
from ..files import parse_json, read_bytes, read_json, write_text

#: The file naming the study a sweep folder belongs to (its trials, best.toml, sweep.json).
MARKER = ".digitsum-sweep"
#: The storage a sweep folder's marker records when no --storage was given: the folder's own
#: journal, wherever the folder has moved since.
DEFAULT = "default"
#: ``user:password@`` in a URL (``postgresql://sweeper:secret@host/db``).
_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")


def require_optuna() -> Any:
    """Optuna, imported (quietly) on first use: a UserError naming the extra when it is missing."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise UserError(f"digitsum sweep needs optuna, which is not installed: {install_command('sweep')}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def redact(text: str) -> str:
    """``text`` with the password of every URL in it hidden: ``user:password@`` -> ``user:***@``."""
    return _PASSWORD.sub(r"\1:***@", text)


def default_storage(sweep_dir: Path) -> str:
    """The storage of a sweep given no ``--storage``: a journal file in its directory."""
    return f"journal:{Path(sweep_dir).resolve() / 'study.journal'}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: ``journal:PATH`` (or a path ending ``.journal``) is a
    journal file several processes share (on one machine, or on shared storage); anything else
    is an RDB URL (``sqlite:///study.db``, ``postgresql://user:pass@host/db``)."""
    optuna = require_optuna()
    where = f"--storage {redact(url)!r}"
    if url.startswith("journal:") or url.endswith(".journal"):
        path = Path(url.removeprefix("journal:")).expanduser()
        # JournalFileBackend since optuna 4.0, JournalFileStorage before
        backend = getattr(optuna.storages.journal, "JournalFileBackend", None) or optuna.storages.JournalFileStorage
        _check_journal(path, where)
        with storage_access(url):
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(backend(str(path)))
    if "://" not in url:
        raise UserError(f"{where}: an Optuna storage URL (sqlite:///PATH, postgresql://...) or journal:PATH")
    base, _, query = url.partition("?")
    if base in ("sqlite://", "sqlite:///", "sqlite:///:memory:") or "mode=memory" in query:  # SQLite's ways to say memory
        raise UserError(f"{where} is a database in one process's memory: the sweep's workers, its report and a later "
                        "continuation could not see it. Give a file: sqlite:///sweep.db, or journal:PATH")  # fmt: skip
    try:
        return optuna.storages.RDBStorage(url)
    except ImportError as e:  # a database driver missing, e.g. psycopg2 for postgresql://
        raise UserError(f"{where} needs a database driver that is not installed: {redact(str(e))}") from None
    except Exception as e:  # a database that cannot be reached: the user's setup, not a bug
        first = str(e).splitlines()[0] if str(e) else ""  # SQLAlchemy appends the SQL and a link
        raise UserError(f"{where}: cannot open the study's database: {type(e).__name__}: {redact(first)}") from None


def _check_journal(path: Path, where: str) -> None:
    """Refuse a file that is no Optuna journal before Optuna appends to it (a user's notes given
    as ``journal:notes.txt`` were written into, then failed to replay): its first line must be a
    journal entry, a JSON table with an ``op_code``. A new or empty file is fine."""
    try:
        if not path.exists() or path.is_dir():
            return  # Optuna says what is wrong with a folder
        first = read_bytes(path)[: 1 << 20].split(b"\n", 1)[0]
    except OSError as e:
        raise UserError(f"{where}: cannot read {path}: {e.strerror or e}") from None
    if not first.strip():
        return
    try:
        entry = parse_json(first)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or "op_code" not in entry:
        raise UserError(f"{where}: {path} is not an Optuna journal (its first line is no journal entry); give a new file, "
                        "or the journal of an earlier sweep to continue it")  # fmt: skip


def claim(sweep_dir: Path, study: str, storage: str = DEFAULT) -> None:
    """Make ``sweep_dir`` the folder of ``study`` kept in ``storage`` (:func:`check_claim`, then
    its marker)."""
    check_claim(sweep_dir, study, storage)
    write_text(sweep_dir / MARKER, json.dumps({"study": study, "storage": storage}) + "\n")


def check_claim(sweep_dir: Path, study: str, storage: str = DEFAULT) -> None:
    """Refuse ``sweep_dir`` when it holds another study's sweep (its ``trial-NNNN``, ``best.toml``
    and ``sweep.json`` would be replaced), found by the marker or by the ``sweep.json`` of a sweep
    made before there was one; or the same study kept in another storage (``storage``: the
    ``--storage`` given, password left out, or DEFAULT), whose trials would be numbered from 0
    again over these; or a folder of other files digitsum did not write."""
    if not sweep_dir.is_dir():
        return
    owner: dict[str, Any] = {}
    for path in (sweep_dir / MARKER, sweep_dir / "sweep.json"):
        found = read_json(path)
        if isinstance(found, dict) and isinstance(found.get("study"), str):
            owner = found
            break
    if owner and owner["study"] != study:
        raise UserError(f"{sweep_dir} holds the sweep of study {owner['study']!r} (its trials, best.toml and sweep.json): "
                        f"continue that one with --study {owner['study']}, or give study {study!r} another --out")  # fmt: skip
    kept = owner.get("storage")
    if isinstance(kept, str) and kept != storage:
        given = "no --storage (the folder's own journal)" if storage == DEFAULT else f"--storage {storage!r}"
        where = "its own journal (no --storage)" if kept == DEFAULT else f"--storage {kept!r}"
        raise UserError(f"{sweep_dir} holds the trials of study {study!r} kept in {where}; with {given} its trials would be "
                        "numbered from 0 again over them: continue it with that storage, or give this sweep another --out")  # fmt: skip
    if not owner and (others := sorted({p.name for p in sweep_dir.iterdir()} - _STARTED)):
        raise UserError(f"output folder {sweep_dir} already exists and is not a sweep folder digitsum made (it holds "
                        f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); choose another --out (a new or empty "
                        "folder). digitsum replaces nothing it did not write")  # fmt: skip


#: What a sweep folder holds before it is claimed: the default journal the storage just opened
#: (and its lock), and the lock a worker asks under.
_STARTED = {MARKER, "study.journal", "study.journal.lock", ".ask.lock"}


@contextlib.contextmanager
def lock(sweep_dir: Path) -> Iterator[None]:
    """An exclusive lock on the sweep directory while a worker counts trials and asks for one, so
    that workers on one machine never start more than ``trials`` (a no-op where there is no flock)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(sweep_dir / ".ask.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed, whatever happens
        yield


@contextlib.contextmanager
def storage_access(url: str) -> Iterator[None]:
    """The storage's own failures (a read-only database or folder, a full disk, a lost server)
    as a UserError naming the storage, its password left out."""
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"--storage {redact(url)!r}: {e.strerror or e}{f': {e.filename}' if e.filename else ''}") from None
    except Exception as e:
        if not (type(e).__module__.startswith(("sqlalchemy", "sqlite3", "optuna.storages")) or _raised_in_storage(e)):
            raise
        detail = redact(str(e).splitlines()[0] if str(e) else type(e).__name__)
        if url.startswith("journal:") or url.endswith(".journal"):  # optuna replays the file line by line
            raise UserError(f"--storage {redact(url)!r} is not an Optuna journal, or it is damaged ({type(e).__name__}: {detail}); "
                            "if its last line was cut off by a crash, remove that line to continue the study") from None  # fmt: skip
        raise UserError(f"--storage {redact(url)!r}: the study's storage failed: {detail}") from None


def _raised_in_storage(error: BaseException) -> bool:
    """Whether Optuna's storage code raised ``error`` (a builtin error, such as a JSONDecodeError
    or a KeyError, where it replays a journal that is no journal)."""
    marker = f"{os.sep}optuna{os.sep}storages{os.sep}"
    return any(marker in frame.f_code.co_filename for frame, _ in traceback.walk_tb(error.__traceback__))
