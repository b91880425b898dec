"""Export a trained run for use outside digitsum (docs/export.md): an ONNX or TorchScript file
taking the generator's inputs raw, with the generator's ``encode`` in the graph; a JSON sidecar
saying how to feed it and read each output (:mod:`.sidecar`); for image inputs, a copy of
:mod:`digitsum.mnist_format` beside it. Nothing is written unless the file reproduces PyTorch's
outputs (:mod:`.formats`).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import __version__
from ..contracts import Image, Images
from ..errors import UserError
from ..engine.component_errors import blame_components
from ..engine.rundir import LOCK, MARKER, OWN_FILES, record_outputs
from ..files import atomic_write, read_json, why_not_made, write_json
from . import formats
from .formats import (CHECK_BATCHES, FORMATS, ONNX_OPSET, SAMPLES, TOLERANCE, ExportFailed, ExportMismatch, ExportModule,
                      check_format, check_inputs, differences, format_for, random_inputs, require_exporter, WEIGHTS_FORMAT)  # fmt: skip
from .sidecar import (SIDECAR_FORMAT, check_preprocess_target, describe_inputs, describe_outputs, describe_preprocessing,
                      preprocess_code, preprocess_path, sidecar_path)  # fmt: skip

if TYPE_CHECKING:
    from ..run import Run

__all__ = ["FORMATS", "ONNX_OPSET", "SIDECAR_FORMAT", "ExportFailed", "ExportMismatch", "Exported", "check_format",
           "describe_preprocessing", "export_run", "format_for", "preprocess_path", "require_exporter", "sidecar_path", "WEIGHTS_FORMAT"]

#: The batch size the model is traced with: not 1, which the exporter would specialise.
_TRACE_BATCH = 3


@dataclass
class Exported:
    """What :func:`export_run` wrote and the check it made before writing.

    ``differences``: per output, the largest absolute difference from PyTorch's output over
    the check's samples and batch sizes.
    """

    path: Path
    sidecar: Path
    format: str
    samples: int
    source: str
    differences: dict[str, float] = field(default_factory=dict)
    tolerance: float = TOLERANCE
    #: the copy of digitsum/mnist_format.py next to the model (None: the model takes no images)
    preprocess: Path | None = None

    @property
    def max_difference(self) -> float:
        return max(self.differences.values(), default=0.0)


def _target_path(run: Run, fmt: str, out: str | Path | None, force: bool) -> Path:
    default = run.run_dir / FORMATS[fmt] if run.run_dir is not None else Path(run.recipe.name + Path(FORMATS[fmt]).suffix)
    path = Path(out) if out is not None else default
    # "exports/" names a folder even before it exists (Path drops the slash: it would be the file "exports")
    if path.is_dir() or (isinstance(out, str) and out.endswith(("/", os.sep))):
        raise UserError(f"{out if isinstance(out, str) else path} is a folder; give --out a file name, e.g. {path / default.name}")
    taken = [p for p in (path, sidecar_path(path)) if p.exists()]
    own = [p for p in taken if run.run_dir is not None and p.parent.resolve() == run.run_dir.resolve()
           and p.name in (*OWN_FILES, MARKER, LOCK)]  # fmt: skip
    if own:  # --force replaces an export, never the run it was made from
        raise UserError(f"{own[0]} is the run's own file, not an export; choose another --out")
    if taken and not force:
        raise UserError(f"{taken[0]} already exists; pass --force (from Python: force=True) to overwrite it, or choose another --out")
    if taken and not _an_export(path):  # --force replaces what an export wrote, never a user's own file
        raise UserError(f"{taken[0]} is not an export digitsum wrote (no digitsum sidecar {sidecar_path(path).name} names "
                        f"{path.name}); --force replaces only an export: choose another --out")  # fmt: skip
    return path


def _an_export(path: Path) -> bool:
    """Whether ``path`` (and its sidecar) are an earlier export's: its sidecar is digitsum's and
    names ``path``'s file, which is a regular file or absent."""
    sidecar = sidecar_path(path)
    if sidecar.is_symlink() or not sidecar.is_file() or path.is_symlink() or (path.exists() and not path.is_file()):
        return False
    data = read_json(sidecar)
    if not isinstance(data, dict) or data.get("format") != "digitsum-export":
        return False
    model = data.get("model")
    return isinstance(model, dict) and model.get("file") == path.name


