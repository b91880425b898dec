"""One epoch of the original network: digitsum's pipeline against the notebook's, same batch size.

digitsum: ``Trainer.train_epoch`` on recipes/original.toml (batches drawn from the preloaded
tensors). Notebook: its per-sample Dataset + DataLoader and training loop, bugs fixed
(notebook_pipeline.py). Both train the same network with Adam; times are measured in one run.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/epoch_speed.py [--batch-size 32]
"""

from __future__ import annotations

from common import base_parser, data_root, digitsum_trainer, fastest, machine, parse, per_epoch, time_digitsum, trained, warm_up
from notebook_pipeline import NotebookRun


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both pipelines (default 32)")
    parser.add_argument("--samples", type=int, default=60_000, help="samples timed, scaled to a 60 000-sample epoch (default: a whole epoch)")
    args = parse(parser)
    root, bs = data_root(), args.batch_size
    print(machine())

    trainer = digitsum_trainer(bs, args.device, args.overrides, args.recipe)
    warm_up(trainer)
    notebook = NotebookRun(root, bs, device=trainer.device, lean=args.lean_notebook)
    notebook.train_epoch(max_samples=8 * bs)  # warm-up, as for digitsum

    def notebook_epoch() -> float:
        result = notebook.train_epoch(max_samples=args.samples)
        return per_epoch(result["seconds"], result["samples"])

    ours, theirs = fastest(
        args.rounds, lambda: per_epoch(time_digitsum(trainer, args.samples), trained(args.samples, bs)), notebook_epoch
    )

    scaled = "" if args.samples >= 60_000 else f" (timed on {args.samples} samples, scaled)"
    scaled += f", fastest of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    print(f"one epoch at batch size {bs}{scaled}:")
    print(f"  digitsum  {ours:7.2f} s")
    print(f"  notebook  {theirs:7.2f} s  ({'lean' if args.lean_notebook else 'the notebook’s own'} per-sample Dataset)")
    print(f"  digitsum is {theirs / ours:.2f}x faster")


if __name__ == "__main__":
    main()
