"""A component's own exception ends in a short report naming it, its origin and the method;
digitsum's own bugs keep their traceback; every callback is closed; the run directory says
that the run failed and why."""

from __future__ import annotations

import json

import pytest
import torch

from digitsum.components.data.single_digit import SingleDigit
from digitsum.components.heads.classify import Classify
from digitsum.components.optimizers import SGD
from digitsum.components.schedules import Constant
from digitsum.callbacks import Callback
from digitsum.engine.component_errors import ComponentError
from digitsum.engine.runner import start
from digitsum.engine.train import Trainer
from digitsum.recipe import load_recipe
from digitsum.contracts import Fusion, Logger
from digitsum.registry import fusions, heads, loggers

from ..conftest import RECIPES, TINY, fake_distribution, registered, run_subprocess
from ..runs import tiny_args


def explode(value: int) -> None:
    raise ValueError(f"exploded at call {value}")


class LateBomb(Classify):
    """A classifier whose loss raises on its fourth call (a bug that shows up mid-epoch)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls = 0

    def loss(self, output, target):
        self.calls += 1
        if self.calls == 4:
            explode(self.calls)
        return super().loss(output, target)


@pytest.fixture
def late_bomb():
    with registered(heads, "late_bomb", LateBomb) as name:
        yield name


class Closes(Callback):
    def __init__(self) -> None:
        self.closed_with: BaseException | None = None
        self.ended = False

    def on_exception(self, trainer, error) -> None:
        self.closed_with = error

    def on_end(self, trainer, summary) -> None:
        self.ended = True


def bomb_recipe(root, name: str):
    return load_recipe(RECIPES / "original.toml", tiny_args(root, 1, 64, f'heads.sum={{type="{name}", target="sum"}}'))


def test_a_component_exception_names_the_component_and_method_with_its_own_frames(tiny_root, tmp_path, late_bomb):
    closes = Closes()
    with pytest.raises(ComponentError) as caught:
        start(bomb_recipe(tiny_root, late_bomb), tmp_path / "run", callbacks=[closes], progress=False, preflight=False)
    error = caught.value
    assert error.exit_code == 1 and error.method == "loss" and error.component == "head 'late_bomb'"
    assert "ValueError: exploded at call 4" in error.message
    assert "in loss" in error.message and "in explode" in error.message  # the component's own frames...
    assert "train.py" not in error.message and "torch" not in error.message  # ...and no one else's
    assert isinstance(closes.closed_with, ComponentError) and not closes.ended
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "late_bomb" in summary["failed"] and summary["position"] == {"epoch": 0, "step": 3}


class Narrow(Classify):
    """A head whose forward drops its last class: the loss trips on it, forward made the fault."""

    def forward(self, features):
        return super().forward(features)[:, :-1]


class Wide(Classify):
    """A head whose forward adds a logit: nothing trips on it, the loss just spreads probability onto it."""

    def forward(self, features):
        logits = super().forward(features)
        return torch.cat([logits, logits[:, :1]], dim=1)


@pytest.mark.parametrize("head, shape, then", [
    (Narrow, [64, 18], "loss() then raised"),  # the loss trips on it
    (Wide, [64, 20], "(a bug in that head's forward(), or its output_kind"),  # nothing trips: refused at the first step
])  # fmt: skip
def test_a_heads_misshapen_output_is_blamed_on_its_forward_not_on_the_loss(tiny_root, tmp_path, head, shape, then):
    with registered(heads, "misshapen", head), pytest.raises(ComponentError) as caught:
        start(bomb_recipe(tiny_root, "misshapen"), tmp_path / "run", progress=False, preflight=False)
    error = caught.value
    assert error.method == "forward" and error.component == "head 'misshapen'"
    assert f"forward() returned an output of shape {shape} where its output_kind 'class_logits' declares [64, 19]" in error.message
    assert then in error.message
    if head is Narrow:
        assert "the traceback shows where its loss() tripped on it" in error.message
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "misshapen" in summary["failed"] and summary["position"] == {"epoch": 0, "step": 0}


class Short(Fusion):
    """A fusion that declares 16 features and returns 8."""

    def __init__(self, params, inputs):
        super().__init__(params, inputs)
        self.out_features = 16
        self.linear = torch.nn.Linear(28 * 28, 8)

    def forward(self, batch):
        return self.linear(batch["image"].flatten(1))


def test_features_narrower_than_the_fusion_declares_are_blamed_on_its_forward_not_on_the_head_that_trips(tiny_root, tmp_path):
    with registered(fusions, "short", Short), pytest.raises(ComponentError) as caught:
        recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64, "backbone.type=short"))
        start(recipe, tmp_path / "run", progress=False, preflight=False)
    error = caught.value  # was: "head 'classify' from built-in raised RuntimeError in forward()", a bug in that component's code
    assert error.method == "forward" and error.component == "fusion 'short'"
    assert "forward() returned features of shape [64, 8] where its out_features declares [64, 16]" in error.message
    assert "the forward() of head 'classify' then raised" in error.message and "out_features;" in error.message
    # the frames shown are the head's (the fusion's forward() had returned): the message says so
    assert "the traceback shows where head 'classify' tripped on them" in error.message


def test_a_plugin_component_exception_names_its_distribution_and_exits_1(tiny_root, tmp_path):
    source = (
        "from digitsum.components.heads.classify import Classify\n"
        "class Grumpy(Classify):\n"
        "    '''A head whose loss always raises.'''\n"
        "    def loss(self, output, target):\n"
        "        return self.helper(output)\n"
        "    def helper(self, output):\n"
        "        raise KeyError('no such thing')\n"
    )  # fmt: skip
    site = fake_distribution(tmp_path / "site", "digitsum-grumpy", "0.2", {"digitsum.heads": {"grumpy": "grumpy_plugin:Grumpy"}},
                             {"grumpy_plugin/__init__.py": source})  # fmt: skip
    out = tmp_path / "run"
    result = run_subprocess("run", RECIPES / "original.toml", *TINY, "--set", 'heads.sum={type="grumpy", target="sum"}',
                            "--out", out, env={"PYTHONPATH": str(site), "DIGITSUM_DATA": str(tiny_root)})  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "head 'grumpy' from digitsum-grumpy 0.2 raised KeyError in helper()" in result.stderr
    assert "grumpy_plugin/__init__.py" in result.stderr and "Traceback" not in result.stderr
    assert "site-packages" not in result.stderr
    assert "records the failure" in result.stderr
    assert "KeyError" in json.loads((out / "summary.json").read_text())["failed"]


def test_a_failure_in_digitsum_itself_keeps_its_traceback_and_closes_callbacks(tiny_root, tmp_path, monkeypatch):
    def broken(self, split="test"):
        raise RuntimeError("a bug in digitsum")

    monkeypatch.setattr(Trainer, "evaluate", broken)
    closes = Closes()
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1))
    with pytest.raises(RuntimeError, match="a bug in digitsum"):
        start(recipe, tmp_path / "run", callbacks=[closes], progress=False, preflight=False)
    assert isinstance(closes.closed_with, RuntimeError)
    assert "RuntimeError: a bug in digitsum" in json.loads((tmp_path / "run" / "summary.json").read_text())["failed"]


class NoSize(SingleDigit):
    """single_digit whose size() raises: a generator broken before any step."""

    def size(self, split):
        raise IndexError("bad split table")


def test_a_generator_that_raises_while_building_leaves_no_run_directory(tiny_root, tmp_path):
    from digitsum.registry import datasets

    with registered(datasets, "no_size", NoSize):
        recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64, "data.type='no_size'"))
        with pytest.raises(ComponentError, match=r"dataset generator 'no_size' from local \(.*NoSize\) raised IndexError in size"):
            start(recipe, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


class DoubleImages(SingleDigit):
    """Images in float64, which the model's float32 weights cannot take."""

    def draw(self, split, index, rng):
        batch = super().draw(split, index, rng)
        return {**batch, "image": batch["image"].double()}


