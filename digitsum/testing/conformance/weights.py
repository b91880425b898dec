"""The check of a distribution's pretrained weights (docs/plugins.md#shipping-weights)."""

import math
from pathlib import Path

import torch

from ...discovery import canonical_name
from ...engine.batches import eval_batches
from ...engine.build import build
from ...engine.train import evaluate
from ...errors import UserError
from ...recipe import load_recipe
from ...run import Run, load_pretrained
from ...weights import load_weights, weights_entries
from ..fixtures import write_tiny_mnist
from ._common import Problems, nothing_declared, workdir_or_scratch
from .model_parts import output_problems, shape_of


def weights_of(distribution: str) -> list[str]:
    """``distribution:recipe`` for every weights entry ``distribution`` declares in the group
    ``digitsum.weights`` (it must be installed), for ``pytest.mark.parametrize``: one test per
    entry. An entry whose record cannot be found is listed too, so that its check fails saying why."""
    names = [f"{e.distribution}:{e.name}" for e in weights_entries()
             if canonical_name(e.distribution) == canonical_name(distribution)]  # fmt: skip
    if not names:
        raise nothing_declared(distribution, "declares no weights", "digitsum.weights")
    return sorted(names)


def check_weights(name: str, workdir: str | Path | None = None) -> Run:
    """Check a shipped recipe's pretrained weights as a user gets them, by name (``recipe`` or
    ``distribution:recipe``); returns the :class:`~digitsum.run.Run`
    :func:`~digitsum.run.load_pretrained` gave.

    Checks the record and the file against each other and the recipe's model, the model on the
    test split of tiny MNIST data written under ``workdir`` (by default a temporary folder,
    removed afterwards), and the record's test metrics (docs/plugins.md lists every check).
    """
    with workdir_or_scratch(workdir, "digitsum-check-weights-") as where:
        return _checked(name, where)


def _checked(name: str, workdir: Path) -> Run:
    problems = Problems("weights", name)  # "weights 'name'" in the message
    try:
        tensors, record, entry = load_weights(name, progress=False)
    except UserError as e:
        problems.fail(e.message)
    qualified = f"{entry.distribution}:{entry.name}"
    root = write_tiny_mnist(workdir / "mnist")
    tiny = {"seed": record.seed, "data.root": str(root), "data.download": False, "train.device": "cpu"}
    try:
        recipe = load_recipe(qualified, tiny, require_loggers=False)
        built = build(recipe, "cpu")
    except UserError as e:
        problems.fail(f"its recipe does not build: {e.message}")

    expected = built.model.state_dict()
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing:
        problems.append(f"the file lacks {len(missing)} tensor(s) of the recipe's model: {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"the file holds {len(unexpected)} tensor(s) the recipe's model does not have: {', '.join(unexpected[:8])}")
    for key in sorted(expected.keys() & tensors.keys()):
        if tuple(tensors[key].shape) != tuple(expected[key].shape):
            problems.append(f"tensor '{key}' has shape {tuple(tensors[key].shape)}, the recipe's model {tuple(expected[key].shape)}")
        elif tensors[key].is_floating_point() and not torch.isfinite(tensors[key]).all():
            problems.append(f"tensor '{key}' holds NaN or infinite values")
    parameters = sum(p.numel() for p in built.model.parameters())
    if record.parameters != parameters:
        problems.append(f"the record says {record.parameters} parameters, the recipe's model has {parameters}")
    problems.raise_any()

    try:
        run = load_pretrained(name, "cpu", progress=False)  # the way users load them
    except UserError as e:
        problems.fail(f"load_pretrained({name!r}) refused them: {e.message}")
    try:
        measured = evaluate(run.model, built.generator, "test", record.seed, torch.device("cpu"))
        problems += _output_problems(run, built.generator, record.seed)
    except Exception as e:  # a component's own code: what the user would meet
        problems.fail(f"the model raised {type(e).__name__} on the tiny data: {e}")
    for head, values in measured.items():
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            problems.append(f"head '{head}' gives non-finite {bad} on the tiny data")
    problems += _record_metric_problems(record.test, measured)
    problems.raise_any()
    return run


def _output_problems(run: Run, generator, seed: int) -> list[str]:
    """Each head's outputs on one tiny test batch against what the head declares."""
    problems = []
    batch = next(eval_batches(generator, "test", seed, torch.device("cpu")))
    model = run.model.eval()
    with torch.no_grad():
        outputs = model(batch)
    for name, head in model.heads.items():
        output, target = outputs[name], batch[model.bindings[name].target]
        size = len(target)
        label = f"head '{name}'"
        if not isinstance(output, torch.Tensor) or output.shape[:1] != (size,):
            problems.append(f"{label}: output of shape {shape_of(output)} for a batch of {size}")
            continue
        if output.is_floating_point() and not torch.isfinite(output).all():
            problems.append(f"{label}: its output holds NaN or infinite values")
        problems += [f"{label}: {p}" for p in output_problems(head, output, target)]
    return problems


def _record_metric_problems(recorded: dict[str, dict[str, float]], measured: dict[str, dict[str, float]]) -> list[str]:
    """The record's test metrics against the heads of the recipe and the metrics each computes."""
    problems = []
    for head, values in measured.items():
        if head not in recorded:
            problems.append(f"the record has no test metrics for head '{head}' of the recipe")
            continue
        absent = sorted(values.keys() - recorded[head].keys())
        if absent:
            problems.append(f"the record's test metrics of head '{head}' lack {', '.join(absent)}")
        bad = {k: v for k, v in recorded[head].items() if not math.isfinite(v)}
        if bad:
            problems.append(f"the record's test metrics of head '{head}' are not finite: {bad}")
    for head in sorted(recorded.keys() - measured.keys()):
        problems.append(f"the record has test metrics for head '{head}', which the recipe does not have")
    return problems
