from __future__ import annotations

import os
import re
import sys
import threading
from types import SimpleNamespace

import pytest

from digitsum.contracts import Fusion, Params
from digitsum import registry as registry_module
from digitsum.errors import UserError
from digitsum.testing import ConformanceError, check_component
from digitsum.registry import REGISTRIES, Entry, Origin, PluginError, Registry, fusions, registry_for


def test_builtins_come_from_digitsums_own_entry_points():
    for registry in REGISTRIES.values():
        entries = list(registry.entries())
        assert entries, registry.kind
        for entry in entries:
            assert entry.origin.distribution == "digitsum"
            assert entry.origin.builtin and str(entry.origin) == "built-in"
            assert ":" in entry.origin.value


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UserError) as e:
        fusions.get("conact")
    assert "unknown fusion 'conact'" in e.value.message
    assert "did you mean 'concat'" in e.value.message
    assert "entry-point group" not in e.value.message  # a typo needs no lecture on plugins


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_a_name_nothing_resembles_says_how_a_component_of_ones_own_is_seen(kind):
    # a student's component registered in a script, named in a recipe the CLI reads
    with pytest.raises(UserError) as e:
        REGISTRIES[kind].get("zzqx_offbyone")
    assert f"entry-point group [{REGISTRIES[kind].group}]" in e.value.message and f"{kind}.register()" in e.value.message


def test_unknown_name_with_no_close_match_lists_valid_names():
    with pytest.raises(UserError) as e:
        fusions.get("zzzzzz")
    assert "valid: " in e.value.message and "concat" in e.value.message


class _Tiny(Fusion):
    """A tiny fusion for registry tests."""

    out_features = 1

    def forward(self, batch):
        return batch["image"].flatten(1)[:, :1]


def test_decorator_registers_and_duplicate_is_refused_naming_both_origins():
    registry = Registry("fusions")
    registry._discovered = True  # only what this test registers
    registry.register("tiny")(_Tiny)
    assert registry.get("tiny") is _Tiny

    class Other(_Tiny):
        pass

    with pytest.raises(PluginError) as e:
        registry.register("tiny")(Other)
    assert "registered twice" in e.value.message
    assert "_Tiny" in e.value.message and "Other" in e.value.message


def test_a_builtins_name_is_refused_by_the_decorator_before_anything_listed_the_components():
    # was: accepted in a fresh registry (nothing discovered yet), then every recipe using the
    # built-in failed with "registered twice", far from the cell that took the name
    registry = Registry("fusions")
    with pytest.raises(PluginError, match="'concat' is registered twice: by built-in"):
        registry.register("concat")(_Tiny)


def _defined(out_features: int) -> type:
    """A fusion class as a notebook cell defines it: the same module and qualified name each run."""

    class Cell(Fusion):
        """A fusion a notebook cell defines."""

        def forward(self, batch):
            return batch["image"].flatten(1)[:, : self.out_features]

    Cell.out_features = out_features
    return Cell


def test_a_cell_run_again_replaces_the_class_it_registered():
    registry = Registry("fusions")
    registry._discovered = True
    first, edited = _defined(1), _defined(2)  # the cell, then the cell edited and run again
    registry.register("cell")(first)
    registry.register("cell")(edited)
    assert registry.get("cell") is edited
    assert [e.name for e in registry.entries()] == ["cell"]


def test_a_second_local_class_under_one_name_is_refused_saying_how_to_forget_the_first():
    registry = Registry("fusions")
    registry._discovered = True
    registry.register("tiny")(_Tiny)

    class Other(_Tiny):
        """Another."""

    with pytest.raises(PluginError) as e:
        registry.register("tiny")(Other)
    assert e.value.message.count("_Tiny") == 1  # the origin is named once, not "local (m:C) (m:C)"
    assert "fusions.remove('tiny')" in e.value.message