class NoNumber(SingleDigit):
    """A batch without one of its declared inputs."""

    def draw(self, split, index, rng):
        return {k: v for k, v in super().draw(split, index, rng).items() if k != "number"}


@pytest.mark.parametrize("generator, problem", [(DoubleImages, "'image' is torch.float64"), (NoNumber, "'number' is missing")])
def test_a_batch_that_breaks_its_generators_specs_names_the_generator_not_the_fusion(tiny_root, tmp_path, generator, problem):
    from digitsum.registry import datasets

    with registered(datasets, "off_spec", generator):
        recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64, "data.type='off_spec'"))
        with pytest.raises(ComponentError) as caught:
            start(recipe, tmp_path / "run", progress=False)
    assert caught.value.component == "dataset generator 'off_spec'" and caught.value.method == "draw"
    assert problem in caught.value.message and "fusion" not in caught.value.message


class Counts(Callback):
    """Counts steps; its count is state that must survive a resume."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.steps, self.stop_at = 0, stop_at

    def on_step(self, trainer, epoch, step, loss) -> None:
        self.steps += 1
        if self.steps == self.stop_at:
            trainer.request_stop("asked by test")

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state) -> None:
        self.steps = state["steps"]


def test_callback_state_is_saved_in_checkpoints_and_restored_on_resume(tiny_root, tmp_path):
    from digitsum.engine.runner import resume

    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 2))
    first = start(recipe, tmp_path / "run", callbacks=[Counts(stop_at=11)], progress=False)
    assert first.summary["stopped"] == "asked by test"
    again = Counts()
    resumed = resume(tmp_path / "run", callbacks=[again], progress=False)
    assert resumed.trainer.finished and again.steps == 2 * resumed.trainer.steps_per_epoch
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["callbacks"]["Counts"] == {"steps": again.steps}


class BrokenLogger(Logger):
    """A logger whose epoch hook raises: a plugin's bug outside the model."""

    contract = 1

    def on_epoch_end(self, trainer, epoch, train, test) -> None:
        explode(epoch)


