"""Export a trained run for use outside digitsum: an ONNX or TorchScript file and a JSON sidecar.

The exported model takes each of the generator's inputs *raw*, by name (ONNX) or in the
generator's order (TorchScript): images as float32 ``[batch, C, H, W]`` pixels in [0, 1], a
light digit on a dark ground (MNIST's format), categoricals as int64 ``[batch]``. The
generator's ``encode`` (standardisation, for the built-ins) is part of the graph, so a consumer
brings images to MNIST's format and nothing more. It returns, per head, the head's raw output
(named after the head: logits for classifiers) and ``<head>_prediction``, the head's own
``predict`` of that output: a plugin head's prediction needs no knowledge of the head.

Probabilities are not exported: a head's way to them is not always expressible in ONNX (the
example plugin's ordinal head needs a running minimum, which torch's ONNX exporter cannot
translate); the sidecar says how to read each output instead (softmax of a classifier's logits...).

The sidecar (``<FILE>.json``) says everything a consumer needs: inputs, preprocessing in
words and as data, outputs and how to read them, the recipe, the run's test metrics and the
check made at export. For a model with image inputs, the code that brings a picture to MNIST's
format — :mod:`digitsum.mnist_format`, which needs only numpy and Pillow — is copied verbatim
next to the model as ``<FILE stem>_preprocess.py`` (:func:`preprocess_path`), and the sidecar's
``preprocessing.code`` names it and how to call it: the one implementation ``digitsum predict``
uses. Before anything is written, the exported model is run on real MNIST test
images (random inputs of the declared shapes when the data are not there) and compared with
PyTorch's outputs, at several batch sizes; a difference above the tolerance writes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import __version__
from .contracts import Categorical, Generator, Image, Images, Spec
from .errors import UserError, did_you_mean
from . import mnist_format
from .mnist_format import MNIST_BOX, MNIST_CENTRE, MNIST_SIZE
from .engine.component_errors import blame_components
from .engine.rundir import atomic_write, write_json

if TYPE_CHECKING:
    from .run import Run

#: Format -> the model file's default name in the run directory.
FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
#: Version of the sidecar's layout; bumped when a field changes meaning or goes away.
SIDECAR_FORMAT = 1
#: ONNX opset of every export: fixed, so that a file's needs do not change with torch's default.
#: 18 is the opset the torch.export-based exporter's operator library is written for (a lower one
#: needs a version conversion) and older than its default (20 in torch 2.14): more runtimes read it.
ONNX_OPSET = 18
#: Largest absolute difference between the exported model's outputs and PyTorch's that passes.
TOLERANCE = 1e-4
#: Samples of the export check, and the batch sizes it runs them in (256 at once, then batches
#: of 1 and 7: the batch axis is dynamic, and a shape baked into the graph would show there).
SAMPLES = 256
CHECK_BATCHES = (1, 7)
#: The batch size the model is traced with: not 1, which the exporter would specialise.
_TRACE_BATCH = 3
#: What the ONNX format needs beyond torch (the extra ``digitsum[onnx]``): the exporter
#: (torch.onnx with dynamo=True runs on onnxscript), the checker, the runtime of the check.
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")


class ExportMismatch(UserError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance (exit 1)."""

    exit_code = 1


class ExportFailed(UserError):
    """The exporter could not translate the model (an operator with no ONNX equivalent...), exit 1."""

    exit_code = 1


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


# -- choosing what and where --------------------------------------------------------------------------


def check_format(fmt: str) -> str:
    """``fmt`` if it names an export format, else a UserError listing them."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}' — {did_you_mean(fmt, FORMATS, 'formats')}")
    return fmt


def format_for(out: str | Path | None) -> str:
    """The format a model file's name asks for: ``.pt``/``.pth`` TorchScript, otherwise ONNX."""
    return "torchscript" if out is not None and Path(out).suffix.lower() in (".pt", ".pth") else "onnx"


def require_exporter(fmt: str) -> None:
    """Fail early, before loading anything, when the packages a format needs are missing."""
    if fmt != "onnx":
        return  # TorchScript is torch's own
    import importlib

    missing = []
    for name in ONNX_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # not installed, or installed broken: the same fix
            missing.append(name)
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}, not installed here: pip install \"digitsum[onnx]\"")


