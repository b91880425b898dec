"""docs/plugins.md's tutorial, followed step by step: every shell command and every file it
shows, in order, in a temporary folder. A step the test does not know how to follow fails it,
so the tutorial cannot gain an untested step."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

from digitsum.testing import write_tiny_mnist

from .conftest import REPO, run_subprocess
from .test_scaffold import install_editable

DOC = REPO / "docs" / "plugins.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
PUBLISHING = {"python -m pip install build twine", "python -m build", "python -m twine upload dist/*"}


def tutorial_blocks() -> list[tuple[str, str]]:
    """(info string, body) of each fenced block between '## Tutorial' and '## Reference'."""
    text = DOC.read_text(encoding="utf-8")
    tutorial = text[text.index("\n## Tutorial") : text.index("\n## Reference")]
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(tutorial)]


def test_the_tutorial_works_as_written(tmp_path):
    # 1024 samples: the tutorial's batch size of 128 gives 8 steps (OneCycleLR needs more than 4)
    tiny_root = write_tiny_mnist(tmp_path / "mnist", n_train=1024)
    cwd, path_entries, ran = tmp_path, [], []
    env = lambda: {"PYTHONPATH": os.pathsep.join(map(str, path_entries)), "DIGITSUM_DATA": str(tiny_root)}  # noqa: E731
    for info, body in tutorial_blocks():
        if info.startswith("python file="):
            target = cwd / info.removeprefix("python file=")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
            ran.append(f"write {target.name}")
        elif info == "toml" and "[project.entry-points" in body:
            assert body.strip() in (cwd / "pyproject.toml").read_text(), "the pyproject snippet differs from the scaffold's"
        elif info == "bash":
            for line in filter(None, (line.strip() for line in body.splitlines())):
                cwd = follow(line, cwd, path_entries, env, tmp_path)
                ran.append(line)
    assert ran[:2] == ["digitsum new-plugin digitsum-gated --kind fusion", "cd digitsum-gated"]
    assert {'pip install -e ".[test]"', "python -m pytest", "write fusion.py", "write test_gate.py"} <= set(ran)


def follow(line: str, cwd: Path, path_entries: list, env, tmp_path: Path) -> Path:
    """Carry out one tutorial command in the test's sandbox; return the new working folder."""
    words = shlex.split(line)
    if words[0] == "cd":
        return cwd / words[1]
    if line == 'pip install -e ".[test]"':  # pytest is already here: the extra needs no network
        path_entries[:] = install_editable(cwd, tmp_path / "site")
    elif words[0] == "digitsum":
        result = run_subprocess(*words[1:], env=env(), cwd=cwd)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        if words[1:] == ["plugins"]:
            assert re.search(r"digitsum-gated\s*│\s*0\.1\.0\s*│\s*ok", result.stdout), result.stdout
        if words[1:3] == ["list", "fusions"]:
            assert "gated_fusion" in result.stdout and "digitsum-gated" in result.stdout
        if words[1] == "run":
            assert "wrote runs/gated/" in result.stdout.replace("\n", "")
    elif line == "python -m pytest":
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=cwd,
                                capture_output=True, text=True, env={**os.environ, **env()}, timeout=600)  # fmt: skip
        assert result.returncode == 0 and "7 passed" in result.stdout, result.stdout[-3000:]
    elif line in PUBLISHING:
        if line == "python -m build":  # no network here: build the wheel pip-style and look inside
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
                           cwd=cwd, check=True, capture_output=True, timeout=300)  # fmt: skip
            (wheel,) = (cwd / "dist").glob("digitsum_gated-0.1.0-*.whl")
            with zipfile.ZipFile(wheel) as z:
                entry_points = z.read("digitsum_gated-0.1.0.dist-info/entry_points.txt").decode()
            assert "gated_fusion = digitsum_gated.fusion:GatedFusion" in entry_points
    else:
        raise AssertionError(f"the tutorial has a step this test does not follow: {line!r}")
    return cwd