class BrokenCallback(Callback):
    def on_epoch_end(self, trainer, epoch, train, test) -> None:
        explode(epoch + 100)


@pytest.fixture
def broken_logger():
    with registered(loggers, "broken", BrokenLogger) as name:
        yield name


@pytest.mark.parametrize("who", ["logger", "callback"])
def test_a_logger_or_callback_exception_names_it_and_the_run_records_it(tiny_root, tmp_path, broken_logger, who):
    """Outside the model too: the logger of [log.<name>] or the callback object given to train."""
    extra = ['log.mine={type="broken"}'] if who == "logger" else []
    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 2, 64, *extra))
    callbacks = [BrokenCallback()] if who == "callback" else []
    with pytest.raises(ComponentError) as caught:
        start(recipe, tmp_path / "run", callbacks=callbacks, progress=False, preflight=False)
    error = caught.value
    named = "logger 'broken'" if who == "logger" else "callback BrokenCallback"
    assert error.component == named and error.method == "on_epoch_end" and "in explode" in error.message
    assert "train.py" not in error.message and "callbacks.py" not in error.message
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert named in summary["failed"] and summary["position"]["epoch"] == 1  # the epoch's checkpoint was kept


def test_a_run_stopped_by_a_broken_logger_resumes_after_the_fix(tiny_root, tmp_path, broken_logger):
    from digitsum.engine.runner import resume

    recipe = load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 2, 64, 'log.mine={type="broken"}'))
    with pytest.raises(ComponentError):
        start(recipe, tmp_path / "run", progress=False, preflight=False)

    class Fixed(BrokenLogger):
        def on_epoch_end(self, trainer, epoch, train, test) -> None:
            pass

    loggers.remove("broken")
    loggers.register("broken")(Fixed)  # the plugin's author fixed it; the fixture removes it after
    outcome = resume(tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "failed" not in summary and summary["epochs"] == 2 and len(outcome.trainer.history) == 2


LAZY_FUSION = (
    "from torch import nn\n"
    "from digitsum import Fusion, Image\n"
    "class Lazy(Fusion):\n"
    "    '''Flattens the image; a LazyLinear learns its width from the first batch.'''\n"
    "    def __init__(self, params, inputs):\n"
    "        super().__init__(params, inputs)\n"
    "        self.image = next(k for k, s in inputs.items() if isinstance(s, Image))\n"
    "        self.proj = nn.Sequential(nn.Flatten(), nn.LazyLinear(16))\n"
    "        self.out_features = 16\n"
    "    def forward(self, batch):\n"
    "        return self.proj(batch[self.image])\n"
)


def test_a_lazy_module_is_refused_when_the_model_is_built_naming_the_component_and_its_distribution(tiny_root, tmp_path):
    """A lazy layer has no weights to count, seed, move or checkpoint until a batch passed: it
    is refused with what to do, not left to torch's traceback from moving the model."""
    site = fake_distribution(tmp_path / "site", "digitsum-lazy", "0.3", {"digitsum.fusions": {"lazy": "lazy_plugin:Lazy"}},
                             {"lazy_plugin/__init__.py": LAZY_FUSION})  # fmt: skip
    result = run_subprocess("run", RECIPES / "original.toml", *TINY, "--set", 'backbone={type="lazy"}', "--set", "train.channels_last=true",
                            "--out", tmp_path / "run", env={"PYTHONPATH": str(site), "DIGITSUM_DATA": str(tiny_root)})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert ("fusion 'lazy' from digitsum-lazy 0.3 has parameters that are not initialised before its first batch: "
            "proj.1.weight, proj.1.bias (LazyLinear)") in result.stderr


# -- a state_dict a checkpoint cannot hold is named before it replaces a good checkpoint ------------


class _NumpyStateSGD(torch.optim.SGD):
    """SGD keeping a numpy array in its state: saved fine, refused by torch.load(weights_only=True)."""

    def step(self, closure=None):
        import numpy

        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["seen"] = numpy.zeros(2)
        return super().step(closure)


class _NumpyOptimizer(SGD):
    """SGD whose state holds numpy arrays."""

    def build(self, parameters):
        return _NumpyStateSGD(parameters, lr=self.params.lr)


class _FunctionSchedule(Constant):
    """A constant schedule whose state_dict holds a function."""

    def build(self, optimizer, total_steps):
        scheduler = super().build(optimizer, total_steps)
        scheduler.state_dict = lambda: {"factor": explode}
        return scheduler


class _FileLogger(Logger):
    """Keeps its open file in its state_dict."""

    def on_start(self, trainer):
        self.out = open(trainer.run_dir / "log.txt", "a")

    def on_end(self, trainer, summary):
        self.out.close()

    def on_exception(self, trainer, error):
        self.out.close()

    def state_dict(self):
        return {"out": self.out}


@pytest.mark.parametrize("kind, component, override, culprit", [
    ("optimizers", _NumpyOptimizer, 'train.optimizer.type="unsaveable"', "['state'][0]['seen'] is a numpy.ndarray"),
    ("schedules", _FunctionSchedule, 'train.schedule.type="unsaveable"', "['factor'] is a builtins.function"),
    ("loggers", _FileLogger, "log.unsaveable={}", "['out'] is a _io.TextIOWrapper"),
])  # fmt: skip
def test_a_state_dict_a_checkpoint_cannot_hold_is_named_before_it_is_written(kind, component, override, culprit, cli, tiny_data, tmp_path):
    from digitsum.registry import REGISTRIES

    with registered(REGISTRIES[kind], "unsaveable", component):
        result = cli("run", RECIPES / "original.toml", "--set", "train.epochs=1", "--set", override, "--out", tmp_path / "run")
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert "'unsaveable' from local (" in result.err and "its state_dict() holds what a checkpoint cannot hold" in result.err, result.err
    assert f"({culprit}, which torch.load(weights_only=True) refuses)" in " ".join(result.err.split())  # the key, not torch's pages
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # no checkpoint that --resume would refuse


class Hungry(Classify):
    """A head whose forward asks for more memory than the machine has (as torch's CPU allocator says it)."""

    def forward(self, features):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes")


@pytest.mark.parametrize("error", ["runtime", "memory"])
def test_running_out_of_memory_is_a_user_error_not_a_bug_in_the_component(tiny_root, tmp_path, error, monkeypatch):
    if error == "memory":
        monkeypatch.setattr(Hungry, "forward", lambda self, features: (_ for _ in ()).throw(MemoryError()))
    from digitsum.errors import UserError

    with registered(heads, "hungry", Hungry) as name, pytest.raises(UserError) as caught:
        start(bomb_recipe(tiny_root, name), tmp_path / "run", progress=False, preflight=False)
    assert not isinstance(caught.value, ComponentError) and caught.value.exit_code == 2
    assert caught.value.message.startswith("out of memory") and "data.batch_size" in caught.value.message
    assert "a bug in that component" not in caught.value.message


def test_the_doctor_names_the_fusion_whose_features_a_built_in_head_trips_on_once(tiny_data):
    from digitsum.diagnosis import Probe, diagnose

    with registered(fusions, "short", Short):
        probe = Probe.from_recipe(load_recipe(RECIPES / "original.toml", ["backbone.type=short"]))
        report = diagnose(probe, ["data", "head_output", "loss_weights"], verify=False)
    [crash] = [f for f in report.findings if f.severity == "error"]  # was: a second error blaming the built-in head
    assert crash.title.startswith("fusion 'short' from local") and sorted(crash.figures["checks"]) == ["data", "head_output", "loss_weights"]
    assert crash.measured.startswith("its forward() returned features of shape [64, 8] where its out_features declares [64, 16]")


class PerSampleLoss(Classify):
    """loss() left unreduced: one value per sample."""

    def loss(self, output, target):
        return torch.nn.functional.cross_entropy(output, target, reduction="none")


class BatchMeanMetric(Classify):
    """metrics() averaged over the batch: a scalar where a value per sample belongs."""

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(1) == target).float().mean()}


