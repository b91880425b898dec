"""A run's model as its shipped recipe's pretrained weights (``digitsum export RUN --format
safetensors``): ``<recipe>.safetensors`` and its record ``<recipe>.json``, the pair a
distribution declares in its ``digitsum.weights`` entry points (:mod:`digitsum.weights`).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..catalog import RecipeNotFound, find_recipe, settings_digest
from ..engine.checkpoint import describe_differences, load_checkpoint
from ..errors import UserError
from ..recipe import load_recipe, recipe_document
from ..weights import WeightsRecord, sha256_of, write_record, write_tensors

if TYPE_CHECKING:
    from ..run import Run


def export_weights(run: Run, out: str | Path | None = None, *, force: bool = False) -> tuple[Path, Path]:
    """Write a finished run of a shipped recipe, trained at its shipped settings (any seed), as
    that recipe's weights: ``<recipe>.safetensors`` and ``<recipe>.json`` in the folder ``out``
    (default: the working folder). Existing files are replaced only with ``force``. Returns the
    two paths written, the record last."""
    if run.run_dir is None:
        raise UserError(f"{run.source} already is a set of pretrained weights; export a run directory")
    if run.status != "finished":
        raise UserError(f"{run.run_dir} is {run.status}: only a finished run's model is exported as weights")
    try:
        entry = find_recipe(run.recipe.name)
    except RecipeNotFound:
        raise UserError(f"{run.run_dir} trained recipe '{run.recipe.name}', which no installed distribution ships: "
                        "--format safetensors writes a shipped recipe's pretrained weights. To start another run from "
                        f"this one, give the run directory itself as [init] weights = \"{run.run_dir}\"") from None
    shipped = load_recipe(f"{entry.distribution}:{entry.name}", {"seed": run.recipe.seed}, require_loggers=False)
    changed = describe_differences(shipped.to_dict(), run.recipe.to_dict(), show="{key} is {ours} in the recipe but {theirs} in the run")
    if changed:
        raise UserError(f"{run.run_dir} did not train recipe '{entry.name}' as {entry.origin} ships it, so its model is not "
                        f"that recipe's weights: {changed}. Train it as shipped: "
                        f"digitsum run {entry.name} --set seed=0")  # fmt: skip
    folder = Path(out) if out is not None else Path.cwd()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; weights are written into a folder, as {entry.name}.safetensors and {entry.name}.json")
    tensors_path, record_path = folder / f"{entry.name}.safetensors", folder / f"{entry.name}.json"
    taken = [p for p in (tensors_path, record_path) if p.exists()]
    if taken and not force:
        raise UserError(f"{taken[0]} already exists; pass --force (from Python: force=True) to overwrite it, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)

    digest = settings_digest(recipe_document(entry.path))  # type: ignore[arg-type]
    state = run.model.state_dict()
    write_tensors(tensors_path, state, {"recipe": entry.name, "settings": digest, "digitsum_version": __version__})
    summary = run.summary
    # the thread count changes a CPU run's last bits: the command that reproduces the record pins it
    threads = run.recipe.train.threads or load_checkpoint(run.run_dir / "checkpoint.pt").get("threads")
    pinned = f" --set train.threads={threads}" if threads and summary.get("device", "cpu") == "cpu" else ""
    record = WeightsRecord(
        recipe=entry.name,
        settings=digest,
        sha256=sha256_of(tensors_path),
        bytes=tensors_path.stat().st_size,
        file=tensors_path.name,
        seed=run.recipe.seed,
        epochs=len(run.history),
        parameters=sum(p.numel() for p in run.model.parameters()),
        test=summary.get("metrics", {}).get("test", {}),
        history=list(run.history),
        command=f"digitsum run {entry.name} --set seed={run.recipe.seed}{pinned}",
        digitsum_version=__version__,
        trained=time.strftime("%Y-%m-%d", time.localtime(os.path.getmtime(run.run_dir / "summary.json"))),
        seconds=float(summary.get("seconds", 0.0)),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, device {summary.get('device', 'cpu')}" + (f", {threads} thread{'s' * (threads != 1)}" if pinned else ""),
    )
    write_record(record_path, record)
    return tensors_path, record_path