@pytest.mark.parametrize("kind, method", [("fusions", "forward(self, batch)"), ("heads", "loss(self, output, target)")])
def test_a_class_without_a_method_its_kind_requires_is_refused_as_it_is_registered(kind, method):
    # was: accepted, then NotImplementedError from the contract's own method at the first step
    from digitsum import contracts

    base = contracts.Fusion if kind == "fusions" else contracts.Head
    body = {"__doc__": "Missing a method.", "forward": lambda self, features: features} if kind == "heads" else {"__doc__": "Missing a method."}
    incomplete = type("Incomplete", (base,), body)
    registry = Registry(kind)
    registry._discovered = True
    with pytest.raises(PluginError, match=rf"Incomplete does not define {re.escape(method)}: every digitsum.{base.__name__} does"):
        registry.register("incomplete")(incomplete)


def test_remove_forgets_what_register_added_and_nothing_else():
    from digitsum.registry import fusions

    # was: a built-in's name silently forgotten (every recipe using it then failed) and a typo ignored
    with pytest.raises(UserError, match=r"fusion 'concat' comes from built-in \(.*\): remove\(\) forgets only what register\(\) added"):
        fusions.remove("concat")
    with pytest.raises(UserError, match="fusion 'conact' is not registered — did you mean 'concat'"):
        fusions.remove("conact")
    assert fusions.entry("concat").origin.builtin
    fusions.register("tiny_to_forget")(_Tiny)
    fusions.remove("tiny_to_forget")
    with pytest.raises(UserError, match="unknown fusion 'tiny_to_forget'"):
        fusions.entry("tiny_to_forget")


@pytest.mark.parametrize("kind", ["fusions", "heads"])
def test_the_decorator_checks_the_contract_when_the_class_is_defined(kind):
    registry = Registry(kind)
    registry._discovered = True

    class Plain:
        """Not a component."""

    with pytest.raises(PluginError) as e:
        registry.register("plain")(Plain)
    assert f"{registry.label} 'plain'" in e.value.message and "not a subclass of digitsum." in e.value.message
    if kind == "heads":  # a fusion registered as a head is refused too
        with pytest.raises(PluginError, match="not a subclass of digitsum.Head"):
            registry.register("fusion")(_Tiny)
    assert "plain" not in registry


@pytest.mark.parametrize("name", ["dist:tiny", "", "has space", "-lead"])
def test_the_decorator_refuses_a_name_recipes_cannot_use(name):
    with pytest.raises(PluginError, match="letters, digits"):
        Registry("fusions").register(name)


def test_same_name_from_two_distributions_needs_the_qualified_form():
    registry = Registry("fusions")
    registry._discovered = True
    registry.add(Entry("fusions", "tiny", Origin("a:Tiny", "dist-a", "1.0"), _obj=_Tiny))
    registry.add(Entry("fusions", "tiny", Origin("b:Tiny", "dist-b", "2.0"), _obj=_Tiny))
    with pytest.raises(UserError) as e:
        registry.get("tiny")
    assert "dist-a:tiny" in e.value.message and "dist-b:tiny" in e.value.message
    assert registry.get("dist-b:tiny") is _Tiny


def test_a_class_that_breaks_the_contract_is_reported_not_raised_raw():
    registry = Registry("fusions")
    registry._discovered = True

    class NotAFusion:
        Params = Params

    ep = type("EP", (), {"load": staticmethod(lambda: NotAFusion)})()
    registry.add(Entry("fusions", "bad", Origin("bad:NotAFusion", "bad-plugin", "0.1"), _entry_point=ep))
    with pytest.raises(PluginError) as e:
        registry.get("bad")
    assert "not a subclass of digitsum.Fusion" in e.value.message


def test_import_failure_is_a_plugin_error_with_its_reason():
    registry = Registry("fusions")
    registry._discovered = True

    def boom():
        raise ImportError("No module named 'missing_dependency'")

    ep = type("EP", (), {"load": staticmethod(boom)})()
    registry.add(Entry("fusions", "broken", Origin("broken:X", "broken-plugin", "0.1"), _entry_point=ep))
    with pytest.raises(PluginError) as e:
        registry.get("broken")
    assert "broken-plugin 0.1" in e.value.message
    assert "missing_dependency" in e.value.message


