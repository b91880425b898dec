"""Training-step throughput of the original network by torch thread count (``train.threads``).

Times ``Trainer.train_step`` on batches already in memory, for 1..N intra-op threads at each
batch size, interleaving the settings and keeping the best of several rounds so that a busy
machine penalises them alike. Inter-op threads are set once per process (``--interop``):
compare two invocations.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/threads.py [--interop 1]
"""

from __future__ import annotations

import os
import time

import torch
from common import base_parser, digitsum_trainer, machine, sync

from digitsum.engine.batches import train_batches


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,128,512")
    parser.add_argument("--max-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--samples", type=int, default=4096, help="samples per timing (default 4096)")
    parser.set_defaults(rounds=3)
    parser.add_argument("--interop", type=int, default=0, help="inter-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.interop:
        torch.set_num_interop_threads(args.interop)
    print(machine(), f"; inter-op threads {torch.get_num_interop_threads()}")
    counts = range(1, args.max_threads + 1)
    print(f"{'batch':>6} " + " ".join(f"{f'{n} thr samples/s':>16}" for n in counts))
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        trainer = digitsum_trainer(batch_size, args.device, args.overrides, args.recipe)
        batches = []
        for batch in train_batches(trainer.generator, batch_size, 0, 1, trainer.device):
            batches.append(batch)
            if len(batches) * batch_size >= args.samples:
                break
        best = {n: 0.0 for n in counts}
        for _ in range(args.rounds):
            for n in counts:
                torch.set_num_threads(n)
                trainer.train_step(batches[0])  # settle after the switch
                sync(trainer.device)
                started = time.perf_counter()
                for batch in batches:
                    trainer.train_step(batch)
                sync(trainer.device)
                best[n] = max(best[n], len(batches) * batch_size / (time.perf_counter() - started))
        print(f"{batch_size:>6} " + " ".join(f"{best[n]:>16,.0f}" for n in counts), flush=True)


if __name__ == "__main__":
    main()
