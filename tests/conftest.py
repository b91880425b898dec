from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# `make test` runs the suite in two worker processes (pytest-xdist), one per core: each works
# with one thread, set before torch is imported (here, and in every process a test starts),
# since two OpenMP pools of two threads on two cores wait on each other at every step.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from digitsum.testing import write_tiny_mnist

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
#: Recipes whose examples use so many images that the tiny data's 2048 training images make a
#: handful of them (N = 15: 68 examples, 3 steps; N = 100: 10, 1 step), and whose short runs
#: cost a real run's images: checked at N = 2, the rest of the recipe as shipped — but for
#: N = 100's batch of one example, which at N = 2 is 4 images (the doctor's short run: 1600 steps;
#: at add-15's batch of 4 examples, 400).
TINY_OVERRIDES = {"add-15": ["data.n=2"], "add-100": ["data.n=2", "data.batch_size=4"]}
# A few steps on tiny data: each run takes about a second.
TINY = ["--set", "train.epochs=1", "--set", "data.batch_size=64"]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """Keep the listing cache of every test (and its subprocesses) out of the user's cache folder."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_root):
    """``original`` trained for two epochs on the tiny data (a few seconds), shared read-only."""
    import digitsum

    overrides = ["train.epochs=2", "data.batch_size=64", f"data.root='{tiny_root}'", "data.download=false"]
    return digitsum.train(RECIPES / "original.toml", tmp_path_factory.mktemp("tiny-run") / "run", overrides=overrides, progress=False)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """An MLflow tracking store (SQLite) shared by the tests that log to MLflow: MLflow takes
    seconds to create one. Tests using it are skipped where mlflow is not installed."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # the experiments the tests log to, made here so that their artifacts stay in this folder
    # (MLflow's default is ./mlruns in the working folder: the checkout)
    client = MlflowClient(uri)
    for name in ("digitsum", "tests"):
        client.create_experiment(name, artifact_location=(folder / "artifacts" / name).as_uri())
    return uri


@pytest.fixture
def tiny_data(tiny_root, monkeypatch) -> Path:
    """Point digitsum at the tiny data set for this test."""
    monkeypatch.setenv("DIGITSUM_DATA", str(tiny_root))
    return tiny_root


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run the digitsum CLI in-process, as the console script does; returns code and output."""
    from digitsum import cli as app

    def invoke(*args: str) -> Result:
        # the consoles read COLUMNS once, when digitsum.cli is first imported: follow the test's own
        width = int(os.environ.get("COLUMNS", "80"))
        app.console.width = app.err_console.width = width
        old = sys.argv
        sys.argv = ["digitsum", *map(str, args)]
        code = 0
        try:
            app.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = old
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def run_subprocess(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``digitsum`` in a fresh interpreter (what a user's shell does)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "digitsum", *map(str, args)],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )  # fmt: skip


#: The example plugin distribution shipped in the repository (plugins/digitsum-example).
EXAMPLE = REPO / "plugins" / "digitsum-example"


def pip_install_target(source: Path, target: Path) -> Path:
    """``pip install --no-deps --target``: isolated, offline (build with the venv's setuptools)."""
    build = target.parent / f"src-{source.name}"
    shutil.copytree(source, build, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(build)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return target


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """The example plugin installed once per test process into a private folder (read-only: put
    it on PYTHONPATH)."""
    return pip_install_target(EXAMPLE, tmp_path_factory.mktemp("example") / "site")


def fake_distribution(site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
                      modules: dict[str, str] | None = None) -> Path:
    """A minimal installed distribution under ``site`` (put it on PYTHONPATH): modules and
    a ``.dist-info`` with METADATA and entry_points.txt, as pip would leave it."""
    site.mkdir(parents=True, exist_ok=True)
    for relative, source in (modules or {}).items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(source)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in entry_points.items()
    )
    (info / "entry_points.txt").write_text(groups)
    return site


@contextmanager
def registered(registry, name: str, component: type) -> Iterator[str]:
    """``component`` registered as ``name`` for the block (which gets the name), removed after it,
    whatever happens: a test's own component, gone before the next test looks."""
    registry.register(name)(component)
    try:
        yield name
    finally:
        registry.remove(name)
