"""What the conformance checks share: the error and its list of problems, the checks every kind
of component must pass, and the small training problem optimizers and schedules are run on."""

import copy
import functools
import io
import json
from typing import Any, NoReturn

import torch
from pydantic import ValidationError
from torch import nn

from ...contracts import CONTRACT_VERSION, Params, params_schema
from ..fixtures import seeded


class ConformanceError(AssertionError):
    """A component breaks its contract; the message lists every problem found."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what} breaks the digitsum contract:\n" + "\n".join(f"  - {p}" for p in problems))


class Problems(list):
    """The problems found so far with one component: a check appends to it as it goes."""

    def __init__(self, kind: str, cls) -> None:
        super().__init__()
        self.what = f"{kind} {getattr(cls, '__name__', repr(cls))}"  # e.g. "fusion Concat"

    def fail(self, problem: str | None = None) -> NoReturn:
        """Stop the check here: raise with the problems so far (and ``problem``)."""
        raise ConformanceError(self.what, [*self, *([problem] if problem else [])])

    def raise_any(self) -> None:
        """Raise if any problem was found; the last line of every check."""
        if self:
            self.fail()


def reporting_crashes(kind: str):
    """Turn an exception raised by the component under check into a ConformanceError naming it."""

    def decorate(check):
        @functools.wraps(check)
        def wrapper(cls, *args, **kwargs):
            try:
                return check(cls, *args, **kwargs)
            except ConformanceError:
                raise
            except Exception as e:
                raise ConformanceError(Problems(kind, cls).what, [f"it raised {type(e).__name__}: {e}"]) from e

        return wrapper

    return decorate


def common_checks(kind: str, cls, base: type, params) -> tuple[Problems, Any]:
    """The checks every kind shares (subclass, contract version, docstring, Params); returns the
    problems found and the params to check with (``Params()`` unless given), or fails when there
    are none."""
    problems = Problems(kind, cls)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        problems.fail(f"{cls!r} is not a subclass of digitsum.{base.__name__}")
    if getattr(cls, "contract", None) != CONTRACT_VERSION:
        problems.append(f"contract = {getattr(cls, 'contract', None)!r}, this digitsum speaks {CONTRACT_VERSION}")
    if not cls.summary():
        problems.append("the class has no docstring: its first line is the summary `digitsum list` shows")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
        problems.fail("Params must subclass digitsum.Params")
    try:
        cls.Params.model_validate({"surely_not_a_parameter": 1})
        problems.append("Params accepts unknown keys: subclass digitsum.Params (extra='forbid')")
    except ValidationError:
        pass
    for row in params_schema(cls.Params):
        if not row["description"]:
            problems.append(f"parameter '{row['name']}' has no description (Field(..., description=...))")
        try:
            json.dumps(row["default"])
        except TypeError:
            problems.append(f"parameter '{row['name']}' has a default that is not JSON/TOML data: {row['default']!r}")
    if params is None:
        try:
            params = cls.Params()
        except ValidationError as e:
            problems.fail(f"Params() is not valid with its defaults ({e.error_count()} error(s)); pass params= to the check")
    return problems, params


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
    holds other weights."""
    torch.manual_seed(0)
    first = cls(*args)
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


def weights_only_problem(what: str, state) -> list[str]:
    """Checkpoints are read with torch.load(weights_only=True): a state dict must survive it."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception as e:
        return [f"{what} cannot be read back from a checkpoint (torch.load(weights_only=True)): {type(e).__name__}: {e}"]
    return []


def toy_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP and a fixed regression problem it can fit: what optimizers are checked on."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    rng = seeded(seed)
    x = torch.randn(64, 4, generator=rng)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * torch.randn(64, 1, generator=rng)
    return model, x, y


def train_steps(model, optimizer, x, y, steps: int, scheduler=None) -> list[float]:
    """Train ``steps`` full-batch steps of mean squared error; the loss before each step."""
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        losses.append(float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return losses


def resume_problems(build, before: int, after: int, differs: str) -> list[str]:
    """Whether a run on :func:`toy_model` resumes exactly. ``build(model)`` gives its optimizer and
    scheduler (or None); the run trains ``before`` steps, then a run built anew on a copy of its
    model is given its state dicts as read back from a checkpoint: both train ``after`` more
    steps, with the same learning rates and weights, or the problem is ``differs``."""
    model, x, y = toy_model()
    optimizer, scheduler = build(model)
    train_steps(model, optimizer, x, y, before, scheduler)
    state = copy.deepcopy({"optimizer": optimizer.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict()})
    problems = weights_only_problem("its state_dict", state)
    other = copy.deepcopy(model)
    other_optimizer, other_scheduler = build(other)
    other_optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        other_scheduler.load_state_dict(state["scheduler"])
    rates = []
    for _ in range(after):
        train_steps(model, optimizer, x, y, 1, scheduler)
        train_steps(other, other_optimizer, x, y, 1, other_scheduler)
        rates.append((optimizer.param_groups[0]["lr"], other_optimizer.param_groups[0]["lr"]))
    same = all(a == b for a, b in rates) and all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    return problems + ([] if same else [differs])