@pytest.mark.parametrize("head, method, says", [(PerSampleLoss, "loss", "loss() returned a float32 tensor of shape [64]"),
                                                (BatchMeanMetric, "metrics", "metrics() returned 'accuracy' as a float32 tensor of shape []")])  # fmt: skip
def test_a_head_that_breaks_its_loss_or_metrics_contract_is_named_by_run_and_doctor(tiny_root, tmp_path, head, method, says):
    # was: run: torch's "grad can be implicitly created only for scalar outputs" traceback (loss),
    # or a run that ended with accuracy 0.0004 (metrics); doctor: "healthy", eight built-in checks blamed
    from digitsum.diagnosis import Probe, diagnose

    with registered(heads, "broken", head) as name:
        with pytest.raises(ComponentError) as caught:
            start(bomb_recipe(tiny_root, name), tmp_path / "run", progress=False, preflight=False)
        report = diagnose(Probe.from_recipe(bomb_recipe(tiny_root, name)), verify=False)
    assert caught.value.method == method and says in caught.value.message and f"head '{name}'" in caught.value.message
    [breach] = [f for f in report.findings if f.severity != "info"]  # no check ran on it to trip in digitsum's code
    assert breach.severity == "error" and breach.title == f"head '{name}' from local (tests.engine.test_component_errors:{head.__name__}) breaks its contract in {method}()"


