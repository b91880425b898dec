"""Property tests: any recipe document and any --set ends in exit 0 or exit 2 with a message,
never a traceback (an exception escaping the CLI's error handling)."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tomllib
from pathlib import Path

import tomli_w
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
        assert code == 2 and "name must be 1-64 letters" in err and "\x1b" not in err


@SETTINGS
@given(path=st.lists(keys, min_size=1, max_size=60), nesting=nestings)
def test_any_set_path_and_nesting_is_accepted_or_refused_cleanly(path: list[str], nesting: tuple[str, int]) -> None:
    opener, depth = nesting
    value = "1" if opener == "t." else opener * depth + "1" + ("]" if opener == "[" else "}") * depth
    check(*invoke("show", RECIPES / "original.toml", "--set", ".".join(path) + "=" + value))
