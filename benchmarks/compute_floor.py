"""How close digitsum's pipeline runs to the compute floor, against the notebook's pipeline.

At each batch size, in one run, per 60 000 samples:
  floor     forward + backward + optimizer step (``Trainer.train_step``) on batches already in memory
  digitsum  ``Trainer.train_epoch``: batches drawn from the preloaded tensors, trained, tallied
  notebook  the notebook's per-sample Dataset + DataLoader pipeline, bugs fixed
and digitsum's data-pipeline overhead over the floor in percent.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/compute_floor.py [--rounds 3]
"""

from __future__ import annotations

from common import (
    base_parser,
    data_root,
    digitsum_trainer,
    fastest,
    machine,
    parse,
    per_epoch,
    time_digitsum,
    time_floor,
    trained,
    warm_up,
)
from notebook_pipeline import NotebookRun


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,128,512", help="comma-separated (default 32,128,512)")
    parser.add_argument("--samples", type=int, default=20_000, help="samples per timing, scaled to 60 000 (default 20 000)")
    parser.set_defaults(rounds=3)
    parser.add_argument("--no-notebook", action="store_true", help="skip the notebook pipeline")
    args = parse(parser)
    root = data_root()
    print(machine())
    print(f"seconds per 60 000 samples, each timed on {args.samples} samples, fastest of {args.rounds} interleaved rounds")
    header = f"{'batch':>6} {'floor s':>9} {'digitsum s':>11} {'overhead':>9} {'notebook s':>11} {'notebook/digitsum':>18}"
    print(header)
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        trainer = digitsum_trainer(batch_size, args.device, args.overrides, args.recipe)
        warm_up(trainer)
        measurements = [lambda: time_floor(trainer, args.samples), lambda: time_digitsum(trainer, args.samples)]
        if not args.no_notebook:
            notebook = NotebookRun(root, batch_size, device=trainer.device, lean=args.lean_notebook)
            notebook.train_epoch(max_samples=8 * batch_size)  # warm-up, as for digitsum
            measurements.append(lambda: notebook.train_epoch(max_samples=args.samples)["seconds"])
        n = trained(args.samples, batch_size)
        seconds = [per_epoch(s, n) for s in fastest(args.rounds, *measurements)]
        floor, ours = seconds[:2]
        line = f"{batch_size:>6} {floor:>9.2f} {ours:>11.2f} {100 * (ours / floor - 1):>8.1f}%"
        if not args.no_notebook:
            line += f" {seconds[2]:>11.2f} {seconds[2] / ours:>17.2f}x"
        print(line, flush=True)

if __name__ == "__main__":
    main()
