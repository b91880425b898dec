"""The conformance check of a Generator: its declaration, ``draw`` and ``encode``, on tiny MNIST data."""

import tempfile
from pathlib import Path

import torch

from ...contract_checks import tensor_problems
from ...contracts import Categorical, Classes, Digits, Generator, Image, Images, Interface
from ...data import DataContext
from ..fixtures import raw_inputs, write_tiny_mnist
from ._common import common_checks, reporting_crashes

#: How far encode's background and ink levels may be from draw's, as a fraction of draw's
#: ink-to-background range. Measured: a standardisation missing from encode (or added to it)
#: is off by 0.56 or more; the built-ins by 0 (noise-free) to 0.05 (noisy_digits' defaults),
#: 0.11 under heavy corruption (sigma 0.5, salt_pepper 0.2, occlusion 10 on tiny data).
ENCODE_TOLERANCE = 0.25


@reporting_crashes("generator")
def check_generator(cls: type, params=None, *, root: Path | None = None) -> None:
    """Check a Generator against its contract, drawing batches from tiny MNIST data.

    Checks Params, ``interface``, ``size``, ``draw`` (the declared inputs and targets, the same
    for the same seed) and ``encode`` (the declared inputs, images prepared as ``draw``
    prepares them within :data:`ENCODE_TOLERANCE`); docs/plugins.md lists every check.
    ``root``: a folder with MNIST; by default tiny data are written to a temporary folder.
    """
    problems, params = common_checks("generator", cls, Generator, params)
    interface = cls.interface(params)
    if not isinstance(interface, Interface):
        problems.fail("interface(params) must return a digitsum.Interface")
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
                first = generator.draw(split, index, torch.Generator().manual_seed(0))
                generator.draw(split, index, torch.Generator().manual_seed(1))
                again = generator.draw(split, index, torch.Generator().manual_seed(0))
                if not isinstance(first, dict):
                    problems.append(f"draw() returned a {type(first).__name__}, not a dict of tensors")
                    break
                if set(first) != set(specs):
                    missing, extra = sorted(set(specs) - set(first)), sorted(set(first) - set(specs))
                    problems.append(f"draw({split!r}) keys differ from the declared ones: missing {missing}, undeclared {extra}")
                for name, spec in specs.items():
                    if name in first:
                        problems += [f"draw({split!r}): {p}" for p in tensor_problems(name, first[name], spec, len(index))]
                if set(first) == set(again) and not all(torch.equal(first[k], again[k]) for k in first):
                    problems.append(f"draw({split!r}) differs for the same rng seed: take all randomness from `rng`")
            if isinstance(first, dict) and not isinstance(generator.describe(first, 0), str):
                problems.append("describe(batch, i) must return a str")
        if not problems:  # encode is compared with draw, which must work first
            problems += encode_problems(generator, interface)
    problems.raise_any()


def image_levels(x: torch.Tensor) -> tuple[float, float]:
    """Background and ink levels of images ``[B, C, H, W]``: the medians over the batch of each
    image's median and of its 99th percentile (light digits on a dark ground)."""
    flat = x.detach().float().flatten(1)
    background = flat.median(dim=1).values.median()
    ink = flat.quantile(0.99, dim=1).median()
    return float(background), float(ink)


def encode_problems(generator, interface: Interface) -> list[str]:
    """encode's contract: declared inputs, dtypes, shapes, determinism, no change to its
    arguments, and images prepared as draw prepares them."""
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
        found = tensor_problems(name, first[name], spec, len(index))
        problems += [f"encode(): {p}" for p in found]
        if found:
            continue
        if not (isinstance(again, dict) and name in again and torch.equal(first[name], again[name])):
            problems.append(f"encode() gives another '{name}' for the same raw inputs: keep randomness in draw()")
        if isinstance(spec, (Image, Images)):
            bg_draw, ink_draw = image_levels(generator.draw(split, index, torch.Generator().manual_seed(0))[name])
            bg_enc, ink_enc = image_levels(first[name])
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
