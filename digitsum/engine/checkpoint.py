"""Checkpoints: written atomically, read without running anyone's code.

A checkpoint is a ``torch.save`` zip archive of plain data and tensors only: the fields of
docs/reliability.md's table (``_FIELDS`` below) and, optionally, ``init`` (what ``[init]`` loaded;
its ``frozen`` names stay frozen for ``freeze_epochs`` on resume), ``threads`` (the CPU threads it
trained with; a resume with ``train.threads = 0`` keeps them) and ``callbacks`` (each one's state).

Loading uses ``torch.load(weights_only=True)``: a pickle that names any other Python object
(a class, a function, ``os.system``) is refused before anything in it runs.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError, error_text
from ..recipe import MACHINE_LOCAL_KEYS
from .rundir import RUN_FORMAT
from ..files import atomic_write, field_problems, is_metrics, is_plain

_ZIP_MAGIC = b"PK\x03\x04"
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "epoch": int,
    "step": int,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "rng": dict,
    "tally": dict,
    "history": list,
    "epoch_seconds": (int, float),
    "seconds": (int, float),
    "recipe": dict,
}


def round_trip_problem(state: Any) -> str | None:
    """Why ``state`` cannot be written into a checkpoint and read back as :func:`load_checkpoint`
    reads it (``torch.load(weights_only=True)``), or None: a file handle cannot be saved, a numpy
    array or a function is refused when read."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception as e:  # the pickler and the unpickler raise many types; all mean the same
        found = _first_unplain(state)
        if found is not None:  # torch's own message is pages of advice in terminal colours
            where, value = found
            return f"{where or 'it'} is a {type(value).__module__}.{type(value).__qualname__}, which torch.load(weights_only=True) refuses"
        text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(e).split()))
        return f"{type(e).__name__}: {text[:200]}"
    return None


#: What a checkpoint may hold beside tables and lists: what torch.load(weights_only=True) reads back.
_PLAIN = (torch.Tensor, int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


def _first_unplain(value: Any, where: str = "") -> tuple[str, Any] | None:
    """The first value under ``value`` that is neither plain data nor a tensor, with its path (``['started']``)."""
    stack, seen = [(where, value)], set()
    while stack:
        where, value = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:  # a table holding itself: walked once
                continue
            seen.add(id(value))
        if isinstance(value, dict):
            stack.extend((f"{where}[{k!r}]", v) for k, v in reversed(list(value.items())))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        elif not isinstance(value, _PLAIN):
            return where, value
    return None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the previous checkpoint stays until the new one is whole."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely and check its format and fields; raise UserError otherwise."""
    if path.exists() and not path.is_file():  # a FIFO would block the open below forever
        raise UserError(f"{path} is not a regular file; a checkpoint is the file torch.save writes")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise UserError(f"{path} not found: the run stopped before its first checkpoint") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != _ZIP_MAGIC:
        # digitsum writes zip archives only; refusing anything else also keeps torch's legacy
        # (raw pickle) reader out of reach.
        raise UserError(f"{path} is not a digitsum checkpoint: it is empty, truncated or another kind of file")
    _check_inflated_size(path)
    try:
        with warnings.catch_warnings():  # torch's advice on a sparse tensor, say: what is wrong with it is said below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler and the zip reader raise many types; all mean the same
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise UserError(
                f"{path} refused: it holds a Python object ({found.group(1)}) that would run code when "
                "loaded; digitsum loads checkpoints of tensors and plain data only"
            ) from None
        raise UserError(f"{path} is truncated or corrupt and cannot be read ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a digitsum checkpoint (it holds a {type(state).__name__}, not a dict)")
    if _depth(state) > MAX_DEPTH:  # every reader of it below recurses
        raise UserError(f"{path} is not a valid digitsum checkpoint: it nests tables deeper than {MAX_DEPTH} levels")
    check_format(state.get("format"), path)
    problems = field_problems(state, _FIELDS, _FIELDS)
    if not problems and (state["epoch"] < 0 or state["step"] < 0):
        problems.append("epoch and step must not be negative")
    if not problems and not all(math.isfinite(state[k]) and state[k] >= 0 for k in ("seconds", "epoch_seconds")):
        problems.append("seconds and epoch_seconds must be finite and not negative")  # summary.json would not be JSON
    if not problems and (odd := odd_tensors({k: state[k] for k in state if k != "model"})):  # the model's: weights_problems
        problems.append(f"it holds tensors of a kind no run writes: {'; '.join(odd)}")
    if not problems:
        problems = _deep_problems(state)
    if problems:
        raise UserError(f"{path} is not a valid digitsum checkpoint: {'; '.join(problems)}")
    return state


def names_listed(names: list[str], shown: int) -> str:
    """The first ``shown`` of ``names``, then ", and N more": a message's list of tensor names."""
    return ", ".join(names[:shown]) + (f", and {len(names) - shown} more" if len(names) > shown else "")


#: The element types a checkpoint's tensors may have: what PyTorch computes with on any device
#: (a float8 or a bit-packed tensor is neither written by a run nor usable by one).
ORDINARY_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
                             torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool})  # fmt: skip


