"""``digitsum predict``: a trained run on your own inputs, given as ``--input NAME=VALUE``."""

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserError, did_you_mean
from . import JsonOpt, app, print_json, say


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="a trained run directory", show_default=False)],
    input_: Annotated[
        list[str],
        typer.Option("--input", "-i", help="NAME=VALUE: an image file or a number per input of the recipe, e.g. "
                     "--input image=seven.png --input number=3 (repeat a name for a batch)", show_default=False),
    ],
    top: Annotated[int, typer.Option("--top", help="most probable classes shown per head")] = 3,
    no_preprocess: Annotated[bool, typer.Option("--no-preprocess", help="images are already in MNIST's format (28x28, light digit on dark)")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, auto ...")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Predict every head of a trained run on your own inputs: per head, the prediction and the
    most probable classes. Images of any size and either polarity are brought to MNIST's format."""
    import digitsum

    loaded = digitsum.load_run(run_dir, device)
    inputs, labels = _parse_inputs(input_, loaded.generator)
    predictions = loaded.predict(preprocess=not no_preprocess, top=top, **inputs)
    if as_json:
        print_json({"run": str(run_dir), "inputs": labels, "samples": predictions.samples()})
        return
    width = max(len(name) for name in predictions)
    for label, sample in zip(labels, predictions.samples()):
        say(label)
        for name, answer in sample.items():
            ranked = ", ".join(f"{t['class']} {100 * t['probability']:.1f} %" for t in answer["top"])
            say(f"  {name:<{width}}  {answer['prediction']!s:>4}" + (f"   top: {ranked}" if ranked else ""))


def _parse_inputs(items: list[str], generator: Any) -> tuple[dict[str, Any], list[str]]:
    """``["image=a.png", "number=3"]`` -> keyword inputs for ``Run.predict`` and a label per sample.

    Image inputs take file paths, categorical ones whole numbers; a name given several times
    makes a batch (names given once are repeated over it). An Images input (a sequence of
    images) is given once per image, in order: its paths make one sample's sequence.
    """
    from ..contracts import Categorical, Images
    from ..predict import describe_input

    specs = generator.interface(generator.params).inputs
    values: dict[str, list] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UserError(f"--input {item!r}: expected NAME=VALUE, e.g. --input image=seven.png")
        if name not in specs:
            raise UserError(f"--input {item!r}: the recipe has no input '{name}' — {did_you_mean(name, specs, 'inputs')}")
        if isinstance(specs[name], Categorical):
            try:
                values.setdefault(name, []).append(int(value))
            except ValueError:
                raise UserError(f"--input {item!r}: '{name}' takes a whole number ({describe_input(specs[name])})") from None
        else:
            values.setdefault(name, []).append(value)
    missing = [name for name in specs if name not in values]
    if missing:
        raise UserError("missing " + ", ".join(f"--input {n}=..." for n in missing) + f" ({describe_input(specs[missing[0]])})")
    sequences = {name: values.pop(name) for name in list(values) if isinstance(specs[name], Images)}
    size = max((len(v) for v in values.values()), default=1)
    inputs = {name: (v[0] if len(v) == 1 else v) for name, v in values.items()}  # a single value serves every sample
    labels = [" ".join(f"{name}={v[i] if len(v) > 1 else v[0]}" for name, v in values.items()) for i in range(size)]
    for name, paths in sequences.items():  # one sequence, the same for every sample
        inputs[name] = paths
        labels = [f"{label} {name}={','.join(paths)}".strip() for label in labels]
    return inputs, labels