def sidecar_path(path: Path) -> Path:
    """The sidecar of a model file: its name with ``.json`` appended (``model.onnx.json``), so
    that an ONNX and a TorchScript export side by side keep one sidecar each."""
    return path.with_name(path.name + ".json")


def preprocess_path(path: Path) -> Path:
    """Where the preprocessing code of a model file goes: ``<stem>_preprocess.py`` beside it
    (``model.onnx`` -> ``model_preprocess.py``), the stem made a Python module name (characters
    other than letters, digits and ``_`` become ``_``; a leading digit gets a ``_`` before it),
    so that ``from model_preprocess import to_mnist_format`` works in that folder. An ONNX and a
    TorchScript export of one stem share it: the file is the same."""
    stem = re.sub(r"\W", "_", path.stem)
    return path.with_name(("_" if stem[:1].isdigit() else "") + stem + "_preprocess.py")


def _preprocess_code() -> bytes:
    """The bytes of digitsum/mnist_format.py, copied verbatim next to an exported model."""
    return Path(mnist_format.__file__).read_bytes()


def _check_preprocess_target(path: Path, force: bool) -> None:
    """A preprocess file already there is kept unless forced, or unless it is the same code."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; the preprocessing code of the model is written there")
    if path.exists() and not force and path.read_bytes() != _preprocess_code():
        raise UserError(f"{path} already exists (other code); pass --force to overwrite it, or choose another --out")


def _target_path(run_dir: Path, fmt: str, out: str | Path | None, force: bool) -> Path:
    path = Path(out) if out is not None else run_dir / FORMATS[fmt]
    if path.is_dir():
        raise UserError(f"{path} is a folder; give --out a file name, e.g. {path / FORMATS[fmt]}")
    taken = [p for p in (path, sidecar_path(path)) if p.exists()]
    if taken and not force:
        raise UserError(f"{taken[0]} already exists; pass --force to overwrite it, or choose another --out")
    return path


# -- the exported module --------------------------------------------------------------------------------


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


def output_names(head_names: list[str]) -> list[str]:
    return [name for head in head_names for name in (head, f"{head}_prediction")]


def _check_names(inputs: list[str], heads: list[str]) -> None:
    outputs = output_names(heads)
    clash = sorted({n for n in outputs if outputs.count(n) > 1} | (set(outputs) & set(inputs)))
    if clash:
        raise UserError(
            f"cannot export: the name {', '.join(map(repr, clash))} would be given to two of the model's "
            f"inputs and outputs (each head gives '<head>' and '<head>_prediction'); rename a head in the recipe"
        )


# -- inputs for tracing and for the check ---------------------------------------------------------------


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

    Image inputs in MNIST's 1x28x28 format get MNIST test images, when they are on disk (never
    downloaded for this); each further image input a shuffled copy of them. Otherwise, and for
    categoricals, random values of the declared specs.
    """
    tensors = random_inputs(specs, count)
    images = _mnist_test_images(run, count)
    mnist = [i for i, spec in enumerate(specs.values()) if spec == Image(1, MNIST_SIZE, MNIST_SIZE)]
    if images is None or not mnist:
        return tensors, f"{count} random inputs of the declared shapes (uniform pixels in [0, 1])"
    rng = torch.Generator().manual_seed(1)
    for k, i in enumerate(mnist):
        tensors[i] = images if k == 0 else images[torch.randperm(count, generator=rng)]
    return tensors, f"{count} MNIST test images" + (" with random categoricals" if len(mnist) < len(specs) else "")


def _mnist_test_images(run: Run, count: int) -> Tensor | None:
    from .data import load_mnist

    root = getattr(getattr(run.generator, "data", None), "root", None)
    if root is None:
        return None
    try:
        digits = load_mnist(Path(root), "test", torch.device("cpu"), download=False)
    except UserError:
        return None
    if len(digits) < count:
        return None
    return digits.images[:count].unsqueeze(1).float().div(255.0)


