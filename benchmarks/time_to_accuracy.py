"""Time to 98.5 % digit / 98.0 % sum test accuracy: digitsum's original recipe vs the fixed notebook.

Both are timed by the wall clock from the start (data loading included) to the end of the
first epoch whose test evaluation reaches both thresholds (evaluations included: a pipeline
pays for its own). digitsum runs recipes/original.toml through ``Trainer.fit``, stopped by a
callback once the thresholds are met; the notebook trains epoch after epoch (batch size 32,
Adam 1e-3, bugs fixed) and is evaluated after each.

    DIGITSUM_DATA=/work/shared/data .venv/bin/python benchmarks/time_to_accuracy.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import base_parser, data_root, machine, parse

from digitsum.engine.build import pick_device
from digitsum.engine.callbacks import Callback
from digitsum.engine.train import Trainer
from digitsum.recipe import load_recipe
from notebook_pipeline import NotebookRun


def reached(test: dict[str, float], digit: float, total: float) -> bool:
    return test["digit"] >= digit and test["sum"] >= total


class StopAtAccuracy(Callback):
    """Records when the test accuracies first reach the thresholds, and ends the run there."""

    def __init__(self, digit: float, total: float, started: float) -> None:
        self.digit, self.total, self.started = digit, total, started
        self.seconds: float | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict, test: dict) -> None:
        accuracy = {head: values["accuracy"] for head, values in test.items()}
        print(f"  digitsum epoch {epoch}: digit {accuracy['digit']:.4f} sum {accuracy['sum']:.4f} "
              f"at {time.perf_counter() - self.started:.1f} s", flush=True)  # fmt: skip
        if reached(accuracy, self.digit, self.total):
            self.seconds = time.perf_counter() - self.started
            trainer.request_stop("accuracy reached")


def digitsum_time(args) -> float | None:
    started = time.perf_counter()
    watch = StopAtAccuracy(args.digit, args.sum, started)
    recipe = load_recipe(args.recipe, [f"train.device='{args.device}'", f"train.threads={args.threads}", *args.overrides])
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(recipe, Path(run_dir), [watch]).fit()
    return watch.seconds


def notebook_time(args, root: Path, device) -> tuple[float | None, int]:
    started = time.perf_counter()
    notebook = NotebookRun(root, batch_size=32, device=device, lean=args.lean_notebook)
    for epoch in range(1, args.notebook_epochs + 1):
        notebook.train_epoch()
        test = notebook.evaluate()
        seconds = time.perf_counter() - started
        print(f"  notebook epoch {epoch}: digit {test['digit']:.4f} sum {test['sum']:.4f} at {seconds:.1f} s", flush=True)
        if reached(test, args.digit, args.sum):
            return seconds, epoch
    return None, args.notebook_epochs


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--digit", type=float, default=0.985, help="digit test accuracy to reach (default 0.985)")
    parser.add_argument("--sum", type=float, default=0.980, help="sum test accuracy to reach (default 0.980)")
    parser.add_argument("--notebook-epochs", type=int, default=8, help="most epochs the notebook may take (default 8)")
    args = parse(parser)
    root = data_root()
    print(machine())
    ours = digitsum_time(args)
    theirs, epochs = notebook_time(args, root, pick_device(args.device))
    target = f"{100 * args.digit:.1f} % digit / {100 * args.sum:.1f} % sum"
    print(f"time to {target} test accuracy:")
    print(f"  digitsum  {f'{ours:.1f} s' if ours else 'not reached in the recipe epochs'}")
    print(f"  notebook  {f'{theirs:.1f} s ({epochs} epochs)' if theirs else f'not reached in {epochs} epochs'}")
    if ours and theirs:
        print(f"  digitsum is {theirs / ours:.2f}x faster")


if __name__ == "__main__":
    main()
