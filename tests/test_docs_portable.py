"""Docs, benchmarks and code name no folder of a particular machine: a fresh clone's reader has no
``/work/shared/data`` nor ``/home/someone``. They say ``$DIGITSUM_DATA``, a relative path, or
make a temporary folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ["README.md", "docs", "benchmarks", "digitsum", "plugins"]

# an absolute path into a home, a scratch or a work folder: /home/x/..., /Users/x/..., /root/...,
# /tmp/..., /work/...; not a URL's path (https://host/home/...) nor a relative one (runs/tmp/...)
MACHINE_PATH = re.compile(r"(?<![\w.~/:-])(?:/(?:home|Users|root|tmp|work)/[\w.-]|[A-Za-z]:\\Users\\)")

# (file, the text holding the path, why it may stay)
ALLOWED: list[tuple[str, str, str]] = []


def tracked_files() -> list[Path]:
    """The files a clone holds under SCANNED (git's list; every file when this is no checkout)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", *SCANNED], cwd=REPO, capture_output=True, check=True).stdout
        files = [REPO / n for n in names.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        files = [p for s in SCANNED for p in ([REPO / s] if (REPO / s).is_file() else (REPO / s).rglob("*")) if p.is_file()]
    return [f for f in files if f.is_file() and "__pycache__" not in f.parts]


def offending_lines() -> list[str]:
    found = []
    for path in tracked_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # a picture or another binary file
        relative = path.relative_to(REPO).as_posix()
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not MACHINE_PATH.search(line):
                continue
            allowed = [text for file, text, _ in ALLOWED if file == relative and text in line]
            if allowed and not MACHINE_PATH.search(line.replace(allowed[0], "")):
                continue
            found.append(f"{relative}:{number}: {line.strip()[:160]}")
    return found


def test_no_absolute_path_of_a_machine():
    found = offending_lines()
    assert not found, "absolute paths of a machine (use $DIGITSUM_DATA, a relative path or tempfile):\n" + "\n".join(found)


def test_the_pattern_finds_what_it_is_for():
    for line in ["DIGITSUM_DATA=/work/shared/data make run", "--out /tmp/exp-run", "cd /home/ann/digitsum",
                 "'/Users/ann/mnist'", "/root/.cache", r"C:\Users\ann\runs"]:  # fmt: skip
        assert MACHINE_PATH.search(line), line
    for line in ["DIGITSUM_DATA=../shared/data", "runs/tmp/x", "~/.cache/digitsum", "https://example.org/home/x",
                 "$XDG_CACHE_HOME/digitsum", "/mnt/shared/sweeps"]:  # fmt: skip
        assert not MACHINE_PATH.search(line), line


def test_every_allowance_is_still_needed():
    """An allowance whose text left its file is removed, so the list never grows stale."""
    for file, text, _ in ALLOWED:
        assert text in (REPO / file).read_text(), f"{file} no longer holds {text}: remove it from ALLOWED"