# -- exporting and running each format ------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    # The exporters warn about their own internals (deprecations of torch.jit, axis naming):
    # nothing a user of `digitsum export` can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _exception_summary(error: BaseException) -> str:
    """The useful lines of an exporter error (torch's own are pages of advice)."""
    text = str(error)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
        text = text.split("(Refer to the full stack trace", 1)[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("⬆")]
    return " ".join(lines)[:600]


def _export_onnx(module: ExportModule, example: tuple[Tensor, ...], outputs: list[str], metadata: dict[str, str]) -> bytes:
    import onnx

    batch = torch.export.Dim("batch")
    with _quiet(), torch.no_grad():
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


def _export_torchscript(module: ExportModule, example: tuple[Tensor, ...], metadata: dict[str, str]) -> bytes:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={f"digitsum/{k}": v for k, v in metadata.items()})
    return buffer.getvalue()


def _runner(fmt: str, data: bytes, outputs: list[str]) -> tuple[Callable[[list[Tensor]], dict[str, Tensor]], str]:
    """A function running the exported file's bytes, as a consumer would load them."""
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
    with _quiet():
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")

    def run_torchscript(inputs: list[Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            return dict(loaded(*inputs))

    return run_torchscript, f"torch.jit.load (torch {torch.__version__})"


def _differences(run_exported, module: ExportModule, inputs: list[Tensor], outputs: list[str]) -> dict[str, float]:
    """Per output, the largest absolute difference over the whole batch and batches of 1 and 7."""
    n = len(inputs[0])
    worst = dict.fromkeys(outputs, 0.0)
    slices = [slice(0, n)] + [slice(0, min(b, n)) for b in CHECK_BATCHES]
    for part in slices:
        chunk = [t[part] for t in inputs]
        with torch.no_grad():
            expected = module(*chunk)
        got = run_exported(chunk)
        for name in outputs:
            a, b = got[name], expected[name]
            if tuple(a.shape) != tuple(b.shape):
                worst[name] = float("inf")
                continue
            worst[name] = max(worst[name], float((a.double() - b.double()).abs().max()) if a.numel() else 0.0)
    return worst


# -- the sidecar ------------------------------------------------------------------------------------------


def describe_inputs(specs: Mapping[str, Spec]) -> list[dict[str, Any]]:
    """The sidecar's ``inputs``: one entry per input, in the order TorchScript takes them."""
    pixels = "pixels in [0, 1], a light digit on a dark ground (MNIST's format)"
    rows = []
    for position, (name, spec) in enumerate(specs.items()):
        if isinstance(spec, Image):
            rows.append({"name": name, "position": position, "kind": "image", "dtype": "float32",
                         "shape": ["batch", spec.channels, spec.height, spec.width],
                         "range": [0.0, 1.0], "description": pixels})  # fmt: skip
        elif isinstance(spec, Images):
            rows.append({"name": name, "position": position, "kind": "images", "dtype": "float32",
                         "shape": ["batch", spec.count, spec.channels, spec.height, spec.width], "count": spec.count,
                         "range": [0.0, 1.0], "description": f"{spec.count} images in order, each with {pixels}"})  # fmt: skip
        else:
            rows.append({"name": name, "position": position, "kind": "categorical", "dtype": "int64",
                         "shape": ["batch"], "range": [0, spec.classes - 1], "classes": spec.classes,
                         "description": f"an integer from 0 to {spec.classes - 1}"})  # fmt: skip
    return rows


def describe_preprocessing(specs: Mapping[str, Spec], code: Path | None = None) -> dict[str, Any]:
    """The sidecar's ``preprocessing``: what to do to a user's image before the model, as code
    (``code``: the copied :mod:`digitsum.mnist_format` file, how to call it), in words
    (``summary``, ``image_steps``: the module's own description of its steps, ``parameters``:
    its settings) and as data per image input (``images``)."""
    images = {name: spec for name, spec in specs.items() if isinstance(spec, (Image, Images))}
    # the geometry mnist_format gives an image of this size (MNIST's, scaled with the field)
    geometry = {
        name: {"channels": s.channels, "size": [s.height, s.width], "pixel_range": [0.0, 1.0],
               "polarity": "light digit on a dark ground",
               "digit_box": [MNIST_BOX * s.height / MNIST_SIZE, MNIST_BOX * s.width / MNIST_SIZE],
               "centre_of_mass": [(MNIST_CENTRE + 0.5) * n / MNIST_SIZE - 0.5 for n in (s.height, s.width)]}
        for name, s in images.items()
    }  # fmt: skip
    if not images:
        return {"summary": "No image inputs: give each input as its entry in 'inputs' says.", "image_steps": [],
                "images": {}, "in_model": _IN_MODEL}  # fmt: skip
    module = (code or Path("model_preprocess.py")).stem
    spec = next(iter(images.values()))  # the size of the first image input (the built-ins: all 28x28)
    feed = "pixels[None, None]" if spec.channels == 1 else f"np.repeat(pixels[None, None], {spec.channels}, axis=1)"
    data = _preprocess_code()
    return {
        "summary": (
            "Bring each image to MNIST's format, as MNIST itself was made and as `digitsum predict` does before "
            "the model: float32 pixels in [0, 1], a light digit on a dark ground, the digit scaled into a box of "
            "20x20 pixels and centred by its centre of mass in a 28x28 field. The code that does it — the same "
            f"that `digitsum predict` runs — is {module}.py, next to the model: it needs numpy and Pillow only. "
            "Categoricals are int64, unchanged."
        ),
        "code": {
            "file": f"{module}.py",
            "function": "to_mnist_format(image, height=28, width=28) -> float32 numpy array [height, width] in [0, 1]; "
                        "image: a file path, a PIL image or a numpy array (uint8 0-255 or floats in [0, 1]); "
                        "raises ImageError for an unreadable or blank image",
            "call": f"from {module} import to_mnist_format; pixels = to_mnist_format(path, {spec.height}, {spec.width}); "
                    f"feed {feed} (float32 {['batch', spec.channels, spec.height, spec.width]}) as "
                    + " and as ".join(f"'{n}'" for n in images) + " (one image each)" * (len(images) > 1),
            "requires": ["numpy", "Pillow"],
            "source": f"digitsum.mnist_format, digitsum {__version__}",
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "image_steps": mnist_format.steps(),
        "parameters": mnist_format.settings(),
        "images": geometry,
        "in_model": _IN_MODEL,
    }


_IN_MODEL = "the generator's encode is part of the model: give pixels in [0, 1], not standardised ones"


def _read_output(head: nn.Module, name: str, classes: int | None, shape: list[Any]) -> str:
    from .components.heads.classify import Classify
    from .components.heads.regress import Regress

    if isinstance(head, Classify):
        if head.params.output == "probabilities":
            return f"probabilities over the {classes} classes (softmax already applied); argmax over axis 1 is the class"
        return f"logits over the {classes} classes: softmax over axis 1 gives probabilities, argmax over axis 1 the class"
    if isinstance(head, Regress):
        return f"one real number per sample, the target's value: round it and clamp it to [0, {classes - 1}] for the class"
    return f"the head's raw output, shape {shape}; its prediction, by the head's own predict, is '{name}_prediction'"


def describe_outputs(run: Run, shapes: Mapping[str, tuple[list[Any], str]]) -> list[dict[str, Any]]:
    """The sidecar's ``outputs``: per head, its raw output and its prediction, and how to read each."""
    rows = []
    for name, head in run.model.heads.items():
        target = run.model.bindings[name].target
        spec = run.recipe.interface().targets[target]
        classes = getattr(spec, "classes", None)
        head_type = run.recipe.heads[name].section.type
        shape, dtype = shapes[name]
        rows.append({"name": name, "head": name, "kind": "output", "head_type": head_type, "target": target,
                     "classes": classes, "dtype": dtype, "shape": shape,
                     "read": _read_output(head, name, classes, shape)})  # fmt: skip
        shape, dtype = shapes[f"{name}_prediction"]
        rows.append({"name": f"{name}_prediction", "head": name, "kind": "prediction", "head_type": head_type,
                     "target": target, "classes": classes, "dtype": dtype, "shape": shape,
                     "read": f"the predicted value of '{target}' per sample (the head's own predict of '{name}')"
                     + (f": an integer from 0 to {classes - 1}" if classes else "")})  # fmt: skip
    return rows


def _shapes(results: Mapping[str, Tensor]) -> dict[str, tuple[list[Any], str]]:
    return {name: (["batch", *t.shape[1:]], str(t.dtype).removeprefix("torch.")) for name, t in results.items()}


def _how_to_call(fmt: str, inputs: list[str]) -> str:
    if fmt == "onnx":
        feeds = ", ".join(f"'{n}': {n}" for n in inputs)
        return f"onnxruntime.InferenceSession(path).run(None, {{{feeds}}}): one array per output, in the order of 'outputs'"
    return (f"torch.jit.load(path)({', '.join(inputs)}): inputs by position in the order of 'inputs'; "
            "returns a dict of the outputs by name")  # fmt: skip


# -- the export -------------------------------------------------------------------------------------------


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
    path = _target_path(run.run_dir, fmt, out, force)
    specs = dict(run.recipe.interface().inputs)
    code = preprocess_path(path) if any(isinstance(spec, (Image, Images)) for spec in specs.values()) else None
    if code is not None:
        _check_preprocess_target(code, force)
    inputs, heads = list(specs), list(run.model.heads)
    _check_names(inputs, heads)
    outputs = output_names(heads)
    # a CPU copy in eval mode: the file runs anywhere, and the run's own model is left alone
    module = ExportModule(copy.deepcopy(run.model).cpu().eval(), run.generator, inputs).eval()
    example = tuple(random_inputs(specs, _TRACE_BATCH))
    with blame_components(run.recipe), torch.no_grad():
        shapes = _shapes(module(*example))  # a component that fails eagerly is named, not the exporter
    metadata = {"digitsum_version": __version__, "recipe": run.recipe.name, "sidecar": sidecar_path(path).name}

    started = time.perf_counter()
    data = _export_onnx(module, example, outputs, metadata) if fmt == "onnx" else _export_torchscript(module, example, metadata)
    export_seconds = time.perf_counter() - started
    run_exported, runtime = _runner(fmt, data, outputs)
    check, source = check_inputs(run, specs, samples)
    differences = _differences(run_exported, module, check, outputs)
    result = Exported(path, sidecar_path(path), fmt, samples, source, differences, tolerance, code)
    if not result.max_difference <= tolerance:
        shown = ", ".join(f"{n} {d:.3g}" for n, d in differences.items())
        raise ExportMismatch(
            f"the exported {fmt} model does not reproduce PyTorch's outputs on {source}: largest absolute "
            f"differences {shown} (tolerance {tolerance:g}); nothing was written"
        )

    summary = run.summary or {}
    model_info: dict[str, Any] = {"file": path.name, "format": fmt, "torch": torch.__version__,
                                  "call": _how_to_call(fmt, inputs)}  # fmt: skip
    if fmt == "onnx":
        import onnx

        model_info.update(opset=ONNX_OPSET, exporter="torch.onnx.export(dynamo=True)", onnx=onnx.__version__)
    else:
        model_info.update(exporter="torch.jit.trace")
    sidecar = {
        "format": "digitsum-export",
        "format_version": SIDECAR_FORMAT,
        "digitsum_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model_info,
        "run_dir": str(run.run_dir.resolve()),
        "recipe_name": run.recipe.name,
        "recipe": run.recipe.to_dict(),
        "inputs": describe_inputs(specs),
        "preprocessing": describe_preprocessing(specs, code),
        "outputs": describe_outputs(run, shapes),
        "metrics": {"split": "test", "epochs": summary.get("epochs", len(run.history)), "status": run.status,
                    "heads": summary.get("metrics", {}).get("test", {})},  # fmt: skip
        "verification": {"samples": samples, "source": source, "batch_sizes": [samples, *CHECK_BATCHES],
                         "runtime": runtime, "tolerance": tolerance, "max_abs_difference": differences,
                         "export_seconds": round(export_seconds, 2)},  # fmt: skip
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {path.parent}: {e.strerror or e}") from None
    atomic_write(path, lambda f: f.write(data))
    if code is not None:
        preprocess = _preprocess_code()
        atomic_write(code, lambda f: f.write(preprocess))
    write_json(result.sidecar, sidecar)
    return result
