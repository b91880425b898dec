"""Helpers for testing digitsum and plugins without the network or the real MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import MNIST_FILES


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (the format MNIST ships in)."""
    magic = {3: 2051, 1: 2049}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_digit_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images where digit d is a bright 8x8 block at a place of its own, plus noise.

    Learnable in a few steps, so tests can tell a model that trains from one that does not.
    """
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, d in enumerate(labels):
        row, col = divmod(int(d), 4)
        images[i, 2 + 8 * row : 8 + 8 * row, 2 + 6 * col : 8 + 6 * col] = 255
    return images


def write_tiny_mnist(root: Path, n_train: int = 512, n_test: int = 256, seed: int = 0) -> Path:
    """Write a small, learnable MNIST look-alike in torchvision's layout under ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images_name, labels_name = MNIST_FILES[split]
        write_idx(raw / images_name, tiny_digit_images(labels, rng))
        write_idx(raw / labels_name, labels.astype(np.uint8))
    return Path(root)


# -- conformance suite ---------------------------------------------------------------------------
#
# Plugin authors call these from their own pytest files:
#
#     from digitsum.testing import check_component, check_distribution, check_recipe
#
#     def test_my_fusion_conforms():
#         check_component(MyFusion)
#
# Each check raises ConformanceError (an AssertionError) listing every problem it found.


class ConformanceError(AssertionError):
    """A component breaks its contract; the message lists every problem found."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what} breaks the digitsum contract:\n" + "\n".join(f"  - {p}" for p in problems))


def _reporting_crashes(kind: str):
    """Turn an exception raised by the component under check into a ConformanceError naming it."""
    import functools

    def decorate(check):
        @functools.wraps(check)
        def wrapper(cls, *args, **kwargs):
            try:
                return check(cls, *args, **kwargs)
            except ConformanceError:
                raise
            except Exception as e:
                name = getattr(cls, "__name__", repr(cls))
                raise ConformanceError(f"{kind} {name}", [f"it raised {type(e).__name__}: {e}"]) from e

        return wrapper

    return decorate


def _default_inputs():
    """The notebook's task: what a fusion is checked against unless told otherwise."""
    from .contracts import Categorical, Image

    return {"image": Image(1, 28, 28), "number": Categorical(10)}


def _fallback_inputs():
    """What a fusion that refuses the default inputs is checked against instead: the first of
    these it accepts (two images; two sequences of three images)."""
    from .contracts import Image, Images

    return [{"image_a": Image(1, 28, 28), "image_b": Image(1, 28, 28)}, {"a": Images(3), "b": Images(3)}]


def _fallback_targets():
    """What a head that refuses the default ``Classes(10)`` target is checked against instead:
    the first of these it accepts (a 3-digit number: the sum of two 2-digit ones)."""
    from .contracts import Digits

    return [Digits(3)]


def _common_problems(cls: type, base: type, params):
    """Contract version, docstring and Params checks shared by every kind; returns (problems, params)."""
    import json

    from pydantic import ValidationError

    from .contracts import CONTRACT_VERSION, Params, params_schema

    problems: list[str] = []
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return [f"{cls!r} is not a subclass of digitsum.{base.__name__}"], None
    if getattr(cls, "contract", None) != CONTRACT_VERSION:
        problems.append(f"contract = {getattr(cls, 'contract', None)!r}, this digitsum speaks {CONTRACT_VERSION}")
    if not cls.summary():
        problems.append("the class has no docstring: its first line is the summary `digitsum list` shows")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
        return problems + ["Params must subclass digitsum.Params"], None
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
            problems.append(f"Params() is not valid with its defaults ({e.error_count()} error(s)); pass params= to the check")
    return problems, params


def _tensor_problems(name: str, value, spec, batch_size: int) -> list[str]:
    import torch

    from .contracts import Categorical, Classes, Digits, Image, Images

    if not isinstance(value, torch.Tensor):
        return [f"'{name}' is a {type(value).__name__}, not a tensor"]
    if value.device.type != "cpu":
        return [f"'{name}' is on {value.device}, not on the data device (cpu)"]
    if isinstance(spec, Image):
        shape = (batch_size, spec.channels, spec.height, spec.width)
        if tuple(value.shape) != shape or not value.is_floating_point():
            return [f"'{name}' is {value.dtype} {tuple(value.shape)}, declared {spec}: float {shape}"]
        if not torch.isfinite(value).all():
            return [f"'{name}' holds NaN or infinite values"]
    elif isinstance(spec, Images):
        shape = (batch_size, spec.count, spec.channels, spec.height, spec.width)
        if tuple(value.shape) != shape or not value.is_floating_point():
            return [f"'{name}' is {value.dtype} {tuple(value.shape)}, declared {spec}: float {shape}"]
        if not torch.isfinite(value).all():
            return [f"'{name}' holds NaN or infinite values"]
    elif isinstance(spec, Digits):
        if tuple(value.shape) != (batch_size, spec.length) or value.dtype != torch.int64:
            return [f"'{name}' is {value.dtype} {tuple(value.shape)}, declared {spec}: int64 ({batch_size}, {spec.length})"]
        if value.numel() and (int(value.min()) < 0 or int(value.max()) >= spec.base):
            return [f"'{name}' holds digits outside [0, {spec.base}) (min {int(value.min())}, max {int(value.max())})"]
    elif isinstance(spec, (Categorical, Classes)):
        if tuple(value.shape) != (batch_size,) or value.dtype != torch.int64:
            return [f"'{name}' is {value.dtype} {tuple(value.shape)}, declared {spec}: int64 ({batch_size},)"]
        if len(value) and (int(value.min()) < 0 or int(value.max()) >= spec.classes):
            return [f"'{name}' holds values outside [0, {spec.classes}) (min {int(value.min())}, max {int(value.max())})"]
    else:
        return [f"'{name}' is declared as {spec!r}, which is not a digitsum spec (Image, Images, Categorical, Classes, Digits)"]
    return []


