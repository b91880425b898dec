"""Commands on a trained model — a run directory, or a shipped recipe's name for its pretrained
weights: ``eval``, ``predict`` (your own inputs, as ``--input NAME=VALUE``) and ``export`` (ONNX
or TorchScript, checked against PyTorch; or a run as pretrained weights)."""

from typing import Annotated, Any

import typer

from ..errors import UserError, did_you_mean
from . import JsonOpt, app, console, path_flag, path_text, print_json, say

#: The trained model a command works on.
ModelArg = Annotated[str, typer.Argument(metavar="RUN", show_default=False,
                     help="a run directory, or a recipe name for its pretrained weights (digitsum list recipes)")]  # fmt: skip


@app.command("eval")
def eval_(
    run_dir: ModelArg,
    split: Annotated[str, typer.Option("--split", metavar="SPLIT", help="test, train, or val (a run that held one out)")] = "test",
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a trained model (a run's last checkpoint, or pretrained weights) and print the
    metrics of every head."""
    import digitsum

    loaded = digitsum.load(run_dir)
    if split not in loaded.generator.split_names():
        raise UserError(f"--split {split!r}: {did_you_mean(split, loaded.generator.split_names(), 'splits')}")
    epoch, step = len(loaded.history), int(loaded.summary.get("position", {}).get("step", 0))
    heads = loaded.evaluate(split)
    if as_json:
        print_json({"run": loaded.source, "recipe": loaded.recipe.name, "split": split, "epoch": epoch, "step": step, "heads": heads})
        return
    from rich.table import Table

    where = f"epoch {epoch}" + (f" + {step} steps" if step else "")
    table = Table(title=f"{loaded.recipe.name} ({where}) on the {split} split")
    for column in ("head", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for head, values in heads.items():
        for metric, value in values.items():
            table.add_row(head, metric, f"{value:.4f}")
    console.print(table)
    if loaded.weights is not None and split == "test":  # pretrained: say whether the record is reproduced
        same = loaded.weights.reproduced_by(heads)
        say(f"the weights' recorded test metrics: {'reproduced' if same else 'NOT reproduced (another machine or data?)'}")


@app.command()
def predict(
    run_dir: ModelArg,
    input_: Annotated[
        list[str],
        typer.Option("--input", "-i", metavar="NAME=VALUE", help="NAME=VALUE: an image file or a number per input of the recipe, e.g. "
                     "--input image=seven.png --input number=3 (repeat a name for a batch)", show_default=False),
    ],
    top: Annotated[int, typer.Option("--top", metavar="N", help="most probable classes shown per head")] = 3,
    no_preprocess: Annotated[bool, typer.Option("--no-preprocess", help="images are already in MNIST's format (28x28, light digit on dark)")] = False,
    device: Annotated[str, typer.Option("--device", metavar="DEVICE", help="cpu, cuda, auto ...")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Predict every head of a trained model (a run, or pretrained weights) on your own inputs: per
    head, the prediction and the most probable classes. Images of any size and either polarity
    are brought to MNIST's format."""
    import digitsum
    from ..predict import number_text

    loaded = digitsum.load(run_dir, device)
    inputs, labels = _parse_inputs(input_, loaded.generator)
    predictions = loaded.predict(preprocess=not no_preprocess, top=top, **inputs)
    if as_json:
        print_json({"run": loaded.source, "inputs": labels, "samples": predictions.samples()})
        return
    width = max(len(name) for name in predictions)
    for label, sample in zip(labels, predictions.samples()):
        say(label)
        for name, answer in sample.items():
            ranked = ", ".join(f"{t.get('label', t['class'])} {100 * t['probability']:.1f} %" for t in answer["top"])
            shown = answer.get("label") or number_text(answer["prediction"])
            say(f"  {name:<{width}}  {shown!s:>4}" + (f"   top: {ranked}" if ranked else ""))


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
        shown = item if len(item) <= 80 else f"{item[:60]}…({len(item)} characters)"
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UserError(f"--input {shown!r}: expected NAME=VALUE, e.g. --input image=seven.png")
        if name not in specs:
            raise UserError(f"--input {shown!r}: the recipe has no input '{name}' — {did_you_mean(name, specs, 'inputs')}")
        if isinstance(specs[name], Categorical):
            try:
                value = int(value)
            except ValueError:
                raise UserError(f"--input {shown!r}: '{name}' takes a whole number ({describe_input(specs[name])})") from None
        values.setdefault(name, []).append(value)
    missing = [name for name in specs if name not in values]
    if missing:
        raise UserError("missing " + ", ".join(f"--input {n}=..." for n in missing) + f" ({describe_input(specs[missing[0]])})")
    sequences = {name: values.pop(name) for name in list(values) if isinstance(specs[name], Images)}
    counts = {name: len(v) for name, v in values.items() if len(v) > 1}
    if len(set(counts.values())) > 1:
        given = ", ".join(f"{name} {count} times" for name, count in counts.items())
        raise UserError(f"--input {given}: give each input once (used for every sample) or the same number of times")
    size = max((len(v) for v in values.values()), default=1)
    inputs = {name: (v[0] if len(v) == 1 else v) for name, v in values.items()}  # a single value serves every sample
    labels = [" ".join(f"{name}={v[i] if len(v) > 1 else v[0]}" for name, v in values.items()) for i in range(size)]
    for name, paths in sequences.items():  # one sequence, the same for every sample
        inputs[name] = paths
        labels = [f"{label} {name}={','.join(paths)}".strip() for label in labels]
    return inputs, labels


@app.command()
def export(
    run_dir: ModelArg,
    format_: Annotated[
        str | None,
        typer.Option("--format", "-f", metavar="FORMAT", help="onnx, torchscript, or safetensors (a run as its recipe's pretrained weights; "
                     "default: torchscript for an --out ending in .pt, else onnx)", show_default=False),
    ] = None,
    out: Annotated[  # the text as typed: a trailing slash names a folder, which Path() would drop
        str | None, path_flag("--out", "-o", parser=path_text, help="model file (default RUN_DIR/model.onnx or RUN_DIR/model.pt, "
                                  "RECIPE.onnx for pretrained weights); its sidecar is FILE.json. For safetensors: the "
                                  "folder to write RECIPE.safetensors and RECIPE.json in (default: here)", show_default=False)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing model file and its sidecar")] = False,
) -> None:
    """Export a trained model to ONNX or TorchScript, with a JSON sidecar saying how to use it;
    or a finished run of a shipped recipe as that recipe's pretrained weights (safetensors).

    The model takes raw inputs (images as float32 pixels in [0, 1], light digit on dark; numbers
    as int64) and returns each head's output and its prediction. It is checked against PyTorch
    on 256 test samples before anything is written: exit 1 if they differ by more than 1e-4.
    """
    import digitsum
    from ..export import WEIGHTS_FORMAT, check_format, format_for, require_exporter

    fmt = check_format(format_) if format_ is not None else format_for(out)
    if fmt == WEIGHTS_FORMAT:
        from ..export.pretrained import export_weights

        written = export_weights(digitsum.load(run_dir), out, force=force)
        say(f"wrote {written[0]} and its record {written[1]}")
        return
    require_exporter(fmt)  # before loading the run: a missing package is known at once
    result = digitsum.load(run_dir).export(fmt, out, force=force)
    say(f"checked on {result.source}, in batches of {result.samples}, 1 and 7: largest absolute difference from PyTorch per output")
    for name, difference in result.differences.items():
        say(f"  {name:<24} {difference:.3g}")
    extra = f" and {result.preprocess}, the images' preprocessing" if result.preprocess is not None else ""
    say(f"wrote {result.path}, {result.sidecar}{extra}")