class NoWidth(Fusion):
    """A fusion that never sets out_features."""

    def __init__(self, params, inputs):
        super().__init__(params, inputs)
        self.linear = torch.nn.Linear(28 * 28, 8)

    def forward(self, batch):
        return self.linear(batch["image"].flatten(1))


def test_a_fusion_without_out_features_is_refused_when_the_model_is_built(tiny_root, tmp_path):
    # was: AttributeError: 'NoWidth' object has no attribute 'out_features', a traceback
    from digitsum.errors import UserError

    with registered(fusions, "no_width", NoWidth) as name, pytest.raises(UserError, match=f"fusion '{name}' .* has out_features = None"):
        start(load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64, f"backbone.type={name}")), tmp_path / "run", progress=False)


class Normalised(Fusion):
    """A fusion with batch norm: in training, a batch of one sample is an error in torch."""

    def __init__(self, params, inputs):
        super().__init__(params, inputs)
        self.out_features = 8
        self.layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 8), torch.nn.BatchNorm1d(8))

    def forward(self, batch):
        return self.layers(batch["image"])


def test_a_batch_norm_trains_when_the_epochs_last_batch_would_hold_one_sample(tiny_root, tmp_path):
    # was: the epoch's last batch, of the one sample left over, crashed the batch norm in torch
    from digitsum.engine.build import build

    n = build(load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 64))).generator.size("train")
    with registered(fusions, "normalised", Normalised) as name:
        result = start(load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, n - 1, f"backbone.type={name}")),
                       tmp_path / "run", progress=False, preflight=False)  # fmt: skip
    assert result.trainer.finished and result.trainer.steps_per_epoch == 1  # the one sample left waits for another epoch


def test_batch_norm_on_a_batch_of_one_names_the_batch_size_too(tiny_root, tmp_path):
    # was: blamed on the fusion's code alone, while data.batch_size = 1 is what to change
    with registered(fusions, "normalised", Normalised) as name, pytest.raises(ComponentError) as caught:
        start(load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 1, f"backbone.type={name}")), tmp_path / "run",
              progress=False, preflight=False)  # fmt: skip
    assert "batch norm needs 2 samples or more in a training batch; data.batch_size is 1" in caught.value.message
    from digitsum.diagnosis import Probe, diagnose

    with registered(fusions, "normalised", Normalised) as name:
        probe = Probe.from_recipe(load_recipe(RECIPES / "original.toml", tiny_args(tiny_root, 1, 1, f"backbone.type={name}")))
        found = diagnose(probe, ["short_run"], verify=False).findings
    [crash] = [f for f in found if f.severity == "error"]
    assert "or the recipe: batch norm needs 2 samples or more in a training batch; data.batch_size is 1" in crash.fix
