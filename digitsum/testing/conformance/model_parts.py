"""The conformance checks of the model's parts, fusions and heads, on random tensors."""

import math
from copy import deepcopy

import torch
from torch import nn

from ...contract_checks import declared_classes, is_width, probabilities_problems, uninitialised_problem
from ...contracts import OUTPUT_KINDS, Categorical, declared_output_shape, Classes, Digits, Fusion, Head, Image, Images
from ...diagnosis.checks.floor import RAISED
from ...diagnosis.checks.loss import probability_output
from ...diagnosis.checks.training import MEMORISED, predict_disagrees
from ..fixtures import random_batch
from ._common import Problems, common_checks, reporting_crashes

#: What a fusion is checked against unless told otherwise: the notebook's task first, then, for a
#: fusion that refuses it, the first of these it accepts (two images; two sequences of three images).
CANDIDATE_INPUTS = [
    {"image": Image(1, 28, 28), "number": Categorical(10)},
    {"image_a": Image(1, 28, 28), "image_b": Image(1, 28, 28)},
    {"a": Images(3), "b": Images(3)},
]


@reporting_crashes("fusion")
def check_fusion(cls: type, params=None, *, inputs=None, batch_size: int = 4) -> None:
    """Check a Fusion against its contract on random ``inputs`` (by default the first of
    :data:`CANDIDATE_INPUTS` it accepts): Params, ``check``, ``out_features``, a reproducible
    initialisation, forward and backward passes (docs/plugins.md lists every check).
    """
    problems, params = common_checks("fusion", cls, Fusion, params)
    candidates = [dict(c) for c in CANDIDATE_INPUTS]  # copies: check() is the plugin's code
    inputs = dict(accepted(problems, cls, params, None if inputs is None else dict(inputs), candidates, "inputs", "serve them", {}))
    fusion = built_reproducibly(problems, cls, params, inputs)
    out_features = getattr(fusion, "out_features", None)
    if not is_width(out_features):
        problems.fail(f"out_features = {out_features!r}, expected a positive int")
    batch = random_batch(inputs, batch_size)
    output = fusion(batch)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (batch_size, out_features) or not output.is_floating_point():
        problems.append(f"forward(batch) gave {shape_of(output)}, expected float ({batch_size}, {out_features}): "
                        f"[batch, out_features] (out_features = {out_features})")
    elif not torch.isfinite(output).all():
        problems.append("forward(batch) gave NaN or infinite values")
    else:
        output.pow(2).mean().backward()
        problems += grad_problems(fusion, "backward")
        fusion.eval()
        with torch.no_grad():
            if not torch.equal(fusion(batch), fusion(batch)):
                problems.append("forward(batch) in eval mode differs between two calls")
    problems.raise_any()


#: What a head is checked against unless told otherwise: ten classes, then, for a head that
#: refuses them, the first of these it accepts (a 3-digit number: the sum of two 2-digit ones).
CANDIDATE_TARGETS = [Classes(10), Digits(3)]


