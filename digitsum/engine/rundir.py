"""The run directory: everything a run leaves behind, each file written atomically."""

from __future__ import annotations

import fnmatch
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import read_json, write_json

#: Version of the run-directory layout, recorded in summary.json and checkpoint.pt and checked
#: on reading. 2: checkpoints hold the position within an epoch, RNG states and running tallies.
RUN_FORMAT = 2

#: The files a run writes; ``--force`` replaces a folder only when it looks like a run.
RUN_FILES = ("recipe.toml", "metrics.jsonl", "checkpoint.pt", "summary.json")

#: The marker digitsum writes into every folder it makes a run in, and alone writes: ``--force``
#: replaces a folder only when it carries one, and removes only the files the marker claims.
MARKER = ".digitsum-run"
#: What ``[init]`` loaded, skipped and newly initialised (a run that starts from weights).
INIT_FILE = "init.json"
#: What a run writes: RUN_FILES claimed by the marker from the start, the others (pictures, what
#: ``[init]`` loaded) in its ``outputs`` once written (a marker without ``recorded`` is older
#: and claimed them all from the start).
OWN_FILES = (*RUN_FILES, "curves.png", "samples.png", INIT_FILE)


def _claimed(data: dict[str, Any]) -> set[str]:
    """The names a marker claims for digitsum: the run's files and what it recorded as written."""
    return {*(RUN_FILES if data.get("recorded") else OWN_FILES), *(n for n in data["outputs"] if isinstance(n, str))}


def run_status(path: Path) -> str | None:
    """``"finished"`` or ``"unfinished"`` for a run directory, ``None`` for any other folder;
    read from summary.json alone (no torch)."""
    if not (path / "recipe.toml").is_file():
        return None
    summary = read_json(path / "summary.json")
    done = isinstance(summary, dict) and "stopped" not in summary and "failed" not in summary
    return "finished" if done else "unfinished"


def _marker(path: Path) -> dict[str, Any] | None:
    """The ownership marker of ``path`` as written by digitsum, or None (absent, a link, foreign)."""
    marker = path / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    data = read_json(marker)
    if not isinstance(data, dict) or data.get("written_by") != "digitsum" or not isinstance(data.get("outputs"), list):
        return None
    return data


def owned(path: Path) -> bool:
    """Whether ``path`` is a folder digitsum made a run in (it carries digitsum's marker)."""
    return path.is_dir() and not path.is_symlink() and _marker(path) is not None


def entries(run_dir: Path | None) -> set[str]:
    """The names in ``run_dir`` (none for None or a folder not there yet), digitsum's marker and lock aside."""
    try:
        return _entries(run_dir) if run_dir is not None else set()
    except OSError:
        return set()


def matching(names: set[str], patterns: Iterable[str]) -> set[str]:
    """Those of ``names`` that one of ``patterns`` (a callback's ``writes``: a name, or a glob
    pattern such as ``events.out.tfevents.*``) names."""
    patterns = tuple(patterns)
    return {name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)}


def record_outputs(run_dir: Path, new: set[str]) -> None:
    """Claim, in the marker, the entries ``new`` of ``run_dir``: those a callback's hook created
    under a name its ``writes`` declares (the run's: ``--force`` removes them with it). Whatever
    else appears in the folder meanwhile, a user's notes, is never claimed: it stays theirs."""
    data = _marker(run_dir)
    if data is None:
        return
    new = new - set(data.get("foreign", []))
    recorded = _folders(data)
    folders = dict(recorded)
    for name in new - set(folders):  # a folder is removed only if it is still this one (see _clear)
        child = run_dir / name
        if child.is_dir() and not child.is_symlink():
            folders[name] = _identity(child)
    if new - set(data["outputs"]) or folders != recorded:
        write_json(run_dir / MARKER, {**data, "outputs": sorted(set(data["outputs"]) | new), "folders": folders})


def _identity(path: Path) -> list[int]:
    """Which folder ``path`` is (device and inode): a folder made later under the same name,
    or one a marker edited by hand names, is another."""
    info = path.stat()
    return [info.st_dev, info.st_ino]


