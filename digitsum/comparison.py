"""Compare variants side by side: several recipes, or one recipe over a grid of overrides.

Every variant is loaded and validated before any is trained (a typo in the third variant is
reported before the first one spends an hour), then each is trained by
:func:`digitsum.engine.runner.start` — the same path as ``digitsum run`` — into its own run
directory under the compare directory.
The compare directory also gets ``compare.json``, ``compare.csv`` and ``compare.png``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError, recipe_text
from .recipe import Recipe, load_recipe, parse_override
from .recipe.overrides import plain_python
from .files import metric_text, write_csv, write_json
from .engine.interrupt import Interruption
from .diagnosis.preflight import Preflight

#: The most variants one compare trains (each a whole run).
MAX_VARIANTS = 1000


@dataclass(frozen=True)
class Variant:
    """One recipe with its grid overrides applied."""

    label: str
    recipe: Recipe
    overrides: tuple[str, ...]


def split_values(text: str) -> list[str]:
    """Split ``"a,[1,2],'x,y'"`` on the commas outside brackets and quotes."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def parse_grid(items: Sequence[str] | Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """``["backbone.type=concat,film"]`` (or, from Python, ``{"backbone.type": ["concat",
    "film"]}``) -> ``[("backbone.type", ["concat", "film"])]``: each value as ``--set`` reads it."""
    if isinstance(items, Mapping):
        given = [(f"grid[{key!r}]", key, _values(values)) for key, values in items.items()]
    else:
        given = [(f"--grid {item!r}", *_key_values(item)) for item in items]
    axes: list[tuple[str, list[str]]] = []
    for where, key, choices in given:
        if not isinstance(key, str) or not key.strip():
            raise UserError(f"{where}: expected KEY=V1,V2,..., e.g. --grid backbone.type=concat,film "
                            "(from Python: {'backbone.type': ['concat', 'film']})")  # fmt: skip
        key = key.strip()
        parse_override(f"{key}=0")  # the same key rules as --set
        if any(not v for v in choices):
            raise UserError(f"{where}: an empty value; separate values with single commas")
        if key in {k for k, _ in axes}:
            raise UserError(f"--grid {key} is given twice; list all its values in one --grid")
        if repeated := sorted({v for v in choices if choices.count(v) > 1}):
            raise UserError(f"{where}: the value {repeated[0]!r} is given twice; each value makes one variant")
        axes.append((key, choices))
    return axes


def _key_values(item: str) -> tuple[str, list[str]]:
    key, sep, values = item.partition("=")
    return (key if sep else ""), split_values(values)


def _values(given: Any) -> list[str]:
    """A Python grid axis's values as ``--set`` text: strings as they are, others as TOML."""
    values = [given] if isinstance(given, str) or not isinstance(given, Sequence) else list(given)
    return [v if isinstance(v, str) else recipe_text(plain_python(v)) for v in values]


def plan_variants(recipes: Sequence[Path], grid: Sequence[str] | Mapping[str, Any] = (), overrides: Sequence[str] = ()) -> list[Variant]:
    """Every recipe crossed with every grid combination, each loaded and validated."""
    if not recipes:
        raise UserError("compare needs at least one recipe")
    axes = parse_grid(grid)
    count = len(recipes) * math.prod(len(values) for _, values in axes)
    if count > MAX_VARIANTS:  # before making them: a typo in a --grid should not take minutes
        sizes = " x ".join(str(n) for n in [len(recipes), *(len(values) for _, values in axes)] if n > 1)
        raise UserError(f"--grid gives {count} variants ({sizes}); compare trains every one: give at most {MAX_VARIANTS}")
    combinations = list(itertools.product(*[[f"{key}={value}" for value in values] for key, values in axes]))
    if len(recipes) * len(combinations) < 2:
        raise UserError("compare needs at least two variants: give several recipes or a --grid with several values")
    variants, labels = [], set()
    for path in recipes:
        for combination in combinations:
            recipe = load_recipe(path, overrides, grid=combination)
            # The recipe name tells variants apart unless there is only one recipe.
            parts = ([recipe.name] if len(recipes) > 1 or not combination else []) + list(combination)
            label = " ".join(parts)
            if label in labels:
                raise UserError(f"two variants are both '{label}'; give each recipe its own name")
            labels.add(label)
            variants.append(Variant(label, recipe, tuple(combination)))
    return variants


def check_data(variant: Variant) -> None:
    """A variant's data loaded and split as its run will (on the CPU), before any variant trains
    (``data.val`` too large for one, say): a UserError naming the variant."""
    from .engine.build import make_generator
    from .engine.component_errors import blame_components
    from .engine.train import check_run_data

    try:
        generator = make_generator(variant.recipe, torch.device("cpu"))
        with blame_components(variant.recipe):
            check_run_data(variant.recipe, generator)
    except UserError as e:
        raise UserError(f"variant '{variant.label}': {e.message}") from None