def tensor_kind_problem(tensor: torch.Tensor) -> str | None:
    """What makes ``tensor`` no tensor a run writes or reads (nested, meta, an odd element type or
    layout: torch's own operations raise on them deep inside a run), or None."""
    if tensor.is_nested:
        return "nested tensors"
    if tensor.is_meta:
        return "meta tensors (they hold no values)"
    if tensor.layout not in (torch.strided, torch.sparse_coo):  # sparse: weights_problems names it
        return f"tensors of layout {tensor.layout}"
    if tensor.dtype not in ORDINARY_DTYPES:
        return f"tensors of element type {tensor.dtype}"
    return None


def odd_tensors(value: Any, shown: int = 3) -> list[str]:
    """``what at where`` (``nested tensors at optimizer.state.0.exp_avg``) for the first ``shown``
    tensors in ``value`` (tables and lists walked without recursion) that
    :func:`tensor_kind_problem` refuses."""
    found = []
    for key, item in _nodes(value):
        if isinstance(item, torch.Tensor) and (problem := tensor_kind_problem(item)) is not None:
            found.append(f"{problem} at {key or 'its top'}")
            if len(found) == shown:
                break
    return found


def weights_problems(own: dict[str, torch.Tensor], given: dict[str, Any], shown: int = 6) -> list[str]:
    """What makes the tensors ``given`` (by name) no weights a training run saved for a model whose
    own are ``own``: tensors of a kind no run writes (nested, meta, float8), integer tensors where
    the model's are floating point (``load_state_dict`` would convert them silently), complex ones
    where the model's are real, tensors holding NaN or inf (a run stops on a non-finite loss before
    that epoch is saved), sparse ones where the model's are dense; [] when they are none of these
    (shapes are load_state_dict's)."""
    tensors = {n: t for n, t in given.items() if n in own and isinstance(t, torch.Tensor)}
    odd: dict[str, list[str]] = {}
    for name, tensor in tensors.items():
        if (problem := tensor_kind_problem(tensor)) is not None:
            odd.setdefault(problem, []).append(name)
    if odd:  # nothing below can be asked of them
        return [f"{problem}, where a run writes ordinary ones: {names_listed(names, shown)}" for problem, names in odd.items()]
    layout = [n for n, t in tensors.items() if t.layout != own[n].layout]  # sparse where the model's are dense
    tensors = {n: t for n, t in tensors.items() if n not in layout}
    wrong_kind = [n for n, t in tensors.items() if own[n].is_floating_point() and not (t.is_floating_point() or t.is_complex())]
    not_finite = [n for n, t in tensors.items() if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]
    complex_ = [n for n, t in tensors.items() if t.is_complex() and not own[n].is_complex()]
    return [f"{what}: {names_listed(names, shown)}" for what, names in (("integer tensors where the model's are floating point", wrong_kind),
            ("complex tensors where the model's are real", complex_), ("tensors holding NaN or inf", not_finite),
            ("tensors of another layout (sparse) where the model's are dense", layout)) if names]  # fmt: skip


#: How deep a checkpoint's tables and lists may nest (digitsum's own: 6 levels).
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deep ``value``'s dicts, lists and tuples nest, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend((child, depth + 1) for child in item)
    return deepest


def plain_mismatch(fresh: Any, saved: Any, where: str) -> str | None:
    """Where ``saved`` (a state read from a checkpoint) holds another kind of plain value than
    ``fresh`` (the same component's state as built: a number, a string, a bool, a list, a table)
    at the same place, or None: a learning rate that is text fails only at the first step."""

    def kind(value: Any) -> str | None:
        if isinstance(value, bool):
            return "a bool"
        if isinstance(value, (int, float)):
            return "a number"
        return {str: "text", list: "a list", tuple: "a list", dict: "a table"}.get(type(value))

    expected, found = kind(fresh), kind(saved)
    if expected is None:
        return None  # tensors (load_state_dict checks their shapes), None, anything else
    if expected != found:
        return f"{where} is {found or type(saved).__name__} where this recipe's holds {expected}"
    pairs = ([(k, fresh[k], saved[k]) for k in fresh if k in saved] if isinstance(fresh, dict)
             else [(i, a, b) for i, (a, b) in enumerate(zip(fresh, saved))] if isinstance(fresh, (list, tuple)) else [])  # fmt: skip
    return next((m for key, a, b in pairs if (m := plain_mismatch(a, b, f"{where}[{key!r}]"))), None)


