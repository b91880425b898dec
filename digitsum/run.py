"""A trained run as an object: its recipe, its model, its metrics — to evaluate, predict with,
plot and export. ``digitsum.train()`` returns one; :func:`load_run` reads one back from its
run directory, :func:`load_pretrained` makes one from a shipped recipe's weights, and
:func:`load` does either.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .contracts import Generator
from .errors import UserError, did_you_mean
from .recipe import Recipe, load_recipe
from .engine.build import build
from .engine.model import DigitModel
from .engine.checkpoint import weights_problems
from .engine.resume import open_run
from .files import MetricsLog, flat_record, is_metrics, is_plain, path_arg, read_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .export import Exported
    from .weights import WeightsRecord


class Run:
    """A trained model with everything that made it.

    - ``recipe``: the resolved :class:`~digitsum.recipe.Recipe` it was trained from;
    - ``model``: the trained model, in eval mode, on ``device``;
    - ``generator``: the recipe's dataset generator (data are loaded when first needed);
    - ``summary``: summary.json (``{}`` if the run never wrote one);
    - ``metrics``: one flat dict per epoch and split, e.g. ``{"epoch": 1, "split": "test",
      "digit.loss": 0.04, "digit.accuracy": 0.987, ...}`` (``pandas.DataFrame(run.metrics)``);
    - ``run_dir``: the run directory (None for pretrained weights);
    - ``weights``: the :class:`~digitsum.weights.WeightsRecord` of pretrained weights (None for a
      run directory);
    - ``failure`` and ``interrupted_by``, as :func:`digitsum.train` or :func:`digitsum.resume`
      saw the run end (None on a run read back): why the watch stopped it as failed (a NaN
      loss), and the signal (``signal.SIGINT``...) that stopped it before its last epoch;
    - ``warnings``: what the preflight and the watch warned of during :func:`digitsum.train` or
      :func:`digitsum.resume` (a loss that does not fall, a head at chance), whether or not
      they were printed (``progress=False``); ``()`` on a run read back.
    """

    failure: str | None = None
    interrupted_by: signal.Signals | None = None
    warnings: tuple[str, ...] = ()

    def __init__(self, run_dir: Path | None, recipe: Recipe, model: DigitModel, generator: Generator,
                 device: torch.device, history: list[dict[str, Any]], summary: dict[str, Any],
                 weights: WeightsRecord | None = None) -> None:  # fmt: skip
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.recipe, self.model, self.generator, self.device = recipe, model, generator, device
        self.history, self.summary, self.weights = history, summary, weights
        self.model.eval()

    @property
    def source(self) -> str:
        """What it was read from: the run directory, or ``pretrained <recipe>``."""
        return str(self.run_dir) if self.run_dir is not None else f"pretrained {self.recipe.name}"

    # -- what it is --------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``finished``, ``stopped`` (interrupted; resumable), ``failed`` or ``unfinished`` (no summary yet)."""
        if not self.summary:
            return "unfinished"
        return "failed" if "failed" in self.summary else "stopped" if "stopped" in self.summary else "finished"

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl as flat records: one dict per epoch and split, head metrics as ``head.metric``
        (for pretrained weights, their record's history: the same records without seconds and lr)."""
        if self.run_dir is not None:
            return MetricsLog(self.run_dir / "metrics.jsonl").flat_records()
        return [flat_record({"epoch": e["epoch"], "split": split, "heads": e[split]}) for e in self.history
                for split in ("train", "val", "test") if split in e]  # fmt: skip

    def __repr__(self) -> str:
        test = self.summary.get("metrics", {}).get("test", {})
        primary = {name: choice.cls.primary_metric for name, choice in self.recipe.heads.items()}
        shown = ", ".join(f"{h} {m} {test[h][m]:.4f}" for h, m in primary.items() if m in test.get(h, {}))
        warned = f", {len(self.warnings)} warning{'s' * (len(self.warnings) != 1)} (run.warnings)" if self.warnings else ""
        return (f"Run({self.source!r}, recipe={self.recipe.name!r}, {self.status}, "
                f"epochs {len(self.history)}/{self.recipe.train.epochs}" + (f", test: {shown}" if shown else "") + f"{warned})")  # fmt: skip

    # -- using it ----------------------------------------------------------------------------------

    def evaluate(self, split: str = "test") -> dict[str, dict[str, float]]:
        """Per-head mean loss and metrics over a whole split (``test``, ``train``, or ``val`` when
        the recipe holds one out), as training reports them."""
        from .engine.accel import plan
        from .engine.train import evaluate

        splits = self.generator.split_names()
        if not isinstance(split, str):
            raise UserError(f"split: a split's name ({', '.join(splits)}), not {type(split).__name__}")
        if split not in splits:
            raise UserError(f"no split '{split}' — {did_you_mean(split, splits, 'splits')}")
        with plan(self.recipe.train, self.device).autocast():  # in the precision it trained in: the same figures
            return evaluate(self.model, self.generator, split, self.recipe.seed, self.device)

    def predict(self, *, preprocess: bool = True, top: int = 3, **inputs: Any):
        """Predict every head for raw inputs, e.g. ``run.predict(image="seven.png", number=3)``.

        Each input of the recipe's generator is given by name: images as file paths, PIL
        images, or uint8/float arrays or tensors (one image, or a batch: a list or a leading
        batch axis), numbers as ints (or a list/array). Images of any size and either polarity
        are brought to MNIST's format first (``preprocess=False``: they already are). Returns
        :class:`~digitsum.predict.Predictions`: per head, the predictions and, for
        classifiers, the probabilities and the ``top`` most probable classes.
        """
        from .predict import predict

        if not isinstance(preprocess, bool):
            raise UserError(f"preprocess: True or False, not {type(preprocess).__name__}")
        if not is_plain(top, int) or top < 1:
            raise UserError(f"top: how many of the most probable classes to give, a whole number from 1, not {top!r}")
        return predict(self.model, self.generator, inputs, device=self.device, preprocess=preprocess, top=top)

    def export(self, format: str = "onnx", out: str | Path | None = None, *, force: bool = False) -> Exported:
        """Export the model to ONNX or TorchScript with a JSON sidecar (``digitsum export``).

        The file takes the generator's raw inputs (images as float32 pixels in [0, 1], light on
        dark; numbers as int64) and returns each head's output and ``<head>_prediction``; it is
        checked against this model before it is written. ``out`` defaults to ``model.onnx`` or
        ``model.pt`` in the run directory (``<recipe>.onnx``, ``<recipe>.pt`` in the working folder
        for pretrained weights); see :func:`~digitsum.export.export_run`.
        """
        from .export import export_run

        return export_run(self, format, path_arg(out, "out", optional=True), force=force)

    def curves(self) -> Figure:
        """Loss and primary metric per head and epoch, train and test (shown inline in a notebook)."""
        from .engine.figures import curves_figure
        from .engine.pictures import primary_metrics

        return curves_figure(self.history, primary_metrics(self.recipe))

    def samples(self, count: int = 24) -> Figure:
        """The first ``count`` test samples (at most 1000) with each head's prediction; wrong ones in red."""
        from .engine.batches import EVAL_BATCH
        from .engine.pictures import samples_figure

        if not is_plain(count, int) or not 1 <= count <= EVAL_BATCH:
            raise UserError(f"count: how many test samples to draw, a whole number from 1 to {EVAL_BATCH}, not {count!r}")
        return samples_figure(self.model, self.generator, self.recipe.seed, self.device, self.recipe.name, count)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Read a run directory back: its recipe, and its model from the last checkpoint, in eval
    mode on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``...).

    The checkpoint is read with ``weights_only=True``: it runs no code. A run directory of
    another format, a checkpoint that does not fit its recipe, or a run that stopped before
    its first checkpoint is a UserError saying so.
    """
    from .catalog import looks_like_name

    if not Path(run_dir).exists() and looks_like_name(str(run_dir)):  # a recipe's name, given where a run's folder goes
        name = str(run_dir)
        raise UserError(f"run directory not found: {name} (a recipe's pretrained weights: digitsum.load({name!r}); "
                        f"a new run of it: digitsum.train({name!r}))")
    saved = open_run(Path(run_dir))
    if saved.checkpoint is None:
        if (link := Path(run_dir) / "checkpoint.pt").is_symlink():  # not the run's file: a link to nothing, or a loop
            raise UserError(f"{link} is a link that leads to no file (its target is missing, or links lead in a loop)")
        raise UserError(f"{run_dir} has no checkpoint.pt: the run stopped before its first checkpoint")
    built = build(saved.recipe, device)  # build checks the device and names the argument
    where = saved.run_dir / "checkpoint.pt"
    if problems := weights_problems(built.model.state_dict(), saved.checkpoint["model"]):
        raise UserError(f"{where} holds no weights a run saved: " + "; ".join(problems))
    try:
        built.model.load_state_dict(saved.checkpoint["model"])
    except (RuntimeError, KeyError) as e:
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"{where} does not fit the model its recipe builds: {detail}") from None
    return Run(saved.run_dir, saved.recipe, built.model, built.generator, built.device,
               list(saved.checkpoint["history"]), _read_summary(saved.run_dir))  # fmt: skip


def load_pretrained(name: str, device: str | torch.device = "cpu", progress: bool = True) -> Run:
    """The shipped recipe ``name`` (``original``, ``distribution:name``) with its pretrained weights,
    as a :class:`Run` in eval mode on ``device``: ``run.weights`` is their record (test metrics,
    seed, sha256...). The weights are verified against their record's sha256 and the recipe's
    current settings before anything is loaded; remote ones are downloaded once into the user
    cache (``progress``: a bar on stderr). A UserError names the recipes that have weights when
    ``name`` has none."""
    from .weights import load_weights

    tensors, record, entry = load_weights(name, progress)
    # its loggers' libraries are not needed to predict or evaluate
    recipe = load_recipe(f"{entry.distribution}:{entry.name}", {"seed": record.seed}, require_loggers=False)
    built = build(recipe, device)
    try:
        built.model.load_state_dict(tensors)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"the weights of '{name}' ({entry.path}) do not fit the model its recipe builds: {detail}") from None
    summary = {"recipe": recipe.name, "seed": record.seed, "epochs": record.epochs, "metrics": {"test": record.test}}
    return Run(None, recipe, built.model, built.generator, built.device, list(record.history), summary, record)


def load(source: str | Path, device: str | torch.device = "cpu") -> Run:
    """A trained model by where it is: a run directory (:func:`load_run`), else a shipped
    recipe's name with pretrained weights (:func:`load_pretrained`)."""
    if Path(source).is_dir():
        return load_run(source, device)
    if Path(source).exists():
        trains = f"; a recipe: `digitsum run {source}` trains it into one" if Path(source).suffix == ".toml" else ""
        raise UserError(f"{source} is a file, not a run directory (the folder a run wrote: recipe.toml, checkpoint.pt) "
                        f"nor a recipe's name with pretrained weights (digitsum list recipes){trains}")
    from .catalog import RecipeNotFound, looks_like_name

    if not looks_like_name(str(source)):
        raise UserError(f"run directory not found: {source} (nor is it the name of a recipe with pretrained weights)")
    try:
        return load_pretrained(str(source), device)
    except RecipeNotFound as e:
        raise UserError(f"no run directory {source}, and {e.message}") from None


def _read_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json, its fields of the wrong shape left out: a hand-edited or damaged summary
    reads as one that says less (eval and export compute what they need from the checkpoint)."""
    summary = read_json(run_dir / "summary.json")
    if not isinstance(summary, dict):
        return {}
    shapes = {
        "metrics": lambda v: isinstance(v, dict) and all(isinstance(k, str) and is_metrics(m) for k, m in v.items()),
        "position": lambda v: isinstance(v, dict) and all(is_plain(n, int) for n in v.values()),
        "epochs": lambda v: is_plain(v, int),
        "seconds": lambda v: is_plain(v, (int, float)),
    }  # fmt: skip
    return {key: value for key, value in summary.items() if key not in shapes or shapes[key](value)}