@reporting_crashes("head")
def check_head(cls: type, params=None, *, target=None, in_features: int = 16, batch_size: int = 8) -> None:
    """Check a Head against its contract on random features for ``target`` (by default the first
    of :data:`CANDIDATE_TARGETS` it accepts): Params, ``check``, a reproducible initialisation,
    ``loss`` and its gradient, ``metrics``, ``predict`` and ``probabilities`` (docs/plugins.md
    lists every check). ``in_features`` is the head's ``features_for(params, target)`` when it
    names a number. A ``Digits`` target gets random digits as labels (some may be numbers the
    head finds impossible, e.g. a sum of two 2-digit numbers above 199: its loss must stay finite).
    """
    problems, params = common_checks("head", cls, Head, params)
    target = accepted(problems, cls, params, target, CANDIDATE_TARGETS, "target", "predict it", Image())
    needed = cls.features_for(params, target)
    if needed is not None:
        if not isinstance(needed, int) or needed < 1:
            problems.fail(f"features_for() = {needed!r}, expected None or a positive int")
        in_features = needed
    head = built_reproducibly(problems, cls, params, in_features, target)
    features = torch.randn(batch_size, in_features, generator=torch.Generator().manual_seed(0), requires_grad=True)
    high, shape = (target.base, (batch_size, target.length)) if isinstance(target, Digits) else (target.classes, (batch_size,))
    labels = torch.randint(0, high, shape, generator=torch.Generator().manual_seed(1))
    output = head(features)
    space = head.prediction_space()
    classes = space.classes if space.classes is not None else getattr(target, "classes", None)
    declared = declared_output_shape(getattr(cls, "output_kind", "class_logits"), batch_size, classes)
    if declared is not None and shape_of(output) != str(declared):  # loss() and metrics() would trip over it
        problems.fail(f"forward(): {output_kind_problems(cls, head, output, batch_size, classes, space.top)[0]}")
    loss = head.loss(output, labels)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not torch.isfinite(loss):
        problems.append(f"loss(output, target) must be a finite scalar tensor, got {loss!r}")
    else:
        loss.backward()
        if features.grad is None or not torch.isfinite(features.grad).all():
            problems.append("the loss's gradient does not reach the features (or is not finite)")
        problems += grad_problems(head, "loss.backward()")
        problems += _mean_problems(head, output.detach(), labels, float(loss.detach()))
    problems += output_problems(head, output, labels)
    problems += confident_logits_problems(head, labels, classes)
    if not problems:  # predict() and probabilities() have the shapes they declare
        problems += memorised_predict_problems(head, features.detach(), labels)
    problems.raise_any()


def _mean_problems(head, output, labels, loss: float) -> list[str]:
    """The loss is a mean over the batch: the same batch twice over gives the same loss (a sum
    over the samples doubles, and a run's steps would grow with its batch size)."""
    with torch.no_grad():
        twice = float(head.loss(torch.cat([output, output]), torch.cat([labels, labels])))
    if math.isfinite(twice) and abs(loss) > 1e-6 and abs(twice / loss - 2) < 1e-3:
        return [f"loss(output, target) is a sum over the batch, not its mean: the batch twice over gives {twice:.4g}, "
                f"twice its {loss:.4g} (reduction=\"mean\")"]
    return []


def memorised_predict_problems(head, features, labels, steps: int = 300) -> list[str]:
    """A copy of the head trained alone on one batch of fixed features until the argmax of its
    own ``probabilities`` is right on it: ``predict`` must then be right on it too (the doctor's
    ``overfit`` test, on the head alone). Catches a ``predict`` that does not read the output
    the way the loss trains it (an offset, another order) whatever the head's ``output_kind``;
    says nothing of a head without probabilities or one that does not memorise the batch."""
    space = head.prediction_space()
    expected = space.expected(labels)
    if space.top != 1 or space.length is not None or expected.dim() != 1:
        return []
    copy = deepcopy(head).train()
    optimizer = torch.optim.Adam(copy.parameters(), lr=1e-2)

    def fit() -> tuple[float, float]:  # argmax of probabilities, predict: share right, in eval mode (no dropout)
        with torch.no_grad():
            output = copy.eval()(features)
            copy.train()
            p = copy.probabilities(output)
            if p is None:
                return float("nan"), float("nan")
            return float((p.argmax(dim=1) == expected).float().mean()), float(space.right(copy.predict(output), expected).float().mean())

    by_argmax, right = fit()
    for step in range(steps):
        if by_argmax != by_argmax or by_argmax >= MEMORISED:  # no probabilities (NaN), or memorised
            break
        optimizer.zero_grad(set_to_none=True)
        copy.loss(copy(features), labels).backward()
        optimizer.step()
        if step % 10 == 9:
            by_argmax, right = fit()
    if not predict_disagrees(by_argmax, right):  # NaN (no probabilities) is never memorised
        return []
    return [f"predict() disagrees with its loss: trained alone on one batch of {len(labels)}, the argmax of its own "
            f"probabilities() is right on {by_argmax:.0%} of it and predict() on {right:.0%}; predict() must read the "
            "output the way loss() trains it (an offset or another order of classes makes every prediction wrong)"]  # fmt: skip