def test_wrong_contract_version_is_refused_with_a_clear_message():
    registry = Registry("fusions")
    registry._discovered = True

    class Future(_Tiny):
        contract = 99

    ep = type("EP", (), {"load": staticmethod(lambda: Future)})()
    registry.add(Entry("fusions", "future", Origin("f:Future", "future-plugin", "9.0"), _entry_point=ep))
    with pytest.raises(PluginError) as e:
        registry.get("future")
    assert "contract 99" in e.value.message


@pytest.mark.parametrize("alias,kind", [("fusion", "fusions"), ("backbones", "fusions"), ("head", "heads"), ("generators", "datasets")])
def test_kinds_have_friendly_aliases(alias, kind):
    assert registry_for(alias).kind == kind


def test_unknown_kind_is_a_user_error():
    with pytest.raises(UserError, match="unknown kind 'fusinos'"):
        registry_for("fusinos")


def test_one_table_of_kinds_feeds_registries_groups_and_recipe_sections():
    from digitsum import contracts
    from digitsum.discovery import ENTRY_POINT_GROUPS
    from digitsum.kinds import KINDS, kind_named
    from digitsum.recipe.schema import SECTIONS

    assert list(REGISTRIES) == list(KINDS) == list(SECTIONS)
    for name, kind in KINDS.items():
        assert REGISTRIES[name].group == ENTRY_POINT_GROUPS[name] == f"digitsum.{name}"
        assert isinstance(getattr(contracts, kind.contract), type)
        assert all(kind_named(word) is kind for word in kind.words())


def test_machine_local_keys_are_recipe_keys():
    from digitsum.recipe import MACHINE_LOCAL_KEYS, DataSection, TrainSection

    sections = {"data": DataSection, "train": TrainSection}
    for key in MACHINE_LOCAL_KEYS:
        table, name = key.split(".")
        assert name in sections[table].model_fields, key


# -- a plugin's import cannot end, corrupt or silently stall digitsum --------------------------------


def _plugin_entry(load, name: str = "hostile") -> Entry:
    """An entry of a plugin distribution whose import runs ``load``."""
    return Entry("fusions", name, Origin("hostile:Fusion", "digitsum-hostile", "0.1"), _entry_point=SimpleNamespace(load=load))