def stepping_problem(optimizer: torch.optim.Optimizer, scheduler: Any, saved_optimizer: dict, saved_scheduler: dict,
                     steps_left: int) -> str | None:  # fmt: skip
    """Why a checkpoint's optimizer and scheduler states would break the run's next steps, found
    on copies of the two before the run takes them, or None: a tensor of another shape or dtype
    than the optimizer keeps for a parameter (a fused kernel reads and writes by the
    parameter's size: past the end of a smaller buffer, a crash no error reports), a step that
    raises, or a schedule that raises within the ``steps_left`` (one told it has fewer steps
    than the run)."""
    import copy

    def stepped(state: tuple[dict, dict] | None, schedule_steps: int) -> tuple[torch.optim.Optimizer, Any]:
        trial_optimizer, trial_scheduler = copy.deepcopy((optimizer, scheduler))  # one copy: the scheduler steps the copied optimizer
        if state is not None:  # copied too: an optimizer loads the tensors it is given, and steps them in place
            trial_optimizer.load_state_dict(copy.deepcopy(state[0]))
            trial_scheduler.load_state_dict(copy.deepcopy(state[1]))
        for group in trial_optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = torch.zeros_like(parameter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the step order torch checks is the real optimizer's; a schedule stepped alone
            # the class's step: the instance's `step` is the scheduler's wrapper of the real optimizer's, which a deep copy shares
            type(trial_optimizer).step(trial_optimizer)
            for _ in range(schedule_steps):  # a schedule's steps are cheap: all the run has left
                trial_scheduler.step()
        return trial_optimizer, trial_scheduler

    try:
        kept = stepped(None, 1)[0].state_dict()["state"]  # what a step keeps for each parameter
    except Exception:  # noqa: BLE001 - a component whose copy does not step: its own load_state_dict is the check
        return None
    for index, entry in saved_optimizer.get("state", {}).items():
        own = kept.get(index)
        if not isinstance(entry, dict) or own is None:
            return f"its optimizer state names parameter {index!r}, which this recipe's optimizer does not have" if own is None else \
                f"its optimizer state for parameter {index!r} is not a table"
        for key, value in entry.items():
            if isinstance(own.get(key), torch.Tensor) and (not isinstance(value, torch.Tensor) or value.shape != own[key].shape
                                                            or value.dtype != own[key].dtype):  # fmt: skip
                found = f"{value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                return (f"its optimizer state '{key}' of parameter {index} is {found} where this recipe's optimizer keeps "
                        f"{own[key].dtype} {list(own[key].shape)}")  # fmt: skip
    try:
        trial = stepped((saved_optimizer, saved_scheduler), steps_left)[0]
    except Exception as e:  # noqa: BLE001 - torch's optimizers and schedulers raise many types; all mean the same
        return f"a step from its optimizer and schedule states raises {type(e).__name__}: {error_text(e)}"
    # a step of zero gradients from finite weights gives finite weights, unless the state holds a
    # rate, a moment or a step count no run keeps (NaN, a negative second moment): the run would
    # go on to a NaN loss and blame its recipe
    if not all(bool(torch.isfinite(p).all()) for group in trial.param_groups for p in group["params"] if p.is_floating_point()):
        return ("a step from its optimizer and schedule states turns the weights into NaN or inf: it holds a rate, a moment "
                "or a step count no run keeps")  # fmt: skip
    return None


#: The most threads a checkpoint may record (libgomp crashes on absurd counts).
MAX_THREADS = 1024