def _folders(data: dict[str, Any]) -> dict[str, list[int]]:
    """The folders a marker claims, with their identities (none in an older marker: its folders stay)."""
    listed = data.get("folders")
    return {k: v for k, v in listed.items() if isinstance(k, str) and isinstance(v, list)} if isinstance(listed, dict) else {}


def unclaimed(run_dir: Path) -> set[str]:
    """The entries of a run directory its marker neither claims for the run nor lists as a user's."""
    data = _marker(run_dir)
    if data is None:
        return set()
    claimed = _claimed(data) | _foreign(data)
    return {name for name in _entries(run_dir) - claimed if not (name.startswith(".") and name.endswith(".tmp"))}


def keep_foreign(run_dir: Path) -> None:
    """Note, in the marker, the entries of ``run_dir`` that neither digitsum nor the run wrote
    (a user's notes put beside a stopped run): a resume takes the folder again, and what is there
    then stays the user's, never removed by ``--force``."""
    data = _marker(run_dir)
    if data is None:
        return
    foreign = _foreign(data)
    if found := unclaimed(run_dir):
        write_json(run_dir / MARKER, {**data, "foreign": sorted(foreign | found)})


def users_files(run_dir: Path, names: set[str]) -> list[str]:
    """Those of ``names`` that are a user's entries in the run directory ``run_dir``: there, and
    not claimed by its marker as digitsum's (or listed as there before the run took the folder),
    so neither a resume nor ``--force`` removes them: a run must not write over them either."""
    data = _marker(run_dir) if run_dir.is_dir() else None
    if data is None:
        return []
    odd = {n for n in OWN_FILES if _not_a_file_of_ours(run_dir / n)}
    return sorted(names & (entries(run_dir) - (_claimed(data) - _foreign(data) - odd)))


