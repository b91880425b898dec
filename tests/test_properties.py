"""Property tests: any recipe document and any --set ends in exit 0 or exit 2 with a message,
never a traceback (an exception escaping the CLI's error handling); so do any field of a
checkpoint (eval, --resume) and any input given to predict (API: a UserError or an answer)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitsum.cli import main

from .conftest import RECIPES

BASE = tomllib.loads((RECIPES / "original.toml").read_text())
KNOWN_KEYS = sorted(
    {"name", "description", "seed", "extends", "data", "backbone", "heads", "train", "provenance", "type", "target",
     "weight", "batch_size", "root", "download", "normalize", "numbers", "conv_channels", "hidden", "epochs",
     "optimizer", "lr", "weight_decay", "momentum", "schedule", "device", "checkpoint_every", "digit", "sum"}
)  # fmt: skip
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=12))
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["single_digit", "concat", "classify", "digit", "sum", "adam", "onecycle", "cpu", "../x", "/", "", "."]),
    st.text(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12)


@st.composite
def recipe_documents(draw) -> dict:
    """The shipped recipe with random keys set, replaced or deleted, at any depth."""
    doc = tomllib.loads(tomli_w.dumps(BASE))
    for _ in range(draw(st.integers(1, 5))):
        table = doc
        for _depth in range(draw(st.integers(0, 2))):
            tables = [k for k, v in table.items() if isinstance(v, dict)]
            if not tables:
                break
            table = table[draw(st.sampled_from(tables))]
        key = draw(keys)
        if table and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(table)))
            if draw(st.integers(0, 3)) == 0:
                del table[key]
                continue
        table[key] = draw(values)
    return doc


def invoke(*args: str) -> tuple[int, str]:
    """The console entry point in-process: its exit code and its stderr."""
    err, old_argv = io.StringIO(), sys.argv
    sys.argv = ["digitsum", *map(str, args)]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
    return code, err.getvalue()


def check(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.strip(), "exit 2 without a message"


@SETTINGS
@given(doc=recipe_documents())
def test_any_recipe_document_is_accepted_or_refused_cleanly(tmp_path: Path, doc: dict) -> None:
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(doc))
    check(*invoke("show", path))


@SETTINGS
@given(text=st.text(max_size=200))
def test_any_text_as_a_recipe_is_accepted_or_refused_cleanly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check(*invoke("show", path))


@SETTINGS
@given(parent=st.one_of(st.text(max_size=30), st.sampled_from(["\x00", "/dev", "..", "r.toml", "/dev/null", "~"])))
def test_any_extends_is_accepted_or_refused_cleanly(tmp_path: Path, parent: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps({"extends": parent, **BASE}))
    check(*invoke("show", path))


set_texts = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda path, sep, value: ".".join(path) + sep + value,
        st.lists(keys, min_size=1, max_size=4),
        st.sampled_from(["=", " = ", "==", ""]),
        st.one_of(st.text(max_size=20), st.sampled_from(["1", "-1", "0", "1e999", "nan", "true", "[1, 2]", "{a = 1}", '"x"', "'../..'", "[", "}"])),
    ),
)


@SETTINGS
@given(overrides=st.lists(set_texts, min_size=1, max_size=4))
def test_any_set_value_is_accepted_or_refused_cleanly(overrides: list[str]) -> None:
    args = [arg for text in overrides for arg in ("--set", text)]
    check(*invoke("show", RECIPES / "original.toml", *args))


# -- resource limits and names (issue 26) ----------------------------------------------------------

nestings = st.builds(lambda depth, opener: (opener, depth), st.integers(0, 2000), st.sampled_from(["[", "{a = ", "t."]))


def _nested(opener: str, depth: int) -> str:
    if opener == "t.":
        return "[train.optimizer." + ".".join(["t"] * max(depth, 1)) + "]\nx = 1\n"
    closer = "]" if opener == "[" else "}"
    return "[train.optimizer]\nx = " + opener * depth + "1" + closer * depth + "\n"


@SETTINGS
@given(nesting=nestings)
def test_any_nesting_is_accepted_or_refused_cleanly(tmp_path: Path, nesting: tuple[str, int]) -> None:
    opener, depth = nesting
    doc = {k: v for k, v in BASE.items() if k != "train"}
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(doc) + _nested(opener, depth))
    code, err = invoke("show", path)
    check(code, err)
    if depth > 40:  # x under train.optimizer: 3 levels more than the nesting itself
        assert "nested more than 32 levels deep" in err


@SETTINGS
@given(name=st.text(max_size=80), table=st.sampled_from(["heads", "log"]))
def test_a_head_or_logger_name_is_an_identifier_or_refused(tmp_path: Path, name: str, table: str) -> None:
    doc = tomllib.loads(tomli_w.dumps(BASE))
    doc.setdefault(table, {})[name] = {"target": "sum"} if table == "heads" else {"type": "csv"}
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8", errors="surrogatepass")
    code, err = invoke("show", path)
    check(code, err)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        assert code == 2 and "name must be 1-64 ASCII letters" in err and "\x1b" not in err


@SETTINGS
@given(path=st.lists(keys, min_size=1, max_size=60), nesting=nestings)
def test_any_set_path_and_nesting_is_accepted_or_refused_cleanly(path: list[str], nesting: tuple[str, int]) -> None:
    opener, depth = nesting
    value = "1" if opener == "t." else opener * depth + "1" + ("]" if opener == "[" else "}") * depth
    check(*invoke("show", RECIPES / "original.toml", "--set", ".".join(path) + "=" + value))


# -- checkpoint fields and predict inputs (issue 26) -------------------------------------------------------
FAST = settings(max_examples=25, deadline=20_000, suppress_health_check=[HealthCheck.function_scoped_fixture])

tensors = st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 4), max_size=3),
    st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8, torch.bool]),
)
json_ish = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10), tensors),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def checkpoint_changes(draw) -> tuple[list[str], object]:
    """A path to a field of a checkpoint (top level, or one level into a table) and a new value."""
    top = draw(st.sampled_from(["format", "epoch", "step", "model", "optimizer", "scheduler", "rng", "tally",
                                "history", "epoch_seconds", "seconds", "recipe", "new"]))  # fmt: skip
    path = [top]
    if top in ("model", "optimizer", "recipe", "tally") and draw(st.booleans()):
        path.append(draw(st.sampled_from(["state", "param_groups", "train", "heads", "backbone.linear.weight", "x"])))
    return path, draw(json_ish)


@FAST
@given(change=checkpoint_changes(), command=st.sampled_from(["eval", "resume"]))
def test_any_checkpoint_field_is_accepted_or_refused_cleanly(tmp_path_factory, tiny_run, change, command) -> None:
    run = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(tiny_run.run_dir, run)
    (run / "summary.json").unlink()  # --resume of a checkpoint at the last epoch: it writes the summary only
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    path, value = change
    table = state
    for key in path[:-1]:
        table = table.setdefault(key, {}) if isinstance(table.get(key), dict) else table
    table[path[-1]] = value
    torch.save(state, run / "checkpoint.pt")
    code, err = invoke(*(["eval", run] if command == "eval" else ["run", "--resume", run]))
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.strip()


@pytest.fixture(scope="module")
def tiny_model(tiny_run):
    import digitsum

    return digitsum.load(tiny_run.run_dir)


def _array(shape: list[int], dtype: type, fill: float) -> np.ndarray:
    with np.errstate(all="ignore"):  # a fill that overflows the dtype is part of the point
        return np.full(shape, fill).astype(dtype)


arrays = st.builds(
    _array,
    st.lists(st.integers(0, 40), max_size=5),
    st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, np.float16, np.complex64, object]),
    st.one_of(st.integers(-300, 300), st.floats()),
)
images = st.one_of(
    st.text(max_size=30).map(lambda t: f"/nonexistent/{t}"),
    arrays,
    st.lists(st.lists(st.integers(0, 255), max_size=30), max_size=30),
    st.lists(arrays, max_size=3),
    st.none(), st.integers(), st.binary(max_size=20),
)  # fmt: skip
numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10), st.booleans(), st.none(),
    st.lists(st.integers(-(2**70), 2**70), max_size=5), arrays,
)  # fmt: skip


@FAST
@given(image=images, number=numbers)
def test_any_predict_input_succeeds_or_is_a_user_error(tiny_model, image, number) -> None:
    from digitsum.errors import UserError

    try:
        tiny_model.predict(image=image, number=number)
    except UserError as e:
        assert e.message.strip()


@FAST
@given(image=st.one_of(st.text(max_size=30), st.sampled_from(["", "/", "/dev/null", ".", "-"])), numbers=st.lists(st.text(max_size=12), min_size=1, max_size=3))
def test_any_predict_argument_is_accepted_or_refused_cleanly(tiny_run, image, numbers) -> None:
    args = ["predict", tiny_run.run_dir, "--input", f"image={image}", *(a for n in numbers for a in ("--input", f"number={n}"))]
    code, err = invoke(*args)
    check(code, err)