def export_run(run: Run, fmt: str = "onnx", out: str | Path | None = None, *, force: bool = False,
               samples: int = SAMPLES, tolerance: float = TOLERANCE) -> Exported:  # fmt: skip
    """Export a trained run's model to ``fmt`` (``"onnx"`` or ``"torchscript"``) with a JSON sidecar.

    ``out``: the model file (default ``RUN_DIR/model.onnx`` or ``RUN_DIR/model.pt``); the
    sidecar is ``out`` with ``.json`` appended; for a model with image inputs, the preprocessing
    code (a copy of :mod:`digitsum.mnist_format`) is :func:`preprocess_path` of ``out``. An
    existing file is kept unless ``force`` (a preprocess file holding the same code is rewritten).
    Before writing, the exported model runs on ``samples`` raw inputs (MNIST test images when
    they are on disk) and its outputs are compared with PyTorch's: a largest absolute difference
    above ``tolerance`` raises :class:`ExportMismatch` (exit 1) and writes nothing. Every file
    is written atomically (a temporary file in the same folder, renamed), the sidecar last.
    """
    fmt = check_format(fmt)
    require_exporter(fmt)
    path = _target_path(run, fmt, out, force)
    specs = dict(run.recipe.interface().inputs)
    code = preprocess_path(path) if any(isinstance(spec, (Image, Images)) for spec in specs.values()) else None
    if code is not None:
        check_preprocess_target(code, force)
    inputs = list(specs)
    outputs = formats.output_names(inputs, list(run.model.heads))
    # a CPU copy in eval mode: the file runs anywhere, and the run's own model is left alone
    module = ExportModule(copy.deepcopy(run.model).cpu().eval(), run.generator, inputs).eval()
    example = tuple(random_inputs(specs, _TRACE_BATCH))
    with blame_components(run.recipe), torch.no_grad():
        results = module(*example)  # a component that fails eagerly is named, not the exporter
    if broken := [name for name, t in results.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]:
        bad = sum(int((~torch.isfinite(p)).sum()) for p in run.model.parameters())
        raise UserError(f"{run.source}: the model outputs NaN or inf ({', '.join(broken)}) on {_TRACE_BATCH} inputs, and "
                        f"{bad} of its weights are not finite: an export would give the same; export a run whose training "
                        "kept them finite (its summary.json says why it failed, if it did)")  # fmt: skip
    shapes = {name: (["batch", *t.shape[1:]], str(t.dtype).removeprefix("torch.")) for name, t in results.items()}
    metadata = {"digitsum_version": __version__, "recipe": run.recipe.name, "sidecar": sidecar_path(path).name}

    started = time.perf_counter()
    if fmt == "onnx":
        data = formats.export_onnx(module, example, outputs, metadata)
    else:
        data = formats.export_torchscript(module, example, metadata)
    export_seconds = time.perf_counter() - started
    run_exported, runtime = formats.runner(fmt, data, outputs)
    check, source = check_inputs(run, specs, samples)
    found = differences(run_exported, module, check, outputs)
    result = Exported(path, sidecar_path(path), fmt, samples, source, found, tolerance, code)
    if not result.max_difference <= tolerance:
        shown = ", ".join(f"{n} {d:.3g}" for n, d in found.items())
        raise ExportMismatch(
            f"the exported {fmt} model does not reproduce PyTorch's outputs on {source}: largest absolute "
            f"differences {shown} (tolerance {tolerance:g}); nothing was written"
        )

    summary = run.summary or {}
    sidecar = {
        "format": "digitsum-export",
        "format_version": SIDECAR_FORMAT,
        "digitsum_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": formats.describe_model(fmt, path.name, inputs),
        "run_dir": str(run.run_dir.resolve()) if run.run_dir is not None else None,
        "weights": {"recipe": run.weights.recipe, "sha256": run.weights.sha256} if run.weights is not None else None,
        "recipe_name": run.recipe.name,
        "recipe": run.recipe.to_dict(),
        "inputs": describe_inputs(specs),
        "preprocessing": describe_preprocessing(specs, code),
        "outputs": describe_outputs(run, shapes),
        "metrics": {"split": "test", "epochs": summary.get("epochs", len(run.history)), "status": run.status,
                    "heads": summary.get("metrics", {}).get("test", {})},  # fmt: skip
        "verification": {"samples": samples, "source": source, "batch_sizes": [samples, *CHECK_BATCHES],
                         "runtime": runtime, "tolerance": tolerance, "max_abs_difference": found,
                         "export_seconds": round(export_seconds, 2)},  # fmt: skip
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {path.parent}: {why_not_made(path.parent, e)}; choose another --out") from None
    written: list[Path] = []
    try:  # all three or none: a full disk halfway leaves no model without its sidecar
        atomic_write(path, lambda f: f.write(data))
        written.append(path)
        if code is not None:
            atomic_write(code, lambda f: f.write(preprocess_code()))
            written.append(code)
        write_json(result.sidecar, sidecar)
    except BaseException:
        for done in written:
            done.unlink(missing_ok=True)
        raise
    if run.run_dir is not None and path.parent.resolve() == run.run_dir.resolve():
        # written into the run directory: the run's, so that --force removes it with the model it describes
        record_outputs(run.run_dir, {p.name for p in (path, result.sidecar, code) if p is not None})
    return result