@_reporting_crashes("generator")
def check_generator(cls: type, params=None, *, root: Path | None = None) -> None:
    """Check a Generator against its contract, drawing batches from tiny MNIST data.

    Checks: Params (defaults valid, unknown keys refused, described), ``interface`` (inputs
    and targets declared as digitsum specs, no name used twice), ``size`` of every split, and
    batches drawn for two index tensors: every declared input and target, nothing else, each
    of the declared dtype, shape and range, on the CPU, the same for the same seed whatever
    was drawn in between. Then ``encode``, on raw inputs made of the test split's images
    (float pixels in [0, 1], resized to each Image spec) and random categoricals: exactly
    the declared inputs, each of the declared dtype, shape and range, finite, the same
    twice, the raw tensors left unchanged; and images prepared as ``draw`` prepares them
    (the background level, the per-image median, and the ink level, the per-image 99th
    percentile, agree with those of ``draw``'s images for the same indices, within a quarter
    of the ink-to-background range: robust to the noise a generator adds in ``draw``).
    ``root``: a folder with MNIST; by default tiny data are written to a temporary folder.
    """
    import tempfile

    import torch

    from .contracts import Categorical, Classes, Digits, Generator, Image, Images, Interface
    from .data import DataContext

    problems, params = _common_problems(cls, Generator, params)
    if params is None:
        raise ConformanceError(f"generator {getattr(cls, '__name__', cls)}", problems)
    interface = cls.interface(params)
    if not isinstance(interface, Interface):
        raise ConformanceError(f"generator {cls.__name__}", problems + ["interface(params) must return a digitsum.Interface"])
    if not interface.inputs or not interface.targets:
        problems.append("it must declare at least one input and one target")
    problems += [f"input '{n}' must be Image, Images or Categorical, not {s!r}" for n, s in interface.inputs.items() if not isinstance(s, (Image, Images, Categorical))]
    problems += [f"target '{n}' must be Classes or Digits, not {s!r}" for n, s in interface.targets.items() if not isinstance(s, (Classes, Digits))]
    measured = getattr(interface, "measured", frozenset())
    problems += [f"measured target '{n}' is not among its targets" for n in sorted(set(measured) - set(interface.targets))]
    problems += [f"'{n}' is both an input and a target" for n in set(interface.inputs) & set(interface.targets)]
    specs = {**interface.inputs, **interface.targets}

    with tempfile.TemporaryDirectory() as tmp:
        data = DataContext(Path(root) if root else write_tiny_mnist(Path(tmp)), torch.device("cpu"), download=False)
        generator = cls(params, data)
        for split in cls.splits:
            n = generator.size(split)
            if not isinstance(n, int) or n < 1:
                problems.append(f"size({split!r}) = {n!r}, expected a positive int")
                continue
            for index in (torch.arange(min(n, 8)), torch.tensor([n - 1, 0, n // 2])):
                first = generator.draw(split, index, _seeded(0))
                generator.draw(split, index, _seeded(1))
                again = generator.draw(split, index, _seeded(0))
                if not isinstance(first, dict):
                    problems.append(f"draw() returned a {type(first).__name__}, not a dict of tensors")
                    break
                if set(first) != set(specs):
                    missing, extra = sorted(set(specs) - set(first)), sorted(set(first) - set(specs))
                    problems.append(f"draw({split!r}) keys differ from the declared ones: missing {missing}, undeclared {extra}")
                for name, spec in specs.items():
                    if name in first:
                        problems += [f"draw({split!r}): {p}" for p in _tensor_problems(name, first[name], spec, len(index))]
                if set(first) == set(again) and not all(torch.equal(first[k], again[k]) for k in first):
                    problems.append(f"draw({split!r}) differs for the same rng seed: take all randomness from `rng`")
            if isinstance(first, dict) and not isinstance(generator.describe(first, 0), str):
                problems.append("describe(batch, i) must return a str")
        if not problems:  # encode is compared with draw, which must work first
            problems += _encode_problems(generator, interface)
    if problems:
        raise ConformanceError(f"generator {cls.__name__}", problems)


#: How far encode's background and ink levels may be from draw's, as a fraction of draw's
#: ink-to-background range. Measured: a standardisation missing from encode (or added to it)
#: is off by 0.56 or more; the built-ins by 0 (noise-free) to 0.05 (noisy_digits' defaults),
#: 0.11 under heavy corruption (sigma 0.5, salt_pepper 0.2, occlusion 10 on tiny data).
ENCODE_TOLERANCE = 0.25


def raw_inputs(inputs, images, seed: int = 0):
    """Raw inputs for ``Generator.encode``: ``images`` (uint8 ``[B, 28, 28]``, e.g. MNIST's) as
    float pixels in [0, 1] resized to each Image spec, and random values for each Categorical.
    An Images input of ``count`` images gets ``images`` rolled by 0, 1, ... places along the batch:
    ``count`` different images per sample."""
    import torch
    import torch.nn.functional as F

    from .contracts import Image, Images
    from .data import mnist_pixels

    rng = _seeded(seed)
    raw = {}
    for name, spec in inputs.items():
        if isinstance(spec, (Image, Images)):
            x = mnist_pixels(images)
            if x.shape[-2:] != (spec.height, spec.width):
                x = F.interpolate(x, size=(spec.height, spec.width), mode="bilinear", antialias=True).clamp_(0, 1)
            x = x.expand(-1, spec.channels, -1, -1)
            if isinstance(spec, Images):
                x = torch.stack([x.roll(k, dims=0) for k in range(spec.count)], dim=1)
            raw[name] = x.contiguous()
        else:
            raw[name] = torch.randint(0, spec.classes, (len(images),), generator=rng)
    return raw


def _image_levels(x) -> tuple[float, float]:
    """Background and ink levels of images ``[B, C, H, W]``: the medians over the batch of each
    image's median and of its 99th percentile (light digits on a dark ground)."""
    flat = x.detach().float().flatten(1)
    background = flat.median(dim=1).values.median()
    ink = flat.quantile(0.99, dim=1).median()
    return float(background), float(ink)


def _encode_problems(generator, interface) -> list[str]:
    """encode's contract: declared inputs, dtypes, shapes, determinism, no change to its
    arguments, and images prepared as draw prepares them."""
    import torch

    from .contracts import Image, Images

    split = "test" if "test" in type(generator).splits else type(generator).splits[0]
    digits = generator.data.mnist(split)
    index = torch.arange(min(64, generator.size(split), len(digits)))
    raw = raw_inputs(interface.inputs, digits.images[index])
    kept = {k: v.clone() for k, v in raw.items()}
    try:
        first, again = generator.encode(raw), generator.encode(raw)
    except Exception as e:
        return [f"encode(raw inputs) raised {type(e).__name__}: {e}"]
    if not isinstance(first, dict):
        return [f"encode() returned a {type(first).__name__}, not a dict of tensors"]
    problems = []
    if set(first) != set(interface.inputs):
        missing, extra = sorted(set(interface.inputs) - set(first)), sorted(set(first) - set(interface.inputs))
        problems.append(f"encode() keys differ from the declared inputs: missing {missing}, undeclared {extra}")
    if not all(torch.equal(raw[k], kept[k]) for k in raw):
        problems.append("encode() changed the raw tensors it was given: work out of place")
    for name, spec in interface.inputs.items():
        if name not in first:
            continue
        found = _tensor_problems(name, first[name], spec, len(index))
        problems += [f"encode(): {p}" for p in found]
        if found:
            continue
        if not (isinstance(again, dict) and name in again and torch.equal(first[name], again[name])):
            problems.append(f"encode() gives another '{name}' for the same raw inputs: keep randomness in draw()")
        if isinstance(spec, (Image, Images)):
            drawn = generator.draw(split, index, _seeded(0))[name]
            bg_draw, ink_draw = _image_levels(drawn)
            bg_enc, ink_enc = _image_levels(first[name])
            scale = abs(ink_draw - bg_draw)
            if scale > 0 and max(abs(bg_enc - bg_draw), abs(ink_enc - ink_draw)) > ENCODE_TOLERANCE * scale:
                problems.append(
                    f"encode() prepares '{name}' unlike draw(): background level (median) {bg_enc:.3g} by "
                    f"encode, {bg_draw:.3g} by draw; ink level (99th percentile) {ink_enc:.3g} by encode, "
                    f"{ink_draw:.3g} by draw; "
                    "override encode() to prepare raw pixels (floats in [0, 1], light digit on dark) "
                    "as draw() prepares its own (and let draw() call it)"
                )
    return problems


def _seeded(seed: int):
    import torch

    rng = torch.Generator()
    rng.manual_seed(seed)
    return rng


def random_batch(inputs, batch_size: int = 4, seed: int = 0):
    """A batch of random tensors matching ``inputs`` (name -> spec), for testing fusions."""
    import torch

    from .contracts import Image, Images

    rng = _seeded(seed)
    batch = {}
    for name, spec in inputs.items():
        if isinstance(spec, Image):
            batch[name] = torch.randn(batch_size, spec.channels, spec.height, spec.width, generator=rng)
        elif isinstance(spec, Images):
            batch[name] = torch.randn(batch_size, spec.count, spec.channels, spec.height, spec.width, generator=rng)
        else:
            batch[name] = torch.randint(0, spec.classes, (batch_size,), generator=rng)
    return batch


def _grad_problems(module, what: str) -> list[str]:
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    if params and all(p.grad is None for p in params):
        return [f"{what}: no parameter received a gradient"]
    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
        return [f"{what}: a gradient is NaN or infinite"]
    return []


def _same_init(cls: type, *args) -> bool:
    import torch

    torch.manual_seed(0)
    a = cls(*args).state_dict()
    torch.manual_seed(0)
    b = cls(*args).state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@_reporting_crashes("fusion")
def check_fusion(cls: type, params=None, *, inputs=None, batch_size: int = 4) -> None:
    """Check a Fusion against its contract on random inputs (by default an MNIST image and a number
    0-9; for a fusion that refuses those, the first of two images, or two sequences of three
    images, that it accepts).

    Checks: Params, ``check`` (accepts ``inputs``; returns reasons rather than raising for
    inputs it cannot use), ``out_features``, the same initialisation under the same seed, a
    forward pass on the CPU giving finite float ``[B, out_features]``, the same output twice
    in eval mode, and a backward pass reaching its parameters.
    """
    import torch

    from .contracts import Fusion

    problems, params = _common_problems(cls, Fusion, params)
    if params is None:
        raise ConformanceError(f"fusion {getattr(cls, '__name__', cls)}", problems)
    if inputs is None:
        candidates = [_default_inputs(), *_fallback_inputs()]
        inputs = next((c for c in candidates if isinstance(cls.check(params, c), list) and not cls.check(params, c)), candidates[0])
    inputs = dict(inputs)
    reasons = cls.check(params, inputs)
    if reasons:
        raise ConformanceError(f"fusion {cls.__name__}", problems + [f"check() refuses {inputs}: {reasons}; pass inputs= it can use"])
    if not isinstance(cls.check(params, {}), list):
        problems.append("check(params, inputs) must return a list of reasons (empty when it can serve them)")
    if not _same_init(cls, params, inputs):
        problems.append("two instances built after torch.manual_seed(0) differ: draw initial weights from torch's RNG")
    torch.manual_seed(0)
    fusion = cls(params, inputs)
    out_features = getattr(fusion, "out_features", None)
    if not isinstance(out_features, int) or out_features < 1:
        raise ConformanceError(f"fusion {cls.__name__}", problems + [f"out_features = {out_features!r}, expected a positive int"])
    batch = random_batch(inputs, batch_size)
    output = fusion(batch)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (batch_size, out_features) or not output.is_floating_point():
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        problems.append(f"forward(batch) gave {shape}, expected float ({batch_size}, {out_features})")
    elif not torch.isfinite(output).all():
        problems.append("forward(batch) gave NaN or infinite values")
    else:
        output.pow(2).mean().backward()
        problems += _grad_problems(fusion, "backward")
        fusion.eval()
        with torch.no_grad():
            if not torch.equal(fusion(batch), fusion(batch)):
                problems.append("forward(batch) in eval mode differs between two calls")
    if problems:
        raise ConformanceError(f"fusion {cls.__name__}", problems)


@_reporting_crashes("head")
def check_head(cls: type, params=None, *, target=None, in_features: int = 16, batch_size: int = 8) -> None:
    """Check a Head against its contract on random features (by default for a 10-class target;
    for a head that refuses it, a ``Digits(3)`` target).

    ``in_features`` is the head's ``features_for(params, target)`` when it names a number.
    A ``Digits`` target gets random digits as labels (some may be numbers the head finds
    impossible, e.g. a sum of two 2-digit numbers above 199: its loss must stay finite).

    Checks: Params, ``check`` (accepts ``target``; returns reasons rather than raising for a
    target it cannot predict), the same initialisation under the same seed, ``forward`` on
    ``[B, in_features]``, a finite scalar ``loss`` whose gradient reaches the features and the
    head's parameters, per-sample ``metrics`` including ``primary_metric``, ``predict``, and
    ``probabilities``: None, or ``[B, classes]``, finite, non-negative, each row summing to 1.
    """
    import torch

    from .contracts import Classes, Digits, Head, Image

    problems, params = _common_problems(cls, Head, params)
    if params is None:
        raise ConformanceError(f"head {getattr(cls, '__name__', cls)}", problems)
    if target is None:
        candidates = [Classes(10), *_fallback_targets()]
        target = next((c for c in candidates if isinstance(cls.check(params, c), list) and not cls.check(params, c)), candidates[0])
    needed = cls.features_for(params, target)
    if needed is not None:
        if not isinstance(needed, int) or needed < 1:
            raise ConformanceError(f"head {cls.__name__}", problems + [f"features_for() = {needed!r}, expected None or a positive int"])
        in_features = needed
    reasons = cls.check(params, target)
    if reasons:
        raise ConformanceError(f"head {cls.__name__}", problems + [f"check() refuses {target}: {reasons}; pass target= it can predict"])
    if not isinstance(cls.check(params, Image()), list):
        problems.append("check(params, target) must return a list of reasons (empty when it can predict it)")
    if not _same_init(cls, params, in_features, target):
        problems.append("two instances built after torch.manual_seed(0) differ: draw initial weights from torch's RNG")
    torch.manual_seed(0)
    head = cls(params, in_features, target)
    features = torch.randn(batch_size, in_features, generator=_seeded(0), requires_grad=True)
    if isinstance(target, Digits):
        labels = torch.randint(0, target.base, (batch_size, target.length), generator=_seeded(1))
    else:
        labels = torch.randint(0, target.classes, (batch_size,), generator=_seeded(1))
    output = head(features)
    loss = head.loss(output, labels)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not torch.isfinite(loss):
        problems.append(f"loss(output, target) must be a finite scalar tensor, got {loss!r}")
    else:
        loss.backward()
        if features.grad is None or not torch.isfinite(features.grad).all():
            problems.append("the loss's gradient does not reach the features (or is not finite)")
        problems += _grad_problems(head, "loss.backward()")
    with torch.no_grad():
        metrics = head.metrics(output, labels)
        if not isinstance(metrics, dict):
            problems.append("metrics() must return a dict of per-sample tensors")
            metrics = {}
        for name, value in metrics.items():
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch_size,):
                problems.append(f"metric '{name}' must be a per-sample tensor of shape ({batch_size},)")
        if cls.primary_metric not in metrics:
            problems.append(f"primary_metric '{cls.primary_metric}' is not among its metrics {sorted(metrics)}")
        prediction = head.predict(output)
        if not isinstance(prediction, torch.Tensor) or prediction.shape[:1] != (batch_size,):
            problems.append(f"predict(output) must give one prediction per sample ({batch_size})")
        problems += _probabilities_problems(head.probabilities(output), batch_size, getattr(target, "classes", None))
        problems += _output_kind_problems(cls, head, output, batch_size, getattr(target, "classes", None))
    if problems:
        raise ConformanceError(f"head {cls.__name__}", problems)


def _output_kind_problems(cls: type, head, output, batch_size: int, classes: int | None) -> list[str]:
    """The head's declared ``output_kind`` against what it outputs and predicts."""
    import torch

    from .contracts import OUTPUT_KINDS

    kind = getattr(cls, "output_kind", "class_logits")
    if kind not in OUTPUT_KINDS:
        return [f"output_kind {kind!r} is not one of {', '.join(OUTPUT_KINDS)}"]
    if kind == "class_logits":
        shape = (batch_size, classes)
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != shape:
            found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            return [f"output_kind 'class_logits' (the default) declares outputs of shape {shape}, got {found}: "
                    "declare output_kind = 'value' or 'other' for another shape"]  # fmt: skip
        if not torch.equal(head.predict(output), output.argmax(dim=1)):
            return ["output_kind 'class_logits' (the default) declares predict() = argmax of the outputs, and it is not: "
                    "declare output_kind = 'other'"]  # fmt: skip
    if kind == "value" and (not isinstance(output, torch.Tensor) or tuple(output.shape) != (batch_size,)):
        found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        return [f"output_kind 'value' declares one number per sample, shape ({batch_size},), got {found}"]
    return []


def _probabilities_problems(probabilities, batch_size: int, classes: int | None) -> list[str]:
    import torch

    if probabilities is None:
        return []
    shape = (batch_size, classes)
    if not isinstance(probabilities, torch.Tensor) or tuple(probabilities.shape) != shape or not probabilities.is_floating_point():
        found = f"{probabilities.dtype} {tuple(probabilities.shape)}" if isinstance(probabilities, torch.Tensor) else type(probabilities).__name__
        return [f"probabilities(output) gave {found}, expected None or float {shape} (one row of class probabilities per sample)"]
    p = probabilities.double()
    if not torch.isfinite(p).all():
        return ["probabilities(output) holds NaN or infinite values"]
    problems = []
    if float(p.min()) < -1e-6:
        problems.append(f"probabilities(output) holds negative values (min {float(p.min()):.3g})")
    worst = float((p.sum(dim=1) - 1).abs().max())
    if worst > 1e-4:
        problems.append(f"probabilities(output) rows do not sum to 1 (off by up to {worst:.3g})")
    return problems


def _toy_model(seed: int = 0):
    """A small MLP and a fixed regression problem it can fit: what optimizers are checked on."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    rng = _seeded(seed)
    x = torch.randn(64, 4, generator=rng)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * torch.randn(64, 1, generator=rng)
    return model, x, y


def _steps(model, optimizer, x, y, steps: int, scheduler=None) -> list[float]:
    """Train ``steps`` full-batch steps of mean squared error; the loss before each step."""
    import torch

    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        losses.append(float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return losses


def _weights_only_problem(what: str, state) -> list[str]:
    """Checkpoints are read with torch.load(weights_only=True): a state dict must survive it."""
    import io

    import torch

    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception as e:
        return [f"{what} cannot be read back from a checkpoint (torch.load(weights_only=True)): {type(e).__name__}: {e}"]
    return []


@_reporting_crashes("optimizer")
def check_optimizer(cls: type, params=None, *, steps: int = 50) -> None:
    """Check an Optimizer against its contract on a small MLP fitting a fixed regression.

    Checks: Params (and a float field ``lr``); ``build`` returns a ``torch.optim.Optimizer``
    holding every parameter it was given exactly once, at ``params.lr``; ``steps`` steps lower
    the loss; the same weights from the same start; a parameter without a gradient is left
    alone; and resuming is exact: an optimizer built anew, given the first one's
    ``state_dict`` (as read back from a checkpoint with ``weights_only=True``), continues with
    the very same weights as the first.
    """
    import copy

    import torch

    from .contracts import Optimizer

    problems, params = _common_problems(cls, Optimizer, params)
    if params is None:
        raise ConformanceError(f"optimizer {getattr(cls, '__name__', cls)}", problems)
    lr = getattr(params, "lr", None)
    if "lr" not in cls.Params.model_fields or not isinstance(lr, float):
        raise ConformanceError(f"optimizer {cls.__name__}", problems + ["Params needs a float field `lr`: the learning rate, the peak of every schedule"])
    model, x, y = _toy_model()
    frozen = model[2].bias  # a parameter that gets no gradient: left alone
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    parameters = list(model.parameters())
    optimizer = cls(params).build(parameters)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConformanceError(f"optimizer {cls.__name__}", problems + [f"build() returned {type(optimizer).__name__}, not a torch.optim.Optimizer"])
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if len(held) != len(parameters) or {id(p) for p in held} != {id(p) for p in parameters}:
        problems.append("build(parameters) must hold every parameter it is given, each once")
    if any(group.get("lr") != lr for group in optimizer.param_groups):
        problems.append(f"its param groups' lr {[g.get('lr') for g in optimizer.param_groups]} differ from params.lr = {lr}")
    losses = _steps(model, optimizer, x, y, steps)
    if not all(map(_finite, losses)) or not losses[-1] < losses[0]:
        problems.append(f"{steps} steps at its default settings did not lower a small regression's loss ({losses[0]:.4g} -> {losses[-1]:.4g})")
    if not torch.equal(frozen, before):
        problems.append("it changed a parameter that had no gradient")
    again, x, y = _toy_model()
    again[2].bias.requires_grad_(False)
    _steps(again, cls(params).build(list(again.parameters())), x, y, steps)
    if not all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())):
        problems.append("the same steps from the same start gave other weights")
    # resume: the state after 5 steps, read back as a checkpoint is, into a new optimizer
    first, x, y = _toy_model()
    opt_first = cls(params).build(list(first.parameters()))
    _steps(first, opt_first, x, y, 5)
    state = copy.deepcopy(opt_first.state_dict())
    problems += _weights_only_problem("its state_dict", state)
    second = copy.deepcopy(first)
    opt_second = cls(params).build(list(second.parameters()))
    opt_second.load_state_dict(state)
    _steps(first, opt_first, x, y, 5)
    _steps(second, opt_second, x, y, 5)
    if not all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters())):
        problems.append("an optimizer given another's state_dict does not continue as it does: resumed runs would differ")
    if problems:
        raise ConformanceError(f"optimizer {cls.__name__}", problems)


def _finite(value: float) -> bool:
    import math

    return math.isfinite(value)


#: What a schedule may change besides the learning rate only when its parameters ask for it.
_HYPER_PARAMETERS = ("momentum", "betas", "weight_decay", "dampening", "nesterov", "eps")


@_reporting_crashes("schedule")
def check_schedule(cls: type, params=None, *, total_steps: int = 100) -> None:
    """Check a Schedule against its contract, on SGD with momentum and on Adam.

    Checks: Params; ``build`` works for runs of 1, 3, 10 and ``total_steps`` steps and returns a
    scheduler (``step``, ``get_last_lr``, ``state_dict``, ``load_state_dict``); every learning
    rate is finite, at least 0 and at most the optimizer's lr (the peak); with its default
    parameters it changes nothing but the learning rate (momentum, betas, weight decay stay as
    the optimizer was built); and resuming is exact: a scheduler built anew and given the first
    one's ``state_dict`` (as read back from a checkpoint) part-way gives the same learning
    rates to the end.
    """
    import copy

    import torch

    from .contracts import Schedule

    problems, checked = _common_problems(cls, Schedule, params)
    if checked is None:
        raise ConformanceError(f"schedule {getattr(cls, '__name__', cls)}", problems)
    peak = 0.1
    makers = {"SGD": lambda ps: torch.optim.SGD(ps, lr=peak, momentum=0.5, weight_decay=1e-4),
              "Adam": lambda ps: torch.optim.Adam(ps, lr=peak, betas=(0.8, 0.99), weight_decay=1e-4)}  # fmt: skip
    for name, make in makers.items():
        for steps in sorted({1, 3, 10, total_steps}):
            model, x, y = _toy_model()
            optimizer = make(list(model.parameters()))
            hyper = {k: optimizer.param_groups[0][k] for k in _HYPER_PARAMETERS if k in optimizer.param_groups[0]}
            scheduler = cls(checked).build(optimizer, steps)
            missing = [m for m in ("step", "get_last_lr", "state_dict", "load_state_dict") if not callable(getattr(scheduler, m, None))]
            if missing:
                raise ConformanceError(f"schedule {cls.__name__}", problems + [f"build() returned {type(scheduler).__name__}, without {', '.join(missing)}"])
            rates = [optimizer.param_groups[0]["lr"]]
            for _ in range(steps):
                _steps(model, optimizer, x, y, 1)
                scheduler.step()
                rates.append(optimizer.param_groups[0]["lr"])
            bad = [r for r in rates if not (_finite(r) and 0 <= r <= peak * (1 + 1e-9))]
            if bad:
                problems.append(f"{name}, {steps} steps: learning rates outside [0, the optimizer's lr {peak}]: {bad[:3]}")
            changed = {k: (v, optimizer.param_groups[0][k]) for k, v in hyper.items() if optimizer.param_groups[0][k] != v}
            if params is None and changed:
                what = ", ".join(f"{k} from {a} to {b}" for k, (a, b) in changed.items())
                problems.append(f"{name}, {steps} steps: with its default parameters it changed {what}: a schedule changes "
                                "only the learning rate unless its parameters ask for more")  # fmt: skip
    # resume part-way, from state dicts read back as a checkpoint is
    model, x, y = _toy_model()
    optimizer = makers["SGD"](list(model.parameters()))
    scheduler = cls(checked).build(optimizer, total_steps)
    _steps(model, optimizer, x, y, total_steps // 3, scheduler)
    state = copy.deepcopy({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    problems += _weights_only_problem("its state_dict", state["scheduler"])
    other_model = copy.deepcopy(model)
    other_optimizer = makers["SGD"](list(other_model.parameters()))
    other = cls(checked).build(other_optimizer, total_steps)
    other_optimizer.load_state_dict(state["optimizer"])
    other.load_state_dict(state["scheduler"])
    first, second = [], []
    for _ in range(total_steps - total_steps // 3):
        _steps(model, optimizer, x, y, 1, scheduler)
        _steps(other_model, other_optimizer, x, y, 1, other)
        first.append(optimizer.param_groups[0]["lr"])
        second.append(other_optimizer.param_groups[0]["lr"])
    if first != second:
        problems.append("a scheduler given another's state_dict part-way gives other learning rates: resumed runs would differ")
    if problems:
        raise ConformanceError(f"schedule {cls.__name__}", problems)


@_reporting_crashes("logger")
def check_logger(cls: type, params=None, *, workdir: str | Path | None = None) -> None:
    """Check a Logger against its contract by logging a real, tiny run that is interrupted and resumed.

    Checks: Params; ``requires`` a tuple of module names and ``install`` a string; then, in a
    temporary working folder (or ``workdir``), ``original`` trains on tiny generated data for
    one epoch of four steps with the logger, stopped after the second step (a checkpoint
    part-way) and resumed with a new instance of it: no hook raises, and what ``state_dict`` returns survives a checkpoint (it is read back with
    ``weights_only=True``) and is handed to the new instance's ``load_state_dict``. What the
    logger wrote is its own: test it by reading it back. A logger whose library is not
    installed cannot be checked (the error says what to install).
    """
    import contextlib
    import tempfile

    from .contracts import Logger
    from .callbacks import Callback
    from .engine.runner import resume, start
    from .recipe import load_recipe

    problems, params = _common_problems(cls, Logger, params)
    if params is None:
        raise ConformanceError(f"logger {getattr(cls, '__name__', cls)}", problems)
    if not (isinstance(cls.requires, tuple) and all(isinstance(m, str) for m in cls.requires)):
        problems.append(f"requires = {cls.requires!r}: a tuple of module names")
    if not isinstance(cls.install, str) or (cls.requires and not cls.install):
        problems.append("install must say what installs its required modules, e.g. 'pip install \"digitsum[tensorboard]\"'")
    reason = cls.unavailable()
    if reason:
        raise ConformanceError(f"logger {cls.__name__}", problems + [f"cannot be checked here: it {reason}"])

    class StopPartWay(Callback):
        def on_step(self, trainer, epoch, step, loss) -> None:
            if step == 1:
                trainer.request_stop("conformance check: stopped part-way, to be resumed")

    class Handed(cls):  # records what a resumed logger is given
        given = None

        def load_state_dict(self, state):
            type(self).given = state
            super().load_state_dict(state)

    Handed.__qualname__ = cls.__qualname__  # checkpoints key a callback's state by its class's name

    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(workdir or tmp):
        root = write_tiny_mnist(Path(tmp) / "mnist")
        recipe = load_recipe("original", ["train.epochs=1", "data.batch_size=128", f"data.root={str(root)!r}",
                                          "data.download=false", "train.device='cpu'"])  # fmt: skip
        run_dir = Path(tmp) / "run"
        logger = cls(params)
        start(recipe, run_dir, callbacks=[logger, StopPartWay()], progress=False)
        state = logger.state_dict()
        if not isinstance(state, dict):
            problems.append(f"state_dict() returned {type(state).__name__}, not a dict")
        else:
            problems += _weights_only_problem("state_dict()", state)
        resumed = Handed(params)
        outcome = resume(run_dir, callbacks=[resumed], progress=False)
        if not outcome.trainer.finished:
            problems.append("the resumed run did not finish")
        if isinstance(state, dict) and state and Handed.given is None:
            problems.append("the resumed logger was not given its state_dict")
    if problems:
        raise ConformanceError(f"logger {cls.__name__}", problems)


def check_component(cls: type, params=None, **options) -> None:
    """Run the check for ``cls``'s kind: :func:`check_generator`, :func:`check_fusion`,
    :func:`check_head`, :func:`check_optimizer`, :func:`check_schedule` or :func:`check_logger`."""
    from .contracts import Fusion, Generator, Head, Logger, Optimizer, Schedule

    checks = ((Generator, check_generator), (Fusion, check_fusion), (Head, check_head), (Optimizer, check_optimizer),
              (Schedule, check_schedule), (Logger, check_logger))  # fmt: skip
    for base, check in checks:
        if isinstance(cls, type) and issubclass(cls, base):
            return check(cls, params, **options)
    raise ConformanceError(repr(cls), ["it is not a subclass of digitsum.Generator, Fusion, Head, Optimizer, Schedule or Logger"])


def components_of(distribution: str) -> list[tuple[str, str, type]]:
    """``(kind, name, class)`` of every component ``distribution`` registers (it must be installed)."""
    from .discovery import canonical_name
    from .registry import REGISTRIES

    found = [
        (entry.kind, entry.name, entry.load())
        for registry in REGISTRIES.values()
        for entry in registry.entries()
        if canonical_name(entry.origin.distribution or "") == canonical_name(distribution)
    ]
    if not found:
        raise ConformanceError(
            f"distribution {distribution}",
            ["it registers no components: is it installed (pip install -e .) with entry points in "
             "[project.entry-points.\"digitsum.<kind>\"]?"],
        )  # fmt: skip
    return found


def check_distribution(distribution: str) -> list[str]:
    """Load every component ``distribution`` registers and check each; returns their names.

    Components that need parameters or other inputs than the defaults are better checked one
    by one with :func:`check_component` and its options.
    """
    checked = []
    for kind, name, cls in components_of(distribution):
        check_component(cls)
        checked.append(f"{kind}:{name}")
    return checked


#: check_recipe trains one epoch of this many tiny samples in batches of this size (64 steps):
#: enough for every head of the built-in and example recipes to show it learns (docs/plugins.md).
RECIPE_CHECK_SAMPLES, RECIPE_CHECK_BATCH = 2048, 32
#: check_recipe wants each head's test loss after that epoch at least this share of its
#: untrained value lower. Measured with the budget above (seeds 0-4): every head of the built-in
#: recipes, the example plugin's and a scaffolded plugin's falls 14.4 % or more (the slowest: a
#: sum head, whose loss falls 5.1 % from learning the sums' frequencies alone); with a learning
#: rate of 1e-9, or softmax fed to cross-entropy (the notebook, Adam at 0.01), 2.2 % at most.
MIN_LOSS_FALL = 0.05


def check_recipe(path: str | Path, workdir: str | Path, overrides=()) -> dict:
    """Train a recipe for one epoch on tiny MNIST data on the CPU; fail unless every head learns.

    The tiny data (:func:`write_tiny_mnist`, 2048 training samples) are learnable, so one epoch
    in batches of 32 shows whether the recipe trains. It fails (ConformanceError, every problem
    listed) when a loss is not finite, when a head has weight 0 (it is never trained; unless its target is one
    the generator marks measured only), or when a
    head's test loss after the epoch is not at least 5 % (:data:`MIN_LOSS_FALL`) below the same
    model's test loss before training: what a learning rate far too small or a loss that cannot
    fall (softmax fed to cross-entropy) give. ``digitsum doctor`` measures why. ``overrides`` (``--set`` style) apply after the tiny settings. The run directory and
    the data go under ``workdir`` (e.g. pytest's ``tmp_path``). Returns the run's summary.
    """
    import math

    from .callbacks import Callback
    from .engine.progress import fell
    from .engine.runner import start
    from .engine.watch import doctor_command
    from .recipe import load_recipe

    class Untrained(Callback):
        """The test metrics of the model as initialised, before its first step."""

        def __init__(self) -> None:
            self.test: dict[str, dict[str, float]] = {}

        def on_start(self, trainer) -> None:
            self.test = trainer.evaluate("test")

    workdir = Path(workdir)
    root = write_tiny_mnist(workdir / "mnist", n_train=RECIPE_CHECK_SAMPLES)
    tiny = ["train.epochs=1", f"data.batch_size={RECIPE_CHECK_BATCH}", f"data.root={str(root)!r}", "data.download=false",
            "train.device='cpu'"]  # fmt: skip
    recipe = load_recipe(path, [*tiny, *overrides])
    untrained = Untrained()
    outcome = start(recipe, workdir / "run", callbacks=[untrained], progress=False)
    if outcome.failure:  # the watch stopped the run: a NaN or infinite loss
        raise ConformanceError(f"recipe {path}", [outcome.failure])
    summary = outcome.summary
    metrics = summary["metrics"]
    losses = {f"{split} {head}": m["loss"] for split in ("train", "test") for head, m in metrics.get(split, {}).items()}
    if not losses or not all(math.isfinite(v) for v in losses.values()):
        raise ConformanceError(f"recipe {path}", [f"training gave losses {losses}"])
    problems = []
    measured = getattr(recipe.interface(), "measured", frozenset())
    for name, choice in recipe.heads.items():
        if choice.section.weight == 0 and choice.section.target in measured:
            continue  # measured only, by the generator's design: it reports, it is not trained
        if choice.section.weight == 0:
            problems.append(f"heads.{name} has weight 0: it is never trained (give it a weight > 0)")
            continue
        before, after, metric = untrained.test[name]["loss"], metrics["test"][name]["loss"], choice.cls.primary_metric
        if not fell(before, after, MIN_LOSS_FALL):
            problems.append(
                f"heads.{name} did not learn: test loss {before:.4f} untrained, {after:.4f} after one epoch "
                f"({'fell' if after < before else 'rose'} {abs(before - after) / (abs(before) or 1):.1%}, "
                f"needs to fall {MIN_LOSS_FALL:.0%}); {metric} "
                f"{untrained.test[name][metric]:.3f} untrained, {metrics['test'][name][metric]:.3f} after"
            )
    if problems:
        problems.append(f"`{doctor_command(path, overrides)}` measures why")
        raise ConformanceError(f"recipe {path}", problems)
    return summary