@pytest.mark.parametrize("line", ["from digitsum import NoSuchName", "import torch.no_such_module", "width = undefined + 1"])
def test_a_failed_import_names_the_line_of_the_plugins_own_code(tmp_path, monkeypatch, line):
    """Not digitsum's __init__.py that an ImportError names, nor torch's frames: the author's line."""
    import importlib

    package = tmp_path / "failing_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "heads.py").write_text(f'"""A plugin."""\n\nimport math\n\n{line}\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = Entry("fusions", "failing", Origin("failing_plugin_pkg.heads:Head", "digitsum-failing", "0.1"),
                  _entry_point=SimpleNamespace(load=lambda: importlib.import_module("failing_plugin_pkg.heads").Head))  # fmt: skip
    with pytest.raises(PluginError) as e:
        entry.load()
    assert e.value.message.endswith(f"(at {package / 'heads.py'}:5)")
    for name in ("failing_plugin_pkg", "failing_plugin_pkg.heads"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("error", [SystemExit(0), SystemExit("bye"), GeneratorExit(), BaseException("odd")])
def test_an_import_ending_the_program_is_a_failed_component(error):
    def load():
        raise error

    entry = _plugin_entry(load)
    with pytest.raises(PluginError) as e:
        entry.load()
    assert "fusion 'hostile' from digitsum-hostile 0.1 (hostile:Fusion) cannot be used" in e.value.message
    assert type(error).__name__ in e.value.message


def test_ctrl_c_during_an_import_still_stops_digitsum():
    def load():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _plugin_entry(load).load()


def test_what_an_import_prints_goes_to_stderr_not_stdout(capfd):
    def load():
        print("chatty import")
        os.write(1, b"written to fd 1\n")
        return _Tiny

    assert _plugin_entry(load).load() is _Tiny
    out, err = capfd.readouterr()
    assert out == ""
    assert "note: importing fusion 'hostile' from digitsum-hostile 0.1 printed (kept off stdout)" in err
    assert "chatty import" in err and "written to fd 1" in err
    print("stdout works again")
    assert capfd.readouterr().out == "stdout works again\n"


def test_a_slow_import_gets_a_note(capfd, monkeypatch):
    monkeypatch.setattr(registry_module, "SLOW_IMPORT_S", 0.1)
    noted, note = threading.Event(), registry_module._note

    def noting(text):
        note(text)
        noted.set()

    monkeypatch.setattr(registry_module, "_note", noting)

    def load():  # an import that lasts until the note is out, however busy the machine
        noted.wait(timeout=120)
        return _Tiny

    assert _plugin_entry(load).load() is _Tiny
    assert "note: importing fusion 'hostile' from digitsum-hostile 0.1… (still going)" in capfd.readouterr().err


def test_a_built_in_named_with_a_distribution_not_installed_is_suggested_not_an_install():
    registry = Registry("fusions")
    registry._discovered = True
    registry.add(Entry("fusions", "tiny", Origin("digitsum.x:Tiny", "digitsum", "0.1.0"), _obj=_Tiny))
    with pytest.raises(UserError) as refused:
        registry.entry("builtin:tiny")
    assert refused.value.message.endswith("which is not installed: did you mean 'tiny'? (built in)")
    with pytest.raises(UserError, match="which is not installed: pip install digitsum-nowhere$"):
        registry.entry("digitsum-nowhere:other")


def test_a_plugin_namesake_of_a_builtin_leaves_the_builtin_in_use(capfd, monkeypatch):
    monkeypatch.setattr(registry_module, "_WARNED", set())
    registry = Registry("fusions")
    registry._discovered = True
    builtin = Entry("fusions", "tiny", Origin("digitsum.x:Tiny", "digitsum", "0.1.0"), _obj=_Tiny)
    registry.add(builtin)
    registry.add(_plugin_entry(lambda: _Tiny, "tiny"))
    assert registry.entry("tiny") is builtin and registry.entry("tiny") is builtin
    assert registry.entry("digitsum-hostile:tiny").origin.distribution == "digitsum-hostile"
    err = capfd.readouterr().err
    assert err.count("warning:") == 1  # once per name
    assert "digitsum-hostile 0.1 also defines fusion 'tiny'; the built-in one is used" in err
    assert "'digitsum-hostile:tiny'" in err


def test_an_entry_point_in_a_misspelt_group_is_a_problem_of_its_distribution_and_named_on_lookup(tmp_path, monkeypatch):
    from importlib import metadata

    from digitsum import discovery

    from .conftest import fake_distribution

    site = fake_distribution(tmp_path, "digitsum-typo", "1.0", {"digitsum.fusion": {"gated": "typo_plugin:Gated"},
                                                                 "console_scripts": {"x": "typo_plugin:main"}})  # fmt: skip
    (dist,) = metadata.distributions(path=[str(site)])
    found = discovery._read_distribution(dist)
    assert found is not None and found.entry_points == []
    (problem,) = found.problems  # other projects' groups are not digitsum's business
    assert problem.startswith("entry point 'gated = typo_plugin:Gated' in [digitsum.fusion]: digitsum reads no such group — "
                              "did you mean 'digitsum.fusions'")
    monkeypatch.setattr(registry_module, "_SCAN", [found])
    registry = Registry("fusions")
    with pytest.raises(UserError) as e:
        registry.get("gated")
    assert e.value.message == ("unknown fusion 'gated' — digitsum-typo 1.0 declares 'gated' in the entry-point group "
                               "[digitsum.fusion], not [digitsum.fusions]")


def test_a_qualified_name_its_distribution_does_not_declare_lists_what_it_does(tmp_path, monkeypatch):
    """``digitsum-kit:robust`` with the entry point forgotten: not "did you mean 'classify'?"."""
    from importlib import metadata

    from digitsum import discovery

    from .conftest import fake_distribution

    site = fake_distribution(tmp_path, "digitsum-kit", "1.0", {"digitsum.fusions": {"gated": "kit:Gated"}})
    (dist,) = metadata.distributions(path=[str(site)])
    monkeypatch.setattr(registry_module, "_SCAN", [discovery._read_distribution(dist)])
    with pytest.raises(UserError) as e:
        Registry("fusions").get("digitsum-kit:gatd")
    assert e.value.message == ("unknown fusion 'digitsum-kit:gatd' — digitsum-kit declares no fusion 'gatd' (fusions it "
                               "declares: gated); a fusion is seen once its distribution declares it in the entry-point "
                               "group [digitsum.fusions] and is installed again")

# -- a method written with another signature than its contract's is refused when the class loads ----


def _miswritten(kind: str) -> tuple[type, str]:
    """A subclass of ``kind``'s contract class whose first method of the contract (a hook for a
    logger) takes one argument too few, and that method's name."""
    from digitsum import contracts
    from digitsum.kinds import KINDS

    base = getattr(contracts, KINDS[kind].contract)
    method = {"datasets": "draw", "fusions": "forward", "heads": "loss", "optimizers": "build",
              "schedules": "build", "loggers": "on_epoch_end"}[kind]  # fmt: skip
    params = type("Params", (Params,), {"__annotations__": {name: float for name in base.required_params}})  # lr for an optimizer
    return type("Miswritten", (base,), {"__doc__": "Miswritten.", "Params": params, method: lambda self: None}), method


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_a_method_that_cannot_take_what_digitsum_passes_is_refused_naming_it(kind):
    cls, method = _miswritten(kind)
    entry = Entry(kind, "miswritten", Origin("mis:Miswritten", "digitsum-mis", "0.1"), _entry_point=SimpleNamespace(load=lambda: cls))
    with pytest.raises(PluginError) as e:
        entry.load()
    assert "digitsum-mis 0.1" in e.value.message and f"{method}(" in e.value.message, e.value.message
    with pytest.raises(ConformanceError, match=rf"{method}\(self\) cannot take what digitsum passes"):
        check_component(cls)  # the conformance check says the same before it trips on the call


