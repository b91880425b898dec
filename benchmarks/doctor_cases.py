"""Planted bugs and healthy controls for `digitsum doctor`: does it name the cause with a fix that works?

Each case is a shipped recipe with overrides and, for bugs in code, a component registered here
(a generator, backbone or head with the bug planted). For each, the doctor runs as `digitsum
doctor` does; a case is *named* when a finding of the expected check is an error (a warning for
the warning-level cases), and *fixed* when the expected fix was verified (a recipe key in
`report.repair`, or a code cause among `report.code_causes`). Healthy controls must give no
error and no warning. Needs real MNIST (DIGITSUM_DATA); run with `nice`, one thread:

    DIGITSUM_DATA=../shared/data nice -n 10 python benchmarks/doctor_cases.py [--only NAME] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def components():
    """Register the planted-bug components (and the example plugin's, for its recipe)."""
    from digitsum.components.data.single_digit import SingleDigit
    from digitsum.components.fusions.concat import Concat
    from digitsum.components.heads.classify import Classify
    from digitsum.registry import datasets, fusions, heads

    class ShiftedLabels(SingleDigit):
        """Targets of the next sample in the batch (an off-by-one index)."""

        def draw(self, split, index, rng):
            batch = super().draw(split, index, rng)
            return {**batch, "digit": batch["digit"].roll(1), "sum": batch["sum"].roll(1)}

    class ConstantNumber(SingleDigit):
        """The number input is always 0; the sum is computed from the real one."""

        def draw(self, split, index, rng):
            batch = super().draw(split, index, rng)
            return {**batch, "number": torch.zeros_like(batch["number"])}

    class Times255(SingleDigit):
        """Pixels in [0, 255]: the image scaled by 255 and not standardised."""

        def draw(self, split, index, rng):
            batch = super().draw(split, index, rng)
            return {**batch, "image": (batch["image"] * 0.3081 + 0.1307) * 255}

    class IgnoresNumber(Concat):
        """The backbone never reads the number."""

        def forward(self, batch):
            return super().forward({**batch, "number": torch.zeros_like(batch["number"])})

    class DeadBias(Concat):
        """The last hidden layer initialised with a large negative bias: dead before any step."""

        def __init__(self, params, inputs):
            super().__init__(params, inputs)
            torch.nn.init.constant_(self.mlp[-2].bias, -20.0)

    class Detached(Classify):
        """The head detaches its features: no gradient reaches the backbone from it."""

        def forward(self, features):
            return super().forward(features.detach())

    class Softmaxed(Classify):
        """A plugin head returning softmax probabilities into cross-entropy (no `output` key)."""

        class Params(Classify.Params):
            pass

        def forward(self, features):
            return self.linear(features).softmax(dim=1)

    for name, cls in {"shifted_labels": ShiftedLabels, "constant_number": ConstantNumber, "times255": Times255}.items():
        datasets.register(name)(cls)
    for name, cls in {"ignores_number": IgnoresNumber, "dead_bias": DeadBias}.items():
        fusions.register(name)(cls)
    for name, cls in {"detached": Detached, "softmaxed": Softmaxed}.items():
        heads.register(name)(cls)
    sys.path.insert(0, str(REPO / "plugins" / "digitsum-example"))
    from digitsum_example.bilinear import Bilinear
    from digitsum_example.ordinal import Ordinal
    from digitsum_example.product import ProductDigit

    datasets.register("product_digit")(ProductDigit)
    fusions.register("bilinear")(Bilinear)
    heads.register("ordinal")(Ordinal)


ORIGINAL, NOTEBOOK = REPO / "recipes" / "original.toml", REPO / "recipes" / "notebook.toml"
CONSTANT = ['train.schedule.type="constant"']
#: name: (recipe, overrides, expected check, expected fix: a recipe key or "code:<text in the cause>", severity)
CASES = {
    "lr_too_high": (ORIGINAL, ["train.optimizer.lr=0.5", *CONSTANT], "learning", "train.optimizer.lr", "error"),
    "lr_too_low": (ORIGINAL, ["train.optimizer.lr=1e-7", *CONSTANT], "learning", "train.optimizer.lr", "error"),
    "adam_betas": (ORIGINAL, ["train.optimizer.betas=[0.999, 0.9]", "train.optimizer.weight_decay=0", *CONSTANT], "learning", "train.optimizer.betas", "error"),
    "weight_decay_huge": (ORIGINAL, ["train.optimizer.weight_decay=1.0", "train.optimizer.lr=0.5", *CONSTANT], "learning", "train.optimizer", "error"),
    "probabilities_into_ce": (ORIGINAL, ['heads.sum.output="probabilities"'], "double_softmax", "heads.sum.output", "error"),
    "plugin_head_softmax": (ORIGINAL, ['heads.sum={type="softmaxed", target="sum"}'], "double_softmax", "code:logits", "error"),
    "zero_weight": (ORIGINAL, ["heads.digit.weight=0"], "loss_weights", "heads.digit.weight", "error"),
    "labels_shifted": (ORIGINAL, ['data.type="shifted_labels"'], "learnability", None, "error"),
    "number_ignored": (ORIGINAL, ['backbone.type="ignores_number"'], "input_use", None, "error"),
    "constant_number": (ORIGINAL, ['data.type="constant_number"'], "input_use", None, "error"),
    "pixels_x255": (ORIGINAL, ['data.type="times255"', *CONSTANT, "train.optimizer.lr=0.01"], "data", "code:standardise", "error"),
    "dead_at_init": (ORIGINAL, ['backbone.type="dead_bias"'], "dead_relu", "code:initialisation", "error"),
    "detached_head": (ORIGINAL, ['heads.sum={type="detached", target="sum"}'], "loss_weights", None, "error"),
    "notebook": (NOTEBOOK, [], "double_softmax", "heads.sum.output", "error"),
}
HEALTHY = {p.stem: (p, []) for p in sorted((REPO / "recipes").glob("*.toml")) if p.stem != "notebook"}
HEALTHY["product (example plugin)"] = (REPO / "plugins" / "digitsum-example" / "digitsum_example" / "recipes" / "product.toml", [])
HEALTHY["label_smoothing_0.9"] = (ORIGINAL, ["heads.digit.label_smoothing=0.9"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--json")
    args = parser.parse_args()
    components()
    from digitsum.diagnosis import doctor
    from digitsum.recipe import load_recipe

    rows = []
    for name, case in {**{k: ("bug", *v) for k, v in CASES.items()}, **{k: ("healthy", *v, None, None, None) for k, v in HEALTHY.items()}}.items():
        if args.only and name not in args.only:
            continue
        kind, path, overrides, check, fix, severity = case
        started = time.perf_counter()
        cpu = time.process_time()
        report = doctor(load_recipe(path, overrides))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        problems = [(f.severity, f.check, f.title) for f in report.findings if f.severity != "info"]
        if kind == "healthy":
            ok = not problems
            named = fixed = None
        else:
            named = any(f.check == check and f.severity == severity for f in report.findings)
            if fix is None:
                fixed = None
            elif fix.startswith("code:"):
                fixed = any(fix[5:] in c for c in report.code_causes)
            else:
                fixed = any(k.startswith(fix) for k in report.repair)
            ok = named and fixed is not False
        rows.append({"case": name, "kind": kind, "ok": ok, "named": named, "fix_verified": fixed, "repair": report.repair,
                     "code_causes": report.code_causes, "problems": problems, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1)})
        print(f"{'ok ' if ok else 'BAD'} {name:26} {kind:7} named={named} fix={fixed} repair={report.repair} code={report.code_causes} "
              f"{seconds:.1f} s ({cpu:.1f} s CPU)", flush=True)
        if not ok:
            for p in problems:
                print("      ", *p, flush=True)
    bugs = [r for r in rows if r["kind"] == "bug"]
    healthy = [r for r in rows if r["kind"] == "healthy"]
    print(f"bugs named with a working fix: {sum(r['ok'] for r in bugs)} of {len(bugs)}; healthy without warnings: "
          f"{sum(r['ok'] for r in healthy)} of {len(healthy)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
