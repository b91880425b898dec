"""Run by test_distributed under torchrun: rank 0's callback stops the run at step 3 of epoch 1.

argv: the recipe, the run folder, then the recipe's overrides.

Prints one JSON line per rank: how many steps it trained and how its run ended.
"""

import json
import os
import sys
from pathlib import Path

from digitsum.engine import distributed
from digitsum.callbacks import Callback
from digitsum.engine.train import Trainer
from digitsum.recipe import load_recipe


class StopAtThirdStep(Callback):
    def on_step(self, trainer, epoch, step, loss):
        if step == 2:
            trainer.request_stop("asked at step 3")


def main() -> None:
    recipe = load_recipe(sys.argv[1], sys.argv[3:])
    world = distributed.current()
    trainer = Trainer(recipe, Path(sys.argv[2]) if world.is_main else None, [StopAtThirdStep()])
    steps = []
    step = trainer.train_step
    trainer.train_step = lambda batch: steps.append(1) or step(batch)
    try:
        summary = trainer.fit()
    finally:
        distributed.stop()
    line = json.dumps({"rank": world.rank, "steps": len(steps), "epochs": summary["epochs"], "stopped": summary.get("stopped")})
    # one write of the whole line: the ranks share stdout, and print() may write the newline apart
    # (PYTHONUNBUFFERED), letting another rank's line land between
    os.write(sys.stdout.fileno(), (line + "\n").encode())
    # Everything this script tests is done and said: leave without the C++ runtime's teardown,
    # where gloo's threads, outliving the process group, can abort a rank on a busy machine
    # ("terminate called without an active exception", exit -6), which says nothing of the stop.
    os._exit(0)


if __name__ == "__main__":
    main()
