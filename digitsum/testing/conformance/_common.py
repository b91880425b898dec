"""What the conformance checks share: the error and its list of problems, the checks every kind
of component must pass, and the check that a state dict survives a checkpoint."""

import contextlib
import functools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from ...contract_checks import signature_problem
from ...contracts import CONTRACT_VERSION, Params
from ...engine.checkpoint import round_trip_problem
from ...engine.component_errors import ComponentError
from ...errors import raised_in
from ...kinds import KINDS
from ...listing import params_schema
from ...recipe.schema import reserved_params_problem


class ConformanceError(AssertionError):
    """A component breaks its contract; the message lists every problem found."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what} breaks the digitsum contract:\n" + "\n".join(f"  - {p}" for p in problems))


def nothing_declared(distribution: str, what: str, group: str) -> ConformanceError:
    """The error of a distribution that declares nothing in the entry-point ``group``: is it installed?"""
    problem = f"it {what}: is it installed (pip install -e .) with entry points in [project.entry-points.\"{group}\"]?"
    return ConformanceError(f"distribution {distribution}", [problem])


@contextlib.contextmanager
def workdir_or_scratch(workdir: str | Path | None, prefix: str) -> Iterator[Path]:
    """``workdir`` as an absolute path (made if missing), or a temporary folder removed on exit:
    a plugin's test run that names no folder leaves nothing behind."""
    if workdir is not None:
        path = Path(workdir).absolute()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield Path(scratch)


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
                # a run names the component that raised in a ComponentError; what the author wants
                # here is the exception its own code raised, and where
                raised = e.__cause__ if isinstance(e, ComponentError) and isinstance(e.__cause__, Exception) else e
                where = raised_in(cls, raised)
                raise ConformanceError(Problems(kind, cls).what, [f"it raised {type(raised).__name__}{where}: {raised}"]) from e

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
    miswritten = signature_problem(cls, base)
    if miswritten:  # digitsum's calls would fail: the other checks would only trip on it
        problems.fail(miswritten)
    if not cls.summary():
        problems.append("the class has no docstring: its first line is the summary `digitsum list` shows")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
        problems.fail("Params must subclass digitsum.Params")
    kind_name = next(k.name for k in KINDS.values() if k.contract == base.__name__)
    reserved = reserved_params_problem(kind_name, cls)
    if reserved:
        problems.append(reserved)
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


def weights_only_problem(what: str, state) -> list[str]:
    """Checkpoints are read with torch.load(weights_only=True): a state dict must survive it."""
    problem = round_trip_problem(state)
    return [f"{what} cannot be read back from a checkpoint (torch.load(weights_only=True)): {problem}"] if problem else []