def test_a_method_taking_the_contracts_parameters_in_another_order_is_refused():
    """``draw(self, index, rng, split)`` takes three arguments, but each would get another's value."""
    from digitsum.components.data.single_digit import SingleDigit

    class Swapped(SingleDigit):
        """draw with its parameters reordered."""

        def draw(self, index, rng, split="train"):
            return super().draw(split, index, rng)

    entry = Entry("datasets", "swapped", Origin("mis:Swapped", "digitsum-mis", "0.1"), _entry_point=SimpleNamespace(load=lambda: Swapped))
    with pytest.raises(PluginError) as e:
        entry.load()
    assert ("Swapped.draw(self, index, rng, split='train') takes split, index, rng elsewhere than digitsum passes them: "
            "digitsum calls draw(self, split, index, rng), by position") in e.value.message

def test_a_classmethod_written_as_a_plain_method_is_refused():
    class Unchecked(_Tiny):
        def check(self, params, inputs):  # @classmethod forgotten: digitsum calls Unchecked.check(params, inputs)
            return []

    with pytest.raises(PluginError, match="check"):
        Registry("fusions").register("unchecked")(Unchecked)


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_builtin_meets_its_contracts_signatures(kind):
    for entry in REGISTRIES[kind].entries():
        if entry.origin.builtin:
            entry.load()  # raises PluginError naming the method otherwise


def test_an_optimizer_without_the_lr_every_optimizer_has_is_refused():
    from digitsum.contracts import Optimizer

    class NoLr(Optimizer):
        """Calls its learning rate `rate`."""

        class Params(Params):
            rate: float = 0.01

    with pytest.raises(PluginError, match="NoLr.Params has no field lr: every optimizer has it"):
        Registry("optimizers").register("no_lr")(NoLr)


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_a_qualified_name_of_an_installed_distribution_that_is_no_plugin_is_not_told_to_pip_install_it(kind):
    registry = REGISTRIES[kind]
    with pytest.raises(UserError) as e:
        registry.entry("pytest:anything")  # installed, declares no digitsum components
    assert "the distribution 'pytest'" in e.value.message and "declares no digitsum components" in e.value.message
    assert "pip install" not in e.value.message