def confident_logits_problems(head, labels, classes: int | None) -> list[str]:
    """For a class-logits head with one class per prediction: logits that put the target's class
    ahead by a margin must cost far less than uniform ones (a softmax before a cross-entropy
    keeps a perfect prediction at ln(1 + (K-1)/e), as the doctor's ``loss_floor`` measures)."""
    space = head.prediction_space()
    if getattr(type(head), "output_kind", "class_logits") != "class_logits" or space.top != 1 or not classes:
        return []
    with torch.no_grad():
        expected = space.expected(labels)
        if expected.dim() != 1 or expected.dtype != torch.long or int(expected.min()) < 0 or int(expected.max()) >= classes:
            return []
        hot = torch.nn.functional.one_hot(expected, classes).float()
        uniform = float(head.loss(torch.zeros_like(hot), labels))
        best = min(float(head.loss(margin * hot, labels)) for margin in (1.0, 2.0, 4.0, 8.0, 16.0))
    if uniform > 0 and best > RAISED * uniform:  # the share the doctor's loss_floor calls raised
        return [f"loss() of logits that put the target's class ahead by up to 16 is at best {best:.3g}, against {uniform:.3g} "
                "for uniform ones: it cannot fall far (a softmax before F.cross_entropy, which applies log-softmax itself, "
                "keeps it at ln(1 + (K-1)/e)); give the loss the logits themselves"]  # fmt: skip
    return []


def output_problems(head, output, labels) -> list[str]:
    """A head's output on a batch against what the head declares: per-sample metrics holding its
    ``primary_metric``, ``predict`` of the shape its prediction space gives, ``probabilities``
    and its ``output_kind``. Shared by :func:`check_head` (random features) and the weights check
    (a trained model on tiny data)."""
    problems, size = [], len(labels)
    with torch.no_grad():
        metrics = head.metrics(output, labels)
        if not isinstance(metrics, dict):
            problems.append("metrics() must return a dict of per-sample tensors")
            metrics = {}
        for name, value in metrics.items():
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (size,):
                problems.append(f"metric '{name}' must be a per-sample tensor of shape ({size},), got {shape_of(value)}")
        if type(head).primary_metric not in metrics:
            problems.append(f"primary_metric '{type(head).primary_metric}' is not among its metrics {sorted(metrics)}")
        prediction = head.predict(output)
        space = head.prediction_space()
        if not isinstance(prediction, torch.Tensor) or tuple(prediction.shape) != space.shape(size):
            problems.append(f"predict(output) gives {shape_of(prediction)}, its prediction_space declares {space.shape(size)}")
        classes = declared_classes(head)
        problems += probabilities_problems(head.probabilities(output), size, classes)
        problems += output_kind_problems(type(head), head, output, size, classes, space.top)
        problems += probability_output_problems(head, output, labels)
    return problems


def probability_output_problems(head, output, labels) -> list[str]:
    """A class-logits head whose output already is probabilities, which its loss softmaxes again or
    reads other than as a log-loss (the doctor's test, :func:`~digitsum.diagnosis.checks.loss.probability_output`)."""
    found = probability_output(head, output, labels)
    if found is None or found.log_loss:
        return []
    fix = ("return logits from forward() (the loss applies log-softmax, as F.cross_entropy does) and give "
           "probabilities from probabilities()")  # fmt: skip
    if found.softmax_twice:
        return [f"forward() returns probabilities (every row non-negative, summing to 1) and loss() applies softmax to them "
                f"again: a perfect prediction still costs {found.floor:.3g} instead of about 0 and the gradients shrink, so the "
                f"head barely learns; {fix}"]  # fmt: skip
    return [f"forward() returns probabilities (every row non-negative, summing to 1) and loss() reads them, but not as a "
            f"log-loss: a perfect prediction costs {found.floor:.3g} and a uniform one {found.uniform:.3g}, not 0 and "
            f"ln({found.classes}) (nll_loss takes log-probabilities); {fix}"]  # fmt: skip