def slug(label: str) -> str:
    """A folder name for a variant label."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_")[:100]


def result_rows(variant: Variant, summary: dict[str, Any], history: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """One row per head of a trained variant: its primary metric at the end and after epoch 1."""
    rows = []
    for head, choice in variant.recipe.heads.items():
        metric = choice.cls.primary_metric
        test = summary["metrics"].get("test", {}).get(head, {})
        first = history[0].get("test", {}).get(head, {}) if history else {}  # none when epoch 1 was not evaluated
        rows.append({"variant": variant.label, "recipe": variant.recipe.name, "head": head, "metric": metric,
                     "test": test.get(metric), "first_epoch": first.get(metric), "epochs": summary["epochs"],
                     "seconds": summary["seconds"], "run_dir": str(run_dir)})  # fmt: skip
    return rows


@dataclass
class Comparison:
    """The result rows (one per variant and head), the compare directory and, if Ctrl-C stopped
    it, the interruption."""

    rows: list[dict[str, Any]]
    interruption: Interruption | None = None
    out_dir: Path | None = None


def run_compare(variants: Sequence[Variant], out_dir: Path, *, console: Any = None, progress: bool = True) -> Comparison:
    """Train every variant into ``out_dir/<nn>-<label>/``; write and return the result rows.

    Ctrl-C stops the variant in training (checkpointed, resumable) and the comparison with it.
    """
    from .engine.runner import start

    rows: list[dict[str, Any]] = []
    for number, variant in enumerate(variants, start=1):
        run_dir = out_dir / f"{number:02d}-{slug(variant.label)}"
        outcome = start(variant.recipe, run_dir, console=console, progress=progress, preflight=Preflight)
        rows += result_rows(variant, outcome.summary, outcome.trainer.history, run_dir)
        write_results(rows, out_dir)  # after every variant: a stopped compare keeps what it has
        if outcome.interrupted:
            return Comparison(rows, outcome.interruption, out_dir)
    plot_compare(rows, out_dir / "compare.png")
    return Comparison(rows, out_dir=out_dir)


CSV_COLUMNS = ["variant", "recipe", "head", "metric", "test", "first_epoch", "epochs", "seconds", "run_dir"]


def write_results(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """compare.json and compare.csv: one row per variant and head."""
    write_json(out_dir / "compare.json", {"rows": rows})
    write_csv(out_dir / "compare.csv", CSV_COLUMNS, rows)


def plot_compare(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: each head's test primary metric per variant; a black tick: after epoch 1."""
    from .engine.figures import new_figure, save_figure

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    heads = list(dict.fromkeys(r["head"] for r in rows))
    by_key = {(r["variant"], r["head"]): r for r in rows}
    width = 0.8 / max(len(heads), 1)
    figure = new_figure(figsize=(max(6, 1.6 * len(variants) * max(1, len(heads)) / 2 + 2), 4.5))
    ax = figure.subplots()
    for h, head in enumerate(heads):
        xs = [v + (h - (len(heads) - 1) / 2) * width for v in range(len(variants))]
        test = [(by_key.get((v, head)) or {}).get("test") or 0.0 for v in variants]
        first = [(by_key.get((v, head)) or {}).get("first_epoch") or 0.0 for v in variants]
        metric = next(r["metric"] for r in rows if r["head"] == head)
        ax.bar(xs, test, width, label=f"{head} ({metric})")
        ax.scatter(xs, first, marker="_", s=300 * width, color="black", zorder=3,
                   label="after epoch 1" if h == 0 else None)  # fmt: skip
        for x, value in zip(xs, test):
            ax.text(x, value, f"{value:.3f} ", ha="center", va="top", fontsize=7, rotation=90, color="white")
    shown = [r[key] for r in rows for key in ("test", "first_epoch") if r[key] is not None]
    ax.set_ylim(max(0.0, min(shown, default=0.0) - 0.02), 1.0)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test primary metric")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def render_table(rows: list[dict[str, Any]], console) -> None:
    """The comparison as one rich table: a row per variant and head."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="comparison (test split)")
    for column, justify in (("variant", "left"), ("head", "left"), ("metric", "left"), ("test", "right"),
                            ("after epoch 1", "right"), ("epochs", "right"), ("seconds", "right")):  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=column == "variant")
    previous = None
    for r in rows:
        first = r["variant"] != previous
        previous = r["variant"]
        table.add_row(
            escape(r["variant"]) if first else "",
            r["head"],
            r["metric"],
            metric_text(r["test"]),
            metric_text(r["first_epoch"]),
            str(r["epochs"]) if first else "",
            f"{r['seconds']:.1f}" if first else "",
            end_section=False,
        )
    console.print(table)
