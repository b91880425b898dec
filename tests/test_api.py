"""The Python API: what a script or a notebook does with `import digitsum` alone."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import digitsum

from .conftest import RECIPES

@pytest.fixture
def trained(tiny_run):
    return tiny_run


def test_importing_digitsum_imports_no_torch():
    code = "import sys, digitsum; digitsum.__all__; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_train_returns_the_run_it_wrote(trained):
    assert trained.status == "finished" and len(trained.history) == 2
    assert (trained.run_dir / "checkpoint.pt").is_file() and (trained.run_dir / "curves.png").is_file()
    assert not trained.model.training
    records = trained.metrics
    assert [(r["epoch"], r["split"]) for r in records] == [(1, "train"), (1, "test"), (2, "train"), (2, "test")]
    assert records[-1]["digit.accuracy"] == trained.summary["metrics"]["test"]["digit"]["accuracy"]
    assert "original" in repr(trained) and "digit accuracy" in repr(trained)


def test_load_run_gives_back_the_same_model_and_metrics(trained):
    again = digitsum.load_run(trained.run_dir)
    assert again.recipe.to_dict() == trained.recipe.to_dict()
    assert again.metrics == trained.metrics and again.summary == trained.summary
    state = trained.model.state_dict()
    assert all(torch.equal(state[k].cpu(), v) for k, v in again.model.state_dict().items())
    assert not again.model.training and again.device.type == "cpu"


def test_evaluate_reproduces_the_recorded_test_metrics(trained):
    again = digitsum.load_run(trained.run_dir)
    result = again.evaluate("test")
    for head, values in trained.summary["metrics"]["test"].items():
        for metric, value in values.items():
            assert result[head][metric] == pytest.approx(value, abs=1e-6)
    assert not again.model.training  # evaluating leaves the loaded model in eval mode


def test_evaluate_reproduces_a_bf16_runs_metrics_exactly(tiny_root, tmp_path):
    """Evaluated in the precision it trained in: on a CPU with bf16, in bf16 (elsewhere both are fp32)."""
    import torch

    threads = torch.get_num_threads()
    overrides = ["train.epochs=1", "data.batch_size=64", f"data.root='{tiny_root}'", "data.download=false",
                 "train.precision='bf16'", "train.threads=1"]  # fmt: skip
    try:
        run = digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, progress=False)
        torch.set_num_threads(1)  # bit for bit: the one thread it trained and evaluated with
        assert digitsum.load_run(run.run_dir).evaluate("test") == run.summary["metrics"]["test"]
    finally:
        torch.set_num_threads(threads)


def test_a_run_stopped_by_a_signal_names_it(tiny_root, tmp_path):
    import os
    import signal

    class Interrupt(digitsum.Callback):
        def on_step(self, trainer, epoch, step, loss):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the notebook's kernel sends

    threads = torch.get_num_threads()
    overrides = {"train.epochs": 1, "data.batch_size": 64, "data.root": tiny_root, "data.download": False}
    try:
        run = digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, callbacks=[Interrupt()], progress=False)
    finally:
        torch.set_num_threads(threads)
    assert run.interrupted_by == signal.SIGINT and run.interrupted_by.name == "SIGINT"  # was the bare int 2


def test_a_silent_run_keeps_its_warnings_on_the_run(tiny_root, tmp_path, capsys):
    # was: with progress=False the preflight's and the watch's warnings went nowhere
    overrides = {"train.epochs": 1, "data.batch_size": 64, "data.root": tiny_root, "data.download": False,
                 "heads.sum.output": "probabilities"}  # fmt: skip
    threads = torch.get_num_threads()
    try:
        run = digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert any(w.startswith("preflight:") and "heads.sum" in w for w in run.warnings), run.warnings
    assert f"{len(run.warnings)} warning" in repr(run) and capsys.readouterr().out == ""
    assert digitsum.load_run(run.run_dir).warnings == ()  # what train saw, not what the folder keeps


def test_a_user_error_in_a_notebook_shows_its_message_not_the_librarys_frames():
    # IPython (Jupyter) asks an exception for _render_traceback_; a bug keeps its traceback
    cells = "import digitsum\ndigitsum.load_recipe('orignal')", "1/0"
    script = ("from IPython.core.interactiveshell import InteractiveShell\nshell = InteractiveShell.instance()\n"
              + "".join(f"shell.run_cell({cell!r})\n" for cell in cells))  # fmt: skip
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout
    error, _, bug = shown.partition("ZeroDivisionError")
    assert error.strip() == "UserError: recipe 'orignal' not found" + error.strip().partition("not found")[2]
    assert "did you mean 'original'?" in error and "Traceback" not in error and "catalog.py" not in error
    assert "Traceback" in bug


def test_a_run_of_a_component_registered_in_its_process_says_what_to_import_to_read_it_back(tiny_root, tmp_path):
    from digitsum.components.fusions.concat import Concat
    from digitsum.registry import fusions

    from .conftest import registered

    mine = type("MyConcat", (Concat,), {"__doc__": "Concat, the test's own.", "__module__": "my_components"})
    overrides = {"train.epochs": 1, "data.batch_size": 64, "data.root": tiny_root, "data.download": False, "backbone.type": "my_concat"}
    threads = torch.get_num_threads()
    try:
        with registered(fusions, "my_concat", mine):
            run = digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, progress=False)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(digitsum.UserError) as caught:  # a fresh kernel: the registration is gone
        digitsum.load_run(run.run_dir)
    assert "unknown fusion 'my_concat'" in caught.value.message
    assert "trained with it registered in its own process ([provenance] local): import my_components" in caught.value.message


def test_evaluate_refuses_an_unknown_split(trained):
    with pytest.raises(digitsum.UserError, match="no split 'tset' — did you mean 'test'"):
        trained.evaluate("tset")


def test_figures_render_themselves_for_a_notebook(trained):
    for figure in (trained.curves(), trained.samples(count=6)):
        png = figure._repr_png_()
        assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_load_run_errors_are_user_errors(tmp_path):
    with pytest.raises(digitsum.UserError, match="run directory not found"):
        digitsum.load_run(tmp_path / "nothing")
    with pytest.raises(digitsum.UserError, match=r"digitsum.load\('original'\)"):  # a recipe's name: where its weights are
        digitsum.load_run("original")
    (tmp_path / "empty").mkdir()
    with pytest.raises(digitsum.UserError, match="not a run directory"):
        digitsum.load_run(tmp_path / "empty")
    runs = tmp_path / "runs" / "original"
    for stamp in ("20260101-000000", "20260102-000000"):
        (runs / stamp).mkdir(parents=True)
        (runs / stamp / "recipe.toml").write_text("")
    with pytest.raises(digitsum.UserError, match=f"latest run directory under it is {runs / '20260102-000000'}"):
        digitsum.load_run(tmp_path / "runs")


def test_load_run_on_a_missing_device_names_the_argument(trained, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(digitsum.UserError, match="device = 'cuda' but CUDA is not available"):
        digitsum.load_run(trained.run_dir, device="cuda")


def test_build_has_no_side_effects_and_matches_the_run_s_initial_model(tiny_root):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = digitsum.build(RECIPES / "original.toml", "cpu")
    second = digitsum.build(RECIPES / "original.toml", "cpu", overrides=["data.batch_size=32"])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is untouched
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = digitsum.build(RECIPES / "original.toml", "cpu", overrides=["seed=1"])
    assert not torch.equal(other.model.state_dict()["heads.digit.linear.weight"], a["heads.digit.linear.weight"])


def test_doctor_returns_findings_as_data(tiny_data):
    # one cause the doctor names and repairs in seconds (the notebook's three take it 20 s:
    # tests/diagnosis/test_doctor.py and docs/quickstart.ipynb run those)
    report = digitsum.doctor(RECIPES / "original.toml", ["heads.digit.weight=0"])
    assert isinstance(report, digitsum.Report) and not report.healthy
    assert any(f.check == "loss_weights" and f.severity == "error" and f.keys == ["heads.digit.weight"] for f in report.findings)
    assert report.repair == {"heads.digit.weight": 1.0}
    assert report.to_dict()["healthy"] is False and report.to_dict()["repair"] == {"heads.digit.weight": 1.0}


def test_predict_from_a_file_equals_predict_from_its_pixels(trained, tmp_path):
    from PIL import Image, ImageDraw

    paper = Image.new("L", (120, 160), color=230)
    ImageDraw.Draw(paper).line([(20, 20), (100, 20), (50, 140)], fill=10, width=14)
    paper.save(tmp_path / "seven.png")
    again = digitsum.load_run(trained.run_dir)
    from_file = again.predict(image=tmp_path / "seven.png", number=3)
    from_pil = again.predict(image=paper, number=3)
    assert not from_file.batched and from_file.batch_size == 1
    for head in ("digit", "sum"):
        assert torch.equal(from_file[head].probabilities, from_pil[head].probabilities)
        assert abs(float(from_file[head].probabilities.sum()) - 1) < 1e-5


@pytest.mark.parametrize("source, overrides, says", [
    (123, (), "a recipe is a TOML file's path, a recipe's name (digitsum list recipes), a dict or a digitsum.Recipe, not int 123"),
    ("original", ("train.epochs", 2), "not tuple ('train.epochs', 2) (one key and its value: {'train.epochs': 2} or 'train.epochs=2')"),
    ("original", [{"train.epochs": 2}], "overrides[0] expected 'KEY=VALUE' text or a dict {'KEY': value}"),
    ("original", ["seed=1", 3], "overrides[1] expected 'KEY=VALUE' text or a dict {'KEY': value}, e.g. {'train.epochs': 2}, not int 3"),
    ("original", 5, "overrides expected 'KEY=VALUE' text or a dict"),
], ids=["number", "pair", "list-of-dict", "not-text", "number-overrides"])  # fmt: skip
def test_a_recipe_or_overrides_of_the_wrong_type_is_a_user_error_saying_what_fits(source, overrides, says):
    # was: TypeError from os.fspath, AttributeError: 'int' object has no attribute 'partition'
    with pytest.raises(digitsum.UserError) as caught:
        digitsum.load_recipe(source, overrides)
    assert says in caught.value.message


def test_a_batchs_answers_need_the_samples_index(trained):
    # was: value(), probability() and top() of a batch silently answered for its first sample
    batch = digitsum.load_run(trained.run_dir).predict(image=torch.zeros(2, 1, 28, 28), number=[1, 2], preprocess=False)
    for ask in (lambda h: h.value(), lambda h: h.probability(), lambda h: h.top(), lambda h: h.label(), lambda h: h.sample()):
        with pytest.raises(ValueError, match="2 samples were predicted: pass the sample's index"):
            ask(batch["sum"])
    assert batch["sum"].value(1) == int(batch["sum"].prediction[1]) and batch.sample(-1) == batch.samples()[1]
    with pytest.raises(IndexError, match="sample 2 of a batch of 2"):
        batch["sum"].value(2)


def test_load_recipe_takes_names_dicts_and_recipes_with_overrides():
    by_name = digitsum.load_recipe("original", {"train.epochs": 3, "backbone.type": "film"})
    assert by_name.train.epochs == 3 and by_name.backbone.section.type == "film"
    again = digitsum.load_recipe(by_name, ["seed=7"])  # a loaded recipe, re-validated with overrides
    assert again.seed == 7 and again.train.epochs == 3 and digitsum.load_recipe(by_name) is by_name
    document = digitsum.load_recipe({"extends": "original", "name": "mine", "train": {"epochs": 2}})
    assert document.name == "mine" and document.train.epochs == 2 and list(document.heads) == ["digit", "sum"]
    with pytest.raises(digitsum.RecipeError, match="did you mean 'epochs'"):
        digitsum.load_recipe("original", {"train.epoch": 3})


def test_a_model_larger_than_the_memory_is_refused_before_it_is_allocated(tiny_data, cli, monkeypatch):
    """Sizes each within its limit can still add up to more than the machine has: counted on the
    meta device first, refused with exit 2 (here on a machine said to have 64 MiB)."""
    from digitsum.engine import build as building

    pages = {"SC_PHYS_PAGES": 16384, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(building.os, "sysconf", lambda name: pages[name])
    result = cli("run", "original", "--set", "backbone.conv_channels=[512, 1024]", "--set", "train.epochs=1")
    assert result.code == 2 and "Traceback" not in result.err
    message = " ".join(result.err.split())
    assert "parameters: training it needs about 2" in message and "more than the 64 MiB of this cpu" in message
    assert digitsum.build("original").model is not None  # a model that fits is built as before


class _StopAtFirstStep(digitsum.Callback):
    def on_step(self, trainer, epoch, step, loss):
        trainer.request_stop("enough")


def test_a_taken_out_says_what_to_pass_from_python(tiny_run, tiny_root, tmp_path):
    """In a notebook the remedy is train(..., force=True) or digitsum.resume(...), not a CLI flag."""
    overrides = {"train.epochs": 1, "data.batch_size": 64, "data.root": str(tiny_root), "data.download": False}
    with pytest.raises(digitsum.UserError, match=r"force=True"):
        digitsum.train(RECIPES / "original.toml", tiny_run.run_dir, overrides=overrides, progress=False)
    stopped = digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, progress=False, callbacks=[_StopAtFirstStep()])
    assert stopped.status == "stopped"
    with pytest.raises(digitsum.UserError) as refused:
        digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, progress=False)
    assert "digitsum.resume(" in refused.value.message and "force=True" in refused.value.message


def test_the_curves_of_a_run_stopped_before_its_first_epoch_warn_of_nothing(tiny_root, tmp_path, recwarn):
    overrides = {"train.epochs": 1, "data.batch_size": 64, "data.root": str(tiny_root), "data.download": False}
    stopped = digitsum.train(RECIPES / "original.toml", tmp_path / "run", overrides=overrides, progress=False, callbacks=[_StopAtFirstStep()])
    recwarn.clear()
    assert stopped.curves()._repr_png_()
    assert [str(w.message) for w in recwarn] == []


def test_one_recipe_or_grid_item_given_as_a_string_is_one_not_a_list_of_letters(monkeypatch):
    import digitsum.comparison as comparison

    seen = {}

    def plan(recipes, grid, overrides):
        seen.update(recipes=recipes, grid=grid)
        raise RuntimeError("planned")

    monkeypatch.setattr(comparison, "plan_variants", plan)
    with pytest.raises(RuntimeError, match="planned"):
        digitsum.compare("original", grid="seed=1,2")  # was: "recipe 'o' not found"
    assert seen == {"recipes": ["original"], "grid": ["seed=1,2"]}


def test_a_grid_from_python_is_a_dict_of_values():
    from digitsum.comparison import plan_variants

    variants = plan_variants(["original"], {"backbone.type": ["concat", "film"], "backbone.hidden": [[64, 32], [128]]})
    assert [v.label for v in variants] == ['backbone.type=concat backbone.hidden=[64, 32]', 'backbone.type=concat backbone.hidden=[128]',
                                           'backbone.type=film backbone.hidden=[64, 32]', 'backbone.type=film backbone.hidden=[128]']  # fmt: skip
    assert variants[-1].recipe.backbone.params.hidden == [128] and variants[-1].recipe.backbone.section.type == "film"
    with pytest.raises(digitsum.UserError, match=r"grid\['seed'\]: the value '1' is given twice"):
        plan_variants(["original"], {"seed": [1, 1]})


def test_a_callback_that_is_no_callback_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(digitsum.UserError, match=r"callbacks: 5 \(int\) is not a digitsum.Callback"):
        digitsum.train("original", tmp_path / "run", callbacks=[5], progress=False)
    assert not (tmp_path / "run").exists()  # was: an AttributeError mid-run, and a failed run directory


@pytest.mark.parametrize("call, says", [
    (lambda tmp: digitsum.load(None), "source: a path"),
    (lambda tmp: digitsum.load_run(5), "run_dir: a path"),
    (lambda tmp: digitsum.resume(None), "run_dir: a path"),
    (lambda tmp: digitsum.train("original", out=5, progress=False), "out: a path"),
    (lambda tmp: digitsum.train("original", tmp / "run", callbacks=object(), progress=False), "callbacks: a list"),
    (lambda tmp: digitsum.compare(None), "recipes: a list"),
    (lambda tmp: digitsum.compare(["original"], grid=5), "grid: a list"),
    (lambda tmp: digitsum.copy_recipe(None, tmp), "name: a recipe's name"),
    (lambda tmp: digitsum.copy_recipe("original", None), "dest: a path"),
    (lambda tmp: digitsum.sweep("original", ["seed=choice:1,2"], "2"), "trials: a whole number"),
    (lambda tmp: digitsum.sweep("original", ["seed=choice:1,2"], 2, wrkers=1), "did you mean 'workers'"),
    (lambda tmp: digitsum.sweep("original", ["seed=choice:1,2"], 2, workers="2"), "workers: a whole number"),
    (lambda tmp: digitsum.list_components(5), "kind: a kind's name"),
])  # fmt: skip
def test_an_argument_of_the_wrong_type_is_a_user_error_naming_it(tmp_path, call, says):
    with pytest.raises(digitsum.UserError, match=says):
        call(tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("call, says", [
    (lambda run: run.evaluate(5), "split: a split's name"),
    (lambda run: run.predict(number=3, image=None, top="3"), "top: how many"),
    (lambda run: run.predict(number=3, image=None, preprocess="no"), "preprocess: True or False"),
    (lambda run: run.samples(count=-1), "count: how many test samples"),
    (lambda run: run.samples(count=10**9), "from 1 to 1000"),
])  # fmt: skip
def test_a_runs_methods_refuse_arguments_of_the_wrong_type_or_range(tiny_run, call, says):
    with pytest.raises(digitsum.UserError, match=says):
        call(tiny_run)
