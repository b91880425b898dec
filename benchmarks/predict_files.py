"""Predicting from image files, as a user would: does MNIST-style preprocessing recover the
accuracy of the arrays themselves?

Trains ``original`` (or takes ``--run DIR``), writes the first ``--count`` MNIST test images
to PNG files three ways — as they are, inverted (dark digit on light paper), and rescaled to
56x56 — predicts each set from its files with ``Run.predict``, and compares every head's
accuracy with the prediction from the same images' uint8 arrays and with ``Run.evaluate("test")``.
Only ``import digitsum`` (and PIL, numpy) is used: what a script of a user's would do.

    DIGITSUM_DATA=../shared/data .venv/bin/python benchmarks/predict_files.py [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import digitsum

#: Largest accepted gap between a file variant's and the arrays' digit accuracy, in points.
TOLERANCE = 0.5


def write_pngs(images: np.ndarray, folder: Path, how: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pixels in enumerate(images):
        picture = Image.fromarray(pixels, mode="L")
        if how == "inverted":
            picture = Image.fromarray(255 - pixels, mode="L")
        elif how == "56x56":
            picture = picture.resize((56, 56), Image.BILINEAR)
        path = folder / f"{i:05d}.png"
        picture.save(path)
        paths.append(path)
    return paths


def accuracy(run, targets: dict[str, np.ndarray], **inputs) -> tuple[dict[str, float], float]:
    """Per-head accuracy of ``run.predict(**inputs)`` against the heads' targets, and seconds taken."""
    started = time.perf_counter()
    predictions = run.predict(**inputs)
    seconds = time.perf_counter() - started
    scores = {}
    for head, binding in run.model.bindings.items():
        guess = predictions[head].prediction.cpu().numpy()
        scores[head] = float((guess == targets[binding.target]).mean())
    return scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run directory of a single_digit recipe (default: train original)")
    parser.add_argument("--count", type=int, default=1000, help="test images to predict (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random number input (default 0)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = digitsum.load_run(args.run) if args.run else digitsum.train("original", out=tmp / "run", progress=False)
        test = run.generator.data.mnist("test")
        images = test.images[: args.count].cpu().numpy()
        digits = test.labels[: args.count].cpu().numpy()
        numbers = np.random.default_rng(args.seed).integers(0, 10, size=len(digits))
        targets = {"digit": digits, "sum": digits + numbers}

        evaluated = run.evaluate("test")
        rows = [("Run.evaluate('test') (all 10000)", {h: v[run.recipe.heads[h].cls.primary_metric] for h, v in evaluated.items()}, None)]
        raw, seconds = accuracy(run, targets, image=images, number=numbers, preprocess=False)
        rows.append(("uint8 arrays, as MNIST has them", raw, seconds))  # what evaluate sees: no preprocessing
        arrays, seconds = accuracy(run, targets, image=images, number=numbers)
        rows.append(("uint8 arrays, preprocessed", arrays, seconds))
        for how in ("as written", "inverted", "56x56"):
            paths = write_pngs(images, tmp / how.replace(" ", "-"), how)
            scores, seconds = accuracy(run, targets, image=paths, number=numbers)
            rows.append((f"PNG files, {how}", scores, seconds))

    heads = list(run.model.bindings)
    print(f"{run.recipe.name}: first {len(digits)} MNIST test images, number input drawn with seed {args.seed}")
    print(f"{'source':36s}" + "".join(f"{h:>10s}" for h in heads) + f"{'Δ digit':>10s}{'seconds':>10s}")
    failed = False
    for label, scores, seconds in rows:
        delta = ""
        if label.startswith("PNG"):  # files are compared with the same arrays, preprocessed alike
            gap = 100 * (scores["digit"] - arrays["digit"])
            failed |= abs(gap) > TOLERANCE
            delta = f"{gap:+.2f} pt"
        timing = f"{seconds:.2f}" if seconds is not None else ""
        print(f"{label:36s}" + "".join(f"{scores[h]:10.4f}" for h in heads) + f"{delta:>10s}{timing:>10s}")
    print(f"every file variant within {TOLERANCE} points of the arrays' digit accuracy: {'no' if failed else 'yes'}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
