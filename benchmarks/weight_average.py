"""Does an average of the weights read more val digits than the final weights? (issue 30)

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/weight_average.py SEED [--set KEY=VALUE ...]

Trains add-100 once on the val split (``data.val = 5000``) with the settings of
docs/benchmarks.md ("N = 100"), single-threaded, and keeps beside the run, through a
:class:`digitsum.Callback`, exponential averages of the weights (decays per step in ``DECAYS``)
and the plain average over the steps of the last fifth of the epochs. At the end each set of
weights is evaluated on the val split (never the test split), and the val digit accuracies
are printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

import digitsum

DECAYS = (0.995, 0.998, 0.999)
SETTINGS = ["train.threads=1", "train.eval_every=1000", "train.epochs=30", "data.val=5000", "backbone.conv_channels=[32,64]",
            "backbone.test_shifts=2", "backbone.last_layer_scale=0"]  # fmt: skip


class Averages(digitsum.Callback):
    """Exponential averages of the weights, and the plain average over the last ``tail`` epochs."""

    def __init__(self, epochs: int, tail: int) -> None:
        self.epochs, self.tail, self.val = epochs, tail, {}

    def on_start(self, trainer) -> None:
        self.params = list(trainer.model.parameters())
        self.ema = {d: [p.detach().clone() for p in self.params] for d in DECAYS}
        self.sum, self.count = [torch.zeros_like(p) for p in self.params], 0

    @torch.no_grad()
    def on_step(self, trainer, epoch, step, loss) -> None:
        now = [p.detach() for p in self.params]
        for decay, average in self.ema.items():
            torch._foreach_lerp_(average, now, 1 - decay)
        if epoch > self.epochs - self.tail:
            torch._foreach_add_(self.sum, now)
            self.count += 1

    @torch.no_grad()
    def on_end(self, trainer, summary) -> None:
        final = [p.detach().clone() for p in self.params]

        def val_digits(weights) -> float:
            for p, w in zip(self.params, weights):
                p.copy_(w)
            return round(trainer.evaluate("val")["digits"]["accuracy"] * 100, 3)

        self.val["final"] = val_digits(final)
        for decay, average in self.ema.items():
            self.val[f"ema {decay}"] = val_digits(average)
        self.val[f"last {self.tail} epochs"] = val_digits([s / self.count for s in self.sum])
        val_digits(final)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed", type=int)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = [f"seed={args.seed}", *SETTINGS, *args.overrides]
    epochs = digitsum.load_recipe("add-100", overrides).train.epochs
    averages = Averages(epochs, max(1, epochs // 5))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        digitsum.train("add-100", f"{folder}/run", overrides=overrides, progress=False, callbacks=[averages], preflight=False)
    print(json.dumps({"seed": args.seed, "overrides": args.overrides, "seconds": round(time.perf_counter() - started, 1),
                      "val_digits": averages.val}))  # fmt: skip


if __name__ == "__main__":
    main()