def _foreign(data: dict[str, Any]) -> set[str]:
    """The names a marker lists as the user's (a marker edited by hand: its names only)."""
    listed = data.get("foreign")
    return {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()


def _not_a_file_of_ours(child: Path) -> bool:
    """Whether ``child``, named like one of OWN_FILES, is someone else's: digitsum writes those
    as files, so a folder or a link of such a name is not digitsum's."""
    return child.is_symlink() or not child.is_file()


def _clear(path: Path) -> None:
    """Remove what digitsum wrote into the run directory ``path`` and nothing else."""
    data = _marker(path)
    assert data is not None
    names, folders = _claimed(data) - set(data.get("foreign", [])), _folders(data)
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            continue  # a marker edited by hand names only entries of this folder
        child = path / name
        if name in OWN_FILES and _not_a_file_of_ours(child):
            continue
        if child.is_dir() and not child.is_symlink():
            # removed with all it holds only if it is the very folder the run made: a marker
            # edited by hand (a shared folder's) that names a folder of the user's claims nothing
            if folders.get(name) == _identity(child):
                shutil.rmtree(child)
        elif child.exists() or child.is_symlink():
            child.unlink()
    remove_temporary_files(path)


def choose_run_dir(out: str | Path, force: bool = False) -> Path:
    """``out`` exactly: a folder that is new, empty, or (with ``force``) a run directory digitsum
    made, to replace. Writes nothing (a timestamped folder is :func:`new_run_dir`'s)."""
    path = Path(out)
    if path.is_symlink():
        raise UserError(f"output folder {path} is a symbolic link; choose another --out")
    if path.exists() and not path.is_dir():
        raise UserError(f"output folder {path} is a file; choose another --out")
    if not path.exists() or not any(path.iterdir()):
        return path
    status = run_status(path) if owned(path) else None
    if force and status is not None:
        return path
    if status == "finished":
        raise UserError(
            f"{path} holds a finished run; pass --force (from Python: force=True) to overwrite it, or choose another --out"
        )
    if status == "unfinished":
        raise UserError(
            f"{path} holds an unfinished run; continue it with: digitsum run --resume {path} "
            f"(from Python: digitsum.resume({str(path)!r}))\nor pass --force (force=True) to start it over"
        )
    raise UserError(
        f"output folder {path} already exists and is not a run directory digitsum made; choose another "
        "--out (a new or empty folder). digitsum replaces nothing it did not write"
    )


#: The lock file of a run directory: held (``flock``) by the process writing the run, and
#: naming it (pid and host) for the message a second writer gets.
LOCK = ".digitsum-lock"
_held: dict[Path, int] = {}  # run directory -> the open lock file's descriptor, in this process


def lock(path: Path) -> None:
    """Hold ``path``'s lock for this process until :func:`unlock` (or the process ends): a second
    writer, in any process, is refused at once with a message naming the holder."""
    key = path.resolve()
    if key in _held:
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as e:
        raise UserError(f"cannot lock the run directory {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe or a device named like the lock: no file digitsum made
        os.close(fd)
        raise UserError(f"cannot lock the run directory {path}: {path / LOCK} is not a regular file (a pipe or a device); "
                        "digitsum writes a plain file there: remove it")  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"{path} is being written by {holder}; wait for that run to end, or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
    _held[key] = fd


def unlock(path: Path) -> None:
    """Release the lock :func:`lock` took on ``path``: the file stays, unlocked and emptied (it
    named the holder; a process that ends without this leaves its name, and the lock released)."""
    fd = _held.pop(path.resolve(), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)


def prepare_run_dir(path: Path) -> Path:
    """Create ``path`` (first removing what digitsum wrote there, if it holds a run digitsum made),
    mark it as digitsum's, lock it for this process and check that it is writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock(path)
        if owned(path) and run_status(path) is not None:
            _clear(path)
        mark(path)
    except OSError as e:
        raise UserError(f"cannot write the run directory {path}: {e.strerror or e}") from None
    return path


def mark(path: Path) -> None:
    """Write digitsum's marker into the existing folder ``path``, noting what was there before."""
    from .. import __version__

    write_json(path / MARKER, {"written_by": "digitsum", "version": __version__, "foreign": sorted(_entries(path)), "outputs": [],
                               "recorded": True})  # fmt: skip


def _entries(path: Path) -> set[str]:
    """The names in ``path`` other than digitsum's marker and lock."""
    return {p.name for p in path.iterdir()} - {MARKER, LOCK}


def create_run_dir(recipe_name: str, out: str | Path | None, force: bool = False) -> Path:
    """``out`` exactly, or ``runs/<recipe>/<timestamp>/``; never an existing non-empty folder,
    except a run directory digitsum made, replaced with ``force``."""
    return prepare_run_dir(run_dir_for(recipe_name, out, force))


def run_dir_for(recipe_name: str, out: str | Path | None, force: bool = False) -> Path:
    """The run directory a run of ``recipe_name`` gets: ``out`` (:func:`choose_run_dir`), or a new
    timestamped folder (:func:`new_run_dir`)."""
    return new_run_dir(recipe_name) if out is None else choose_run_dir(out, force)


def new_run_dir(recipe_name: str) -> Path:
    """A new ``runs/<recipe>/<timestamp>/`` (``<timestamp>-2``, ``-3``... when taken), made at
    once (empty), so that runs started in the same second, in other processes, each get their
    own; :func:`unmake` removes it again."""
    stamp, suffix = time.strftime("%Y%m%d-%H%M%S"), 1
    while True:
        path = Path("runs") / recipe_name / (stamp if suffix == 1 else f"{stamp}-{suffix}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # an earlier run, or another process, has this name
            suffix += 1
        except OSError as e:
            raise UserError(f"cannot write the run directory {path}: {e.strerror or e}") from None


def unmake(path: Path) -> None:
    """Remove the folder :func:`new_run_dir` made, and its parents up to ``runs/``, where empty."""
    for folder in (path, path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            return


def withdraw(path: Path) -> None:
    """Take back a run directory whose run never trained: what digitsum wrote there, its marker
    and its lock, then the folder where nothing else is left (a user's files stay, and their folder)."""
    if _marker(path) is None:
        return
    _clear(path)
    unlock(path)
    for name in (MARKER, LOCK):
        (path / name).unlink(missing_ok=True)
    try:
        path.rmdir()
    except OSError:  # the user's files are there
        pass


def remove_temporary_files(run_dir: Path) -> None:
    """Remove what an atomic write killed mid-way left behind (``.<name>.*.tmp``)."""
    for name in RUN_FILES:
        for stale in run_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
