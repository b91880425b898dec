"""Strict parameter types, one rule for every component of every kind, built-in or plugin: a bool
is not a number, a string is not a number; an integer is a float, an array a tuple or a list."""

from __future__ import annotations

import types
import typing

import pytest

from digitsum.kinds import KINDS
from digitsum.recipe import load_recipe
from digitsum.registry import REGISTRIES
from digitsum.errors import RecipeError

from .conftest import RECIPES, fake_distribution, run_subprocess

ENTRIES = [entry for registry in REGISTRIES.values() for entry in registry.entries()]


def _types(annotation) -> set:
    """The types a field accepts, its unions and ``None`` unwrapped."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {t for arg in typing.get_args(annotation) for t in _types(arg)} - {type(None)}
    return {annotation}


def _table(entry) -> tuple[str, ...]:
    kind = KINDS[entry.kind]
    return kind.table + (("sum",) if kind.name == "heads" else ("x",) if kind.named else ())


def _problems(entry, key: str, value) -> list[str]:
    """The problems that naming ``entry`` in ``original`` with ``key = value`` makes about that key."""
    table = ".".join(_table(entry))
    with pytest.raises(RecipeError) as e:
        load_recipe("original", {f"{table}.type": entry.name, f"{table}.{key}": value,
                                 **({"heads.sum.target": "sum"} if entry.kind == "heads" else {})}, require_loggers=False)  # fmt: skip
    return [p.message for p in e.value.problems if p.key == f"{table}.{key}"]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.kind}:{e.name}")
def test_every_component_refuses_a_bool_or_a_string_for_a_number(entry):
    fields = entry.load().Params.model_fields
    numeric = {n: f for n, f in fields.items() if _types(f.annotation) and _types(f.annotation) <= {int, float}}
    if not numeric:
        pytest.skip("no numeric parameter")
    for name, field in numeric.items():
        expected = "valid number" if float in _types(field.annotation) else "valid integer"
        text = str(field.default if isinstance(field.default, (int, float)) else 1)
        for wrong in (True, text):  # lax validation read both: true as 1, "0.9" as 0.9
            found = _problems(entry, name, wrong)
            assert any(expected in m for m in found), (name, wrong, found)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.kind}:{e.name}")
def test_every_component_refuses_a_number_or_a_string_for_a_bool(entry):
    flags = [n for n, f in entry.load().Params.model_fields.items() if _types(f.annotation) == {bool}]
    if not flags:
        pytest.skip("no bool parameter")
    for name in flags:
        for wrong in (1, "true"):
            assert any("valid boolean" in m for m in _problems(entry, name, wrong)), (name, wrong)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_builtin_recipe_loads_with_strict_types(recipe):
    load_recipe(recipe, require_loggers=False)


def test_natural_toml_forms_still_fit():
    """An integer for a float, an array for a tuple; a mapping of Python values (the API) too."""
    recipe = load_recipe("original", ["train.optimizer.lr=1", "train.schedule.momentum=[0, 0.9]", "train.schedule.warmup=0.5"])
    assert recipe.optimizer.params.lr == 1.0 and recipe.schedule.params.momentum == (0.0, 0.9)
    recipe = load_recipe("original", {"train.schedule.momentum": (0.8, 0.9), "train.optimizer.lr": 2})
    assert recipe.schedule.params.momentum == (0.8, 0.9) and recipe.optimizer.params.lr == 2.0
    assert load_recipe("original", ["train.schedule.momentum=false"]).schedule.params.momentum is None


def test_lr_true_exits_2_naming_the_key(cli, tmp_path):
    (tmp_path / "r.toml").write_text('extends = "original"\n\n[train.optimizer]\nlr = true\n')
    result = cli("run", tmp_path / "r.toml", "--out", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{tmp_path / 'r.toml'}:4 train.optimizer.lr: input should be a valid number (got true)" in " ".join(result.err.split())
    assert not (tmp_path / "run").exists()


PLUGIN = '''
import torch
from pydantic import Field
from digitsum import Optimizer, Params


class Lion(Optimizer):
    """Sign momentum."""

    contract = 1

    class Params(Params):
        lr: float = Field(1e-4, gt=0, description="peak learning rate")
        beta1: float = Field(0.9, ge=0, lt=1, description="momentum of the update")
        weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")

    def build(self, parameters):
        return torch.optim.SGD(parameters, lr=self.params.lr, momentum=self.params.beta1)
'''


def test_a_plugins_beta1_as_a_string_exits_2_naming_the_key(tmp_path):
    site = fake_distribution(tmp_path / "site", "digitsum-lion", "0.1", {"digitsum.optimizers": {"lion": "lion_plugin:Lion"}},
                             {"lion_plugin.py": PLUGIN})  # fmt: skip
    (tmp_path / "r.toml").write_text('extends = "original"\n\n[train.optimizer]\ntype = "lion"\nlr = 1e-4\nbeta1 = "0.9"\n')
    result = run_subprocess("run", tmp_path / "r.toml", "--out", tmp_path / "run", env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    err = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in err, result.stderr
    assert f"{tmp_path / 'r.toml'}:6 train.optimizer.beta1: input should be a valid number (got \"0.9\") [optimizer 'lion']" in err


@pytest.mark.parametrize("kind", KINDS)
def test_a_parameter_named_like_its_tables_own_key_is_refused(kind):
    """A field a component's table keeps for itself (type, a head's weight...) would never get
    its value: refused for every kind, by the same rule the recipe applies."""
    from digitsum.recipe.schema import SECTIONS, reserved_params_problem

    fixed = next(iter(SECTIONS[kind].model_fields))
    base = next(iter(REGISTRIES[kind].entries())).load()
    clashing = type("Clashing", (base,), {"Params": type("Params", (base.Params,), {"__annotations__": {fixed: str}, fixed: "x"})})
    assert f"Clashing.Params declares '{fixed}', which {KINDS[kind].recipe_table} keeps for itself" in reserved_params_problem(kind, clashing)
    assert reserved_params_problem(kind, base) is None


def test_a_recipe_naming_a_head_whose_params_clash_is_an_error(tmp_path):
    from pydantic import Field

    from digitsum.components.heads.classify import Classify

    from .conftest import registered

    class TargetParam(Classify):
        """A head with its own 'target'."""

        class Params(Classify.Params):
            target: str = Field("digit", description="what it predicts")

    with registered(REGISTRIES["heads"], "target_param", TargetParam), pytest.raises(RecipeError) as e:
        load_recipe(RECIPES / "original.toml", ["heads.sum.type='target_param'", "heads.sum.target='sum'"])
    assert "heads.sum.type: head 'target_param' from local (" in str(e.value)
    assert "TargetParam.Params declares 'target'" in str(e.value)


def test_a_components_check_that_raises_is_a_problem_naming_it_not_a_traceback():
    from digitsum.components.heads.classify import Classify

    from .conftest import registered

    class Raises(Classify):
        """A head whose check reads what a Classes target lacks."""

        @classmethod
        def check(cls, params, target):
            return [] if target.length else []

    with registered(REGISTRIES["heads"], "raises", Raises), pytest.raises(RecipeError) as e:
        load_recipe(RECIPES / "original.toml", ["heads.sum.type='raises'", "heads.sum.target='sum'"])
    line = Raises.check.__code__.co_firstlineno + 2
    assert ("heads.sum.type: head 'raises' from local (tests.test_strict_params:" in str(e.value)
            and f"raised AttributeError in check() (test_strict_params.py, line {line}): 'Classes' object has no attribute 'length'" in str(e.value))
