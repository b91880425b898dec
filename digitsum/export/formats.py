"""The two file formats of an export and the check of a written file: the module traced into
the file, ONNX's and TorchScript's ways to write it, a runner of the written bytes as a consumer
would load them, and its outputs compared with PyTorch's on MNIST test images when they are on
disk (random inputs of the declared specs otherwise), at several batch sizes."""

from __future__ import annotations

import importlib
import io
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..contracts import Categorical, Generator, Image, Images, Spec
from ..errors import UserError, did_you_mean, install_command
from ..mnist_format import MNIST_SIZE

if TYPE_CHECKING:
    from ..run import Run

#: Format -> the model file's default name in the run directory.
FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
#: ONNX opset of every export: fixed, so that a file's needs do not change with torch's default.
#: 18 is the opset the torch.export-based exporter's operator library is written for (a lower one
#: needs a version conversion) and older than its default (20 in torch 2.14): more runtimes read it.
ONNX_OPSET = 18
#: What the ONNX format needs beyond torch (the extra ``digitsum[onnx]``): the exporter
#: (torch.onnx with dynamo=True runs on onnxscript), the checker, the runtime of the check.
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")

Runner = Callable[[list[Tensor]], dict[str, Tensor]]


class ExportFailed(UserError):
    """The exporter could not translate the model (an operator with no ONNX equivalent...), exit 1."""

    exit_code = 1


#: The format of a run exported as its recipe's pretrained weights (:mod:`digitsum.export.pretrained`).
WEIGHTS_FORMAT = "safetensors"


def check_format(fmt: str) -> str:
    """``fmt`` if it names an export format, else a UserError listing them."""
    if fmt not in (*FORMATS, WEIGHTS_FORMAT):
        raise UserError(f"unknown export format '{fmt}' — {did_you_mean(fmt, [*FORMATS, WEIGHTS_FORMAT], 'formats')}")
    return fmt


def format_for(out: str | Path | None) -> str:
    """The format a model file's name asks for: ``.pt``/``.pth`` TorchScript, otherwise ONNX."""
    return "torchscript" if out is not None and Path(out).suffix.lower() in (".pt", ".pth") else "onnx"


def require_exporter(fmt: str) -> None:
    """Fail early, before loading anything, when the packages a format needs are missing."""
    if fmt != "onnx":
        return  # TorchScript is torch's own
    missing = []
    for name in ONNX_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # not installed, or installed broken: the same fix
            missing.append(name)
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}, not installed here: {install_command('onnx')}")


class ExportModule(nn.Module):
    """Raw inputs (positional, in the generator's order) -> each head's output and prediction.

    What is traced into the exported file; also the PyTorch reference the export is checked
    against. The dict it returns is ordered: per head, ``<head>`` then ``<head>_prediction``.
    """

    def __init__(self, model: nn.Module, generator: Generator, inputs: list[str]) -> None:
        super().__init__()
        self.model = model
        self.generator = generator  # not a module: encode is plain tensor code, traced through
        self.input_names = list(inputs)

    def forward(self, *inputs: Tensor) -> dict[str, Tensor]:
        outputs = self.model(self.generator.encode(dict(zip(self.input_names, inputs))))
        result = {}
        for name, output in outputs.items():
            result[name] = output
            result[f"{name}_prediction"] = self.model.heads[name].predict(output)
        return result


def output_names(inputs: list[str], heads: list[str]) -> list[str]:
    """The file's outputs, per head ``<head>`` and ``<head>_prediction``; a clash with another
    output's or an input's name is refused."""
    outputs = [name for head in heads for name in (head, f"{head}_prediction")]
    clash = sorted({n for n in outputs if outputs.count(n) > 1} | (set(outputs) & set(inputs)))
    if clash:
        raise UserError(
            f"cannot export: the name {', '.join(map(repr, clash))} would be given to two of the model's "
            f"inputs and outputs (each head gives '<head>' and '<head>_prediction'); rename a head in the recipe"
        )
    return outputs


def _exception_summary(error: BaseException) -> str:
    """The useful lines of an exporter error (torch's own are pages of advice)."""
    text = str(error)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].split("(Refer to the full stack trace", 1)[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("⬆")]
    return " ".join(lines)[:600]


def export_onnx(module: ExportModule, example: tuple[Tensor, ...], outputs: list[str], metadata: dict[str, str]) -> bytes:
    """The ONNX file's bytes: the module traced by torch.export, checked by ``onnx.checker``."""
    import onnx

    batch = torch.export.Dim("batch")
    # the exporters warn about their own internals (deprecations of torch.jit, axis naming):
    # nothing a user of `digitsum export` can act on
    with warnings.catch_warnings(action="ignore"), torch.no_grad():
        try:
            program = torch.onnx.export(
                module, example, None, input_names=module.input_names, output_names=outputs,
                dynamic_shapes=(tuple({0: batch} for _ in example),), opset_version=ONNX_OPSET,
                dynamo=True, external_data=False, verbose=False, report=False,
            )  # fmt: skip
        except torch.onnx.OnnxExporterError as e:
            raise ExportFailed(f"torch's ONNX exporter cannot translate this model: {_exception_summary(e)}") from None
    proto = program.model_proto
    proto.producer_name, proto.producer_version = "digitsum", __version__
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def export_torchscript(module: ExportModule, example: tuple[Tensor, ...], metadata: dict[str, str]) -> bytes:
    """The TorchScript file's bytes: the module traced by ``torch.jit.trace``."""
    with warnings.catch_warnings(action="ignore"), torch.no_grad():
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={f"digitsum/{k}": v for k, v in metadata.items()})
    return buffer.getvalue()


