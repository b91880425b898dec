"""``digitsum export``: a run's model as ONNX or TorchScript, checked against PyTorch."""

from pathlib import Path
from typing import Annotated

import typer

from . import app, say


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="run directory", show_default=False)],
    format_: Annotated[
        str | None,
        typer.Option("--format", "-f", help="onnx or torchscript (default: torchscript for an --out ending in .pt, else onnx)", show_default=False),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="model file (default RUN_DIR/model.onnx or RUN_DIR/model.pt); its sidecar is FILE.json", show_default=False)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing model file and its sidecar")] = False,
) -> None:
    """Export a run's model to ONNX or TorchScript, with a JSON sidecar saying how to use it.

    The model takes raw inputs (images as float32 pixels in [0, 1], light digit on dark; numbers
    as int64) and returns each head's output and its prediction. It is checked against PyTorch
    on 256 test samples before anything is written: exit 1 if they differ by more than 1e-4.
    """
    import digitsum
    from ..export import check_format, format_for, require_exporter

    fmt = check_format(format_) if format_ is not None else format_for(out)
    require_exporter(fmt)  # before loading the run: a missing package is known at once
    result = digitsum.load_run(run_dir).export(fmt, out, force=force)
    say(f"checked on {result.source}, in batches of {result.samples}, 1 and 7: largest absolute difference from PyTorch per output")
    for name, difference in result.differences.items():
        say(f"  {name:<24} {difference:.3g}")
    say(f"wrote {result.path} and {result.sidecar}")