def _check_inflated_size(path: Path) -> None:
    """Refuse an archive that inflates far beyond its size: ``torch.save`` stores its members
    uncompressed, so a member compressed much smaller than it unpacks to was not written by digitsum
    (a zip bomb would otherwise take the memory it names before anything is checked)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load's own reading says what is wrong
    if unpacked > 4 * path.stat().st_size + (1 << 20):
        raise UserError(f"{path} is not a digitsum checkpoint: its {path.stat().st_size} bytes unpack to {unpacked} "
                        "(digitsum stores checkpoints uncompressed)")  # fmt: skip


def _deep_problems(state: dict[str, Any]) -> list[str]:
    """The fields' insides: what resuming reads from them after the top level was checked."""
    problems = []
    for number, entry in enumerate(state["history"]):
        where = f"'history' entry {number}"
        if not isinstance(entry, dict) or not is_plain(entry.get("epoch"), int):
            problems.append(f"{where} should be a table with an integer 'epoch'")
            continue
        problems += [f"{where}'s '{split}' should map each head to its metrics' numbers" for split in ("train", "val", "test")
                     if (split in entry or split == "train") and not is_metrics(entry.get(split))]  # fmt: skip
    count, sums = state["tally"].get("count"), state["tally"].get("sums")
    # a count past 2**53 is no count of samples, and no float holds it exactly (the means divide by it)
    if not is_plain(count, int) or not 0 <= count <= 2**53 or not isinstance(sums, dict) or not all(
        isinstance(values, dict) and all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in values.values())
        for values in sums.values()
    ):  # fmt: skip
        problems.append("'tally' should hold a 'count' of samples and the heads' 'sums' as one-number tensors")
    if not isinstance(state["rng"].get("cpu"), torch.Tensor):
        problems.append("'rng' should hold the CPU generator's state as a tensor")
    threads = state.get("threads")
    if threads is not None and (not is_plain(threads, int) or not 1 <= threads <= MAX_THREADS):
        problems.append(f"'threads' should be an integer from 1 to {MAX_THREADS}")
    if (where := _not_plain(state["recipe"])) is not None:  # it is compared with a recipe value by value
        problems.append(f"'recipe' should hold plain data (text, numbers, booleans, lists, tables), not at {where or 'its top'}")
    callbacks = state.get("callbacks")
    if callbacks is not None and (not isinstance(callbacks, dict) or not all(isinstance(v, dict) for v in callbacks.values())):
        problems.append("'callbacks' should map each callback to its state table")
    return problems


def _nodes(value: Any) -> Iterator[tuple[str, Any]]:
    """Every table, list and value in ``value`` with its dotted key (``optimizer.state.0.step``,
    ``history[2]``; "" for ``value`` itself), in the order written, without recursion (a table
    is given before what it holds)."""
    stack = [("", value)]
    while stack:
        key, item = stack.pop()
        yield key, item
        if isinstance(item, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in reversed(item.items()))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{key}[{i}]", v) for i, v in reversed(list(enumerate(item))))


def _not_plain(value: Any) -> str | None:
    """The dotted key of the first value in ``value`` that is not plain data as TOML holds it (a
    tensor, say, whose ``!=`` is no bool), or None."""
    for key, item in _nodes(value):
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return key
        elif not isinstance(item, (list, tuple)) and item is not None and not isinstance(item, (str, bool, int, float)):
            return key
    return None


def check_format(found: Any, where: Path) -> None:
    """Refuse a run directory written in another format, saying which way it differs."""
    if not is_plain(found, int):  # first: a tensor's == gives a tensor, whose truth may raise
        raise UserError(f"{where} is not a digitsum run file: it records no run format")
    if found == RUN_FORMAT:
        return
    age = "a newer digitsum" if found > RUN_FORMAT else "an older digitsum"
    raise UserError(
        f"{where} was written in run format {found} by {age}; this digitsum reads format {RUN_FORMAT}. "
        "Use the digitsum version named in the run's recipe.toml [provenance]"
    )


def recipe_differences(recipe: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved recipes, the machine-local keys aside
    (where a run executes may differ between a checkpoint and the recipe it is resumed or evaluated with)."""
    ours, theirs = _flatten(recipe), _flatten(saved)
    return [
        key
        for key in sorted(set(ours) | set(theirs))
        if key not in MACHINE_LOCAL_KEYS and ours.get(key, _MISSING) != theirs.get(key, _MISSING)
    ]


def describe_differences(recipe: dict[str, Any], saved: dict[str, Any], keys: list[str] | None = None, limit: int = 6,
                         show: str = "{key} is {ours} in the recipe but {theirs} in the checkpoint") -> str:  # fmt: skip
    """``"train.lr is 0.001 in the recipe but 0.002 in the checkpoint; ..."``: the first ``limit``
    of ``keys`` (default: :func:`recipe_differences`), each worded by ``show``."""
    ours, theirs = _flatten(recipe), _flatten(saved)
    keys = recipe_differences(recipe, saved) if keys is None else keys
    parts = [show.format(key=k, ours=_show(ours.get(k, _MISSING)), theirs=_show(theirs.get(k, _MISSING))) for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


_MISSING = object()


def _show(value: Any) -> str:
    return "absent" if value is _MISSING else repr(value)


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def rng_state() -> dict[str, Any]:
    """torch's global RNG states: dropout and anything else drawing outside the data streams."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
