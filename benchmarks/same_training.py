"""Train every shipped recipe briefly on tiny data and record everything that says *how* it
trained: the summary, metrics.jsonl, the optimizer's hyper-parameters and the learning rate,
momentum and betas at every step.

Written to prove that a change to how recipes spell their training settings (optimizers and
schedules as components, issue 13) trains exactly as before: run it on the old code and on the
new, then compare the two JSON files (``--compare A B``), which must be equal bit for bit.

    git worktree add ../old <parent commit>
    PYTHONPATH=../old python benchmarks/same_training.py --out old.json
    python benchmarks/same_training.py --out new.json
    python benchmarks/same_training.py --compare old.json new.json

Runs on both spellings of ``[train]``: the old flat keys (``train.optimizer = "sgd"``,
``train.lr``, ``train.momentum``, ``train.schedule``) and the component tables
(``[train.optimizer] type = "sgd"``, ``[train.schedule]``). The variants beside the shipped
recipes exercise every optimizer and schedule; for the new spelling they state what the old
code did implicitly (onecycle cycled the momentum between 0.85 and 0.95).

Plugin recipes run too: ``--plugin-site DIR`` (repeatable) puts a folder a plugin was
installed into (``pip install --target``) on the path, ``--recipe NAME`` (repeatable) adds a
recipe to run at its own settings — the example plugin's ``product``, and a scaffolded plugin's
(``digitsum new-plugin digitsum-shapes``: its recipe ``shapes``, from the scaffold template).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BUILTINS = ["original", "notebook", "film", "embedding", "embedding-add", "two-images", "noisy", "regress-sum"]
TINY = {"train.epochs": 2, "data.batch_size": 64, "data.download": False, "train.device": "cpu"}


def variants(old: bool) -> dict[str, tuple[str, dict]]:
    """name -> (recipe, overrides) in the spelling of the code under test."""
    runs: dict[str, tuple[str, dict]] = {name: (name, {}) for name in BUILTINS}
    if old:
        runs["sgd-onecycle"] = ("original", {"train.optimizer": "sgd", "train.lr": 0.05, "train.momentum": 0.9,
                                             "train.weight_decay": 1e-4, "train.schedule": "onecycle"})
        runs["sgd-constant"] = ("original", {"train.optimizer": "sgd", "train.lr": 0.05, "train.momentum": 0.5,
                                             "train.weight_decay": 0.0, "train.schedule": "constant"})
        runs["adam-cosine"] = ("original", {"train.optimizer": "adam", "train.lr": 3e-3, "train.weight_decay": 0.0,
                                            "train.schedule": "cosine"})
    else:
        runs["sgd-onecycle"] = ("original", {"train.optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
                                             "train.schedule": {"type": "onecycle", "warmup": 0.25, "momentum": [0.85, 0.95]}})
        runs["sgd-constant"] = ("original", {"train.optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.5},
                                             "train.schedule": {"type": "constant"}})
        runs["adam-cosine"] = ("original", {"train.optimizer": {"type": "adam", "lr": 3e-3},
                                            "train.schedule": {"type": "cosine"}})
    return runs


def record(name: str, recipe: str, overrides: dict, root: Path, work: Path) -> dict:
    import torch

    import digitsum
    from digitsum.callbacks import Callback

    class Trace(Callback):
        """Learning rate, momentum and betas of every step; the optimizer's hyper-parameters at the end."""

        def __init__(self) -> None:
            self.steps: list[list] = []
            self.groups: list[dict] = []

        def on_step(self, trainer, epoch, step, loss) -> None:
            group = trainer.optimizer.param_groups[0]
            self.steps.append([group["lr"], group.get("momentum"), list(group.get("betas", ())) or None, float(loss.detach())])

        def on_end(self, trainer, summary) -> None:
            hyper = {k: v for k, v in trainer.optimizer.param_groups[0].items() if k != "params"}
            self.groups = [json.loads(json.dumps(hyper, default=repr))]
            self.optimizer = type(trainer.optimizer).__name__
            self.scheduler = type(trainer.scheduler).__name__

    trace = Trace()
    run = digitsum.train(recipe, work / name, overrides={**TINY, "data.root": str(root), **overrides}, progress=False,
                         preflight=False, callbacks=[trace])
    summary = dict(run.summary)
    summary.pop("seconds", None)
    metrics = [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in run.metrics]
    weights = run.model.state_dict()
    return {
        "resolved": run.recipe.to_dict(),
        "summary": summary,
        "metrics": metrics,
        "optimizer": trace.optimizer,
        "scheduler": trace.scheduler,
        "param_groups": trace.groups,
        "steps": trace.steps,
        # the weights in full would make a large file: their sums and a hash of their bytes
        "weights": {k: [float(v.double().sum()), hashlib.sha256(v.cpu().numpy().tobytes()).hexdigest()] for k, v in weights.items()},
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the records to this JSON file")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two such files")
    parser.add_argument("--plugin-site", type=Path, action="append", default=[], help="a folder a plugin was installed into (pip install --target); repeatable")
    parser.add_argument("--recipe", action="append", default=[], help="also run this recipe (e.g. a plugin's) at its own settings; repeatable")
    args = parser.parse_args()
    for site in args.plugin_site:
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    if args.compare:
        from digitsum.recipe import load_recipe, upgrade_resolved

        a, b = (json.loads(p.read_text()) for p in args.compare)
        for records in (a, b):  # the resolved recipes in today's spelling, every default written (the old one's meaning kept exactly)
            for entry in records.values():
                entry["resolved"] = load_recipe(upgrade_resolved(entry["resolved"])).to_dict()
                entry["resolved"]["data"].pop("root")  # each run's own temporary folder
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        for key in sorted(set(a) | set(b)):
            print(f"{key:<16} {'DIFFERENT' if key in differ else 'identical'}")
        sys.exit(1 if differ else 0)
    from digitsum.recipe import TrainSection
    from digitsum.testing import write_tiny_mnist

    old = "lr" in TrainSection.model_fields
    runs = variants(old)
    runs.update({name: (name, {}) for name in args.recipe})
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_tiny_mnist(Path(tmp) / "mnist")
        for name, (recipe, overrides) in runs.items():
            results[name] = record(name, recipe, overrides, root, Path(tmp))
            print(f"{name}: {results[name]['optimizer']} + {results[name]['scheduler']}, "
                  f"test {results[name]['summary']['metrics']['test']}", flush=True)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True))
    print(f"wrote {args.out} ({'old' if old else 'new'} spelling of [train])")


if __name__ == "__main__":
    main()
