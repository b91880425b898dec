"""The JSON sidecar of an export (``<FILE>.json``) and the preprocessing code copied beside it:
inputs, preprocessing in words, as code and as data, and outputs with how to read each — the
last from each head's own declaration (``Head.prediction_space``), never from its class."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, mnist_format
from ..contracts import Image, Images, PredictionSpace, Spec
from ..errors import UserError
from ..files import read_bytes
from ..mnist_format import MNIST_BOX, MNIST_CENTRE, MNIST_SIZE

if TYPE_CHECKING:
    from ..run import Run

#: Version of the sidecar's layout; bumped when a field changes meaning or goes away.
SIDECAR_FORMAT = 1
_IN_MODEL = "the generator's encode is part of the model: give pixels in [0, 1], not standardised ones"


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


def preprocess_code() -> bytes:
    """The bytes of digitsum/mnist_format.py, copied verbatim next to an exported model."""
    return Path(mnist_format.__file__).read_bytes()


def _contents(path: Path) -> bytes | None:
    try:
        return read_bytes(path)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; choose another --out") from None


def check_preprocess_target(path: Path, force: bool) -> None:
    """A preprocess file already there is rewritten when it is the same code, and, with
    ``force``, when an earlier export wrote it (digitsum's preprocessing module, of another
    version: its first line); a user's own file of that name never."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; the preprocessing code of the model is written there")
    if not path.exists() or (found := _contents(path)) == preprocess_code():
        return
    ours = found.split(b"\n", 1)[0] == preprocess_code().split(b"\n", 1)[0]
    if not force or not ours:
        raise UserError(f"{path} already exists (other code" + (", an earlier export's); pass --force (from Python: force=True) to "
                        "overwrite it" if ours else ", not an export's); --force replaces only an export's") + ", or choose another --out")


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
    if not images:
        return {"summary": "No image inputs: give each input as its entry in 'inputs' says.", "image_steps": [],
                "images": {}, "in_model": _IN_MODEL}  # fmt: skip
    # the geometry mnist_format gives an image of this size (MNIST's, scaled with the field)
    geometry = {
        name: {"channels": s.channels, "size": [s.height, s.width], "pixel_range": [0.0, 1.0],
               "polarity": "light digit on a dark ground",
               "digit_box": [MNIST_BOX * s.height / MNIST_SIZE, MNIST_BOX * s.width / MNIST_SIZE],
               "centre_of_mass": [(MNIST_CENTRE + 0.5) * n / MNIST_SIZE - 0.5 for n in (s.height, s.width)]}
        for name, s in images.items()
    }  # fmt: skip
    module = (code or Path("model_preprocess.py")).stem
    spec = next(iter(images.values()))  # the size of the first image input (the built-ins: all 28x28)
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
                    + "; ".join(_feed(name, s) for name, s in images.items()),
            "requires": ["numpy", "Pillow"],
            "source": f"digitsum.mnist_format, digitsum {__version__}",
            "sha256": hashlib.sha256(preprocess_code()).hexdigest(),
        },
        "image_steps": mnist_format.steps(),
        "parameters": mnist_format.settings(),
        "images": geometry,
        "in_model": _IN_MODEL,
    }


def _feed(name: str, spec: Image | Images) -> str:
    """How the preprocessed pixels of one image input go into the model, in words and numpy."""
    one = "pixels[None]" if spec.channels == 1 else f"np.repeat(pixels[None], {spec.channels}, axis=0)"  # [c, h, w]
    if isinstance(spec, Images):
        return (f"feed np.stack([{one} for pixels in the {spec.count} images, most significant first])[None] "
                f"(float32 {['batch', spec.count, spec.channels, spec.height, spec.width]}) as '{name}'")
    return f"feed {one}[None] (float32 {['batch', spec.channels, spec.height, spec.width]}) as '{name}'"


def _read_output(space: PredictionSpace, output_kind: str, name: str, shape: list[Any]) -> str:
    if space.output:
        return space.output
    if output_kind == "class_logits" and space.classes is not None and space.length is None:
        return f"logits over the {space.classes} classes: softmax over axis 1 gives probabilities, argmax over axis 1 the class"
    return f"the head's raw output, shape {shape}; its prediction, by the head's own predict, is '{name}_prediction'"


def _read_prediction(space: PredictionSpace, name: str, target: str) -> str:
    text = f"{space.meaning or f'the predicted value of {target!r}'} per sample (the head's own predict of '{name}')"
    if space.classes is not None and space.top > 1:
        text += f": the {space.top} most probable classes, most probable first, integers from 0 to {space.classes - 1}"
    elif space.classes is not None:
        many = f"{space.length} integers" if space.length else "an integer"
        text += f": {many} from 0 to {space.classes - 1}" + (" each" if space.length else "")
    if space.labels:
        text += "; the classes' labels, in order: " + ", ".join(space.labels)
    return text


def describe_outputs(run: Run, shapes: Mapping[str, tuple[list[Any], str]]) -> list[dict[str, Any]]:
    """The sidecar's ``outputs``: per head, its raw output and its prediction, and how to read
    each, as the head declares them (``Head.prediction_space``)."""
    rows = []
    for name, head in run.model.heads.items():
        space: PredictionSpace = head.prediction_space()
        target = run.model.bindings[name].target
        reads = {"output": _read_output(space, head.output_kind, name, shapes[name][0]),
                 "prediction": _read_prediction(space, name, target)}  # fmt: skip
        for kind, output in (("output", name), ("prediction", f"{name}_prediction")):
            shape, dtype = shapes[output]
            rows.append({"name": output, "head": name, "kind": kind, "head_type": run.recipe.heads[name].section.type,
                         "target": target, "relation": space.relation, "classes": space.classes, "length": space.length, "top": space.top,
                         "labels": None if space.labels is None else list(space.labels),
                         "dtype": dtype, "shape": shape, "read": reads[kind]})  # fmt: skip
    return rows