def output_kind_problems(cls: type, head, output, batch_size: int, classes: int | None, top: int = 1) -> list[str]:
    """The head's declared ``output_kind`` against what it outputs and predicts (``top``: the
    classes per prediction its prediction space declares)."""
    kind = getattr(cls, "output_kind", "class_logits")
    if kind not in OUTPUT_KINDS:
        return [f"output_kind {kind!r} is not one of {', '.join(OUTPUT_KINDS)}"]
    shape = declared_output_shape(kind, batch_size, classes)
    if kind == "class_logits":
        if shape is None or not isinstance(output, torch.Tensor) or tuple(output.shape) != shape:
            return [f"output_kind 'class_logits' (the default) declares one score per class of the head's prediction space, "
                    f"shape {(batch_size, classes)}, got {shape_of(output)}: a head that predicts other classes than its target's "
                    "(the parity of a digit: 2) declares them in prediction_space(); one whose outputs are no class scores "
                    "declares output_kind = 'value' (one number per sample) or 'other'"]  # fmt: skip
        best = output.argmax(dim=1) if top == 1 else output.topk(top, dim=1).indices
        predicted = head.predict(output)
        if not torch.equal(predicted, best):
            rule = "argmax" if top == 1 else f"the top {top} classes"
            example = ""
            if isinstance(predicted, torch.Tensor) and predicted.shape == best.shape:
                first = int((predicted != best).reshape(len(best), -1).any(dim=1).nonzero()[0])
                example = f" (sample {first}: {rule} {best[first].tolist()}, predict() {predicted[first].tolist()})"
            return [f"output_kind 'class_logits' (the default) declares predict() = {rule} of the outputs, and it is not{example}: "
                    f"make predict() return the {rule} (Head.predict's default for one class per sample); only a head whose "
                    "outputs are no class scores declares output_kind = 'other'"]  # fmt: skip
    if kind == "value" and (not isinstance(output, torch.Tensor) or tuple(output.shape) != shape):
        return [f"output_kind 'value' declares one number per sample, shape ({batch_size},), got {shape_of(output)}"]
    return []


def accepted(problems: Problems, cls, params, given, candidates: list, option: str, can: str, other):
    """What a fusion (inputs) or head (target) is checked on: ``given``, or the first of
    ``candidates`` that ``cls.check`` accepts (else the first); fails when ``check`` refuses it,
    and notes a ``check`` that does not answer ``other`` with a list of reasons."""
    if given is None:
        given = next((c for c in candidates if isinstance(cls.check(params, c), list) and not cls.check(params, c)), candidates[0])
    reasons = cls.check(params, given)
    if reasons:
        problems.fail(f"check() refuses {given}: {reasons}; pass {option}= it can {can}")
    if not isinstance(cls.check(params, other), list):
        problems.append(f"check(params, {option}) must return a list of reasons (empty when it can {can})")
    return given


def shape_of(value) -> str:
    """``value``'s shape when it is a tensor, else its type: for messages."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def built_reproducibly(problems: Problems, cls: type, *args):
    """``cls(*args)`` built after ``torch.manual_seed(0)``; a problem when a second one built so
    holds other weights, the end of the check when a lazy layer left weights uninitialised."""
    torch.manual_seed(0)
    first = cls(*args)
    problem = uninitialised_problem(first)
    if problem:  # no weights to compare yet; `digitsum run` refuses it too
        problems.fail(f"it {problem}")
    torch.manual_seed(0)
    a, b = first.state_dict(), cls(*args).state_dict()
    if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
        problems.append("two instances built after torch.manual_seed(0) differ: draw initial weights from torch's RNG")
    return first


def grad_problems(module: nn.Module, what: str) -> list[str]:
    """Whether a backward pass reached ``module``'s parameters with finite gradients."""
    params = [p for p in module.parameters() if p.requires_grad]
    if params and all(p.grad is None for p in params):
        return [f"{what}: no parameter received a gradient"]
    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
        return [f"{what}: a gradient is NaN or infinite"]
    return []
