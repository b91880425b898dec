"""The conformance check of a Fusion, on random inputs."""

import torch

from ...contracts import Categorical, Fusion, Image, Images
from ..fixtures import random_batch
from ._common import accepted, built_reproducibly, common_checks, grad_problems, reporting_crashes, shape_of

#: What a fusion is checked against unless told otherwise: the notebook's task first, then, for a
#: fusion that refuses it, the first of these it accepts (two images; two sequences of three images).
CANDIDATE_INPUTS = [
    {"image": Image(1, 28, 28), "number": Categorical(10)},
    {"image_a": Image(1, 28, 28), "image_b": Image(1, 28, 28)},
    {"a": Images(3), "b": Images(3)},
]


@reporting_crashes("fusion")
def check_fusion(cls: type, params=None, *, inputs=None, batch_size: int = 4) -> None:
    """Check a Fusion against its contract on random inputs (by default an MNIST image and a number
    0-9; for a fusion that refuses those, the first of two images, or two sequences of three
    images, that it accepts).

    Checks: Params, ``check`` (accepts ``inputs``; returns reasons rather than raising for
    inputs it cannot use), ``out_features``, the same initialisation under the same seed, a
    forward pass on the CPU giving finite float ``[B, out_features]``, the same output twice
    in eval mode, and a backward pass reaching its parameters.
    """
    problems, params = common_checks("fusion", cls, Fusion, params)
    candidates = [dict(c) for c in CANDIDATE_INPUTS]  # copies: check() is the plugin's code
    inputs = dict(accepted(problems, cls, params, None if inputs is None else dict(inputs), candidates, "inputs", "serve them", {}))
    fusion = built_reproducibly(problems, cls, params, inputs)
    out_features = getattr(fusion, "out_features", None)
    if not isinstance(out_features, int) or out_features < 1:
        problems.fail(f"out_features = {out_features!r}, expected a positive int")
    batch = random_batch(inputs, batch_size)
    output = fusion(batch)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (batch_size, out_features) or not output.is_floating_point():
        problems.append(f"forward(batch) gave {shape_of(output)}, expected float ({batch_size}, {out_features})")
    elif not torch.isfinite(output).all():
        problems.append("forward(batch) gave NaN or infinite values")
    else:
        output.pow(2).mean().backward()
        problems += grad_problems(fusion, "backward")
        fusion.eval()
        with torch.no_grad():
            if not torch.equal(fusion(batch), fusion(batch)):
                problems.append("forward(batch) in eval mode differs between two calls")
    problems.raise_any()