def runner(fmt: str, data: bytes, outputs: list[str]) -> tuple[Runner, str]:
    """A function running the exported file's bytes, as a consumer would load them, and its name."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no notes about unused initialisers
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_onnx(inputs: list[Tensor]) -> dict[str, Tensor]:
            results = session.run(outputs, {n: t.numpy() for n, t in zip(names, inputs)})
            return {name: torch.from_numpy(r) for name, r in zip(outputs, results)}

        return run_onnx, f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
    with warnings.catch_warnings(action="ignore"):
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")

    def run_torchscript(inputs: list[Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            return dict(loaded(*inputs))

    return run_torchscript, f"torch.jit.load (torch {torch.__version__})"


def describe_model(fmt: str, file: str, inputs: list[str]) -> dict[str, Any]:
    """The sidecar's ``model``: the file, its format and exporter, and how a consumer calls it."""
    info = {"file": file, "format": fmt, "torch": torch.__version__}
    if fmt == "onnx":
        import onnx

        feeds = ", ".join(f"'{n}': {n}" for n in inputs)
        return info | {"opset": ONNX_OPSET, "exporter": "torch.onnx.export(dynamo=True)", "onnx": onnx.__version__,
                       "call": f"onnxruntime.InferenceSession(path).run(None, {{{feeds}}}): one array per output, in the order of 'outputs'"}  # fmt: skip
    return info | {"exporter": "torch.jit.trace", "call": f"torch.jit.load(path)({', '.join(inputs)}): inputs by position "
                   "in the order of 'inputs'; returns a dict of the outputs by name"}  # fmt: skip


#: Largest absolute difference between the exported model's outputs and PyTorch's that passes.
TOLERANCE = 1e-4
#: Samples of the export check, and the batch sizes it runs them in (256 at once, then batches
#: of 1 and 7: the batch axis is dynamic, and a shape baked into the graph would show there).
SAMPLES = 256
CHECK_BATCHES = (1, 7)


class ExportMismatch(UserError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance (exit 1)."""

    exit_code = 1


def random_inputs(specs: Mapping[str, Spec], batch: int, seed: int = 0) -> list[Tensor]:
    """Raw inputs of the declared specs: uniform pixels in [0, 1], categoricals in range."""
    rng = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs.values():
        if isinstance(spec, Image):
            tensors.append(torch.rand(batch, spec.channels, spec.height, spec.width, generator=rng))
        elif isinstance(spec, Images):
            tensors.append(torch.rand(batch, spec.count, spec.channels, spec.height, spec.width, generator=rng))
        elif isinstance(spec, Categorical):
            tensors.append(torch.randint(0, spec.classes, (batch,), generator=rng))
        else:
            raise UserError(f"cannot export an input of kind {spec}: only Image, Images and Categorical inputs are known")
    return tensors


def check_inputs(run: Run, specs: Mapping[str, Spec], count: int) -> tuple[list[Tensor], str]:
    """``count`` raw samples to check an export on, and where they come from.

    Image inputs in MNIST's 1x28x28 format, alone or in sequences (``Images``: the digits of a
    number), get MNIST test images when they are on disk (never downloaded for this), in order
    (repeated when a sequence needs more than the split holds); each further such input a
    shuffled copy. Otherwise, and for categoricals, random values of the declared specs.
    """
    tensors = random_inputs(specs, count)
    digit = Image(1, MNIST_SIZE, MNIST_SIZE)
    mnist = {i: spec.count if isinstance(spec, Images) else None for i, spec in enumerate(specs.values())
             if (spec.image if isinstance(spec, Images) else spec) == digit}  # fmt: skip
    images = _mnist_test_images(run) if mnist else None
    if images is None:
        return tensors, f"{count} random inputs of the declared shapes (uniform pixels in [0, 1])"
    rng = torch.Generator().manual_seed(1)
    for k, (i, per) in enumerate(mnist.items()):
        picks = torch.arange(count * (per or 1)) % len(images)
        drawn = images[picks if k == 0 else picks[torch.randperm(len(picks), generator=rng)]]
        tensors[i] = drawn if per is None else drawn.view(count, per, *drawn.shape[1:])
    return tensors, f"{count} MNIST test {'samples' if any(mnist.values()) else 'images'}" + (
        " with random categoricals" if len(mnist) < len(specs) else "")


def _mnist_test_images(run: Run) -> Tensor | None:
    """MNIST's test images ``[N, 1, 28, 28]`` in [0, 1], when they are under the run's data root."""
    from ..data import load_mnist

    root = getattr(getattr(run.generator, "data", None), "root", None)
    try:
        digits = None if root is None else load_mnist(Path(root), "test", torch.device("cpu"), download=False)
    except UserError:
        return None
    return None if digits is None or not len(digits) else digits.images.unsqueeze(1).float().div(255.0)


def differences(run_exported: Runner, module: ExportModule, inputs: list[Tensor], outputs: list[str]) -> dict[str, float]:
    """Per output, the largest absolute difference over the whole batch and batches of 1 and 7."""
    n = len(inputs[0])
    worst = dict.fromkeys(outputs, 0.0)
    for part in [slice(0, n)] + [slice(0, min(b, n)) for b in CHECK_BATCHES]:
        chunk = [t[part] for t in inputs]
        with torch.no_grad():
            expected = module(*chunk)
        got = run_exported(chunk)
        for name in outputs:
            a, b = got[name], expected[name]
            gap = float("inf") if a.shape != b.shape else float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
            worst[name] = max(worst[name], gap)
    return worst
