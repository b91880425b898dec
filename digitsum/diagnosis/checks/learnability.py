"""Learnability: whether the targets of a head that does not learn in the short run belong to
its inputs at all (a reference optimizer fits them and is scored on held-out samples), or the
recipe's optimizer, or the model's own code, is what fails."""

from __future__ import annotations

import torch
from torch import Tensor

from ...contracts import Batch
from ...engine.component_errors import origin_of
from ...engine.train import make_optimizer
from ...registry import KIND_LABELS
from ..findings import SEE_FIXES, Finding, fmt, pct
from ..probe import Probe, batch_len, fresh_copy, learns, scores, seeded, slice_batch, too_few
from .loss import broken_heads
from .training import trace_of


#: Learnability (check_learnability): a reference optimizer (Adam at LEARN_LR: the data are under
#: test, not the recipe's settings) fits for up to LEARN_STEPS batches of LEARN_BATCH images'
#: worth; it generalises from GENERALISE_SAMPLES samples, and "fits" LEARN_SAMPLES when it
#: predicts FITS of them. Sizes measured in docs/doctor.md ("Third edition"): 128 samples are
#: memorised even with shifted labels, and a sum head learns little held out from fewer than 2,048.
LEARN_SAMPLES, LEARN_STEPS, LEARN_BATCH, FITS, LEARN_LR = 128, 250, 64, 0.5, 3e-3
GENERALISE_SAMPLES = 2048
#: The recipe keys of the optimizer, named when the recipe's optimizer is what fails.
OPTIMIZER_KEYS = ["train.optimizer.lr", "train.optimizer.type"]


def _fit(probe: Probe, train: Batch, optimizer_of, heads: list[str], *, weighted: bool, until: str) -> tuple[dict[str, float], dict[str, float], int]:
    """Fit a fresh copy on ``train`` (random batches of LEARN_BATCH images' worth, at most
    LEARN_STEPS); every 50 steps score it, and stop once ``until`` holds for every head in
    ``heads``: ``"fit"`` (FITS of the training samples predicted) or ``"learn"`` (held-out
    samples beat the best constant guess). Returns the training and held-out accuracies and the
    steps taken. ``weighted``: the recipe's total loss; else every head's loss, whatever its weight."""
    n = batch_len(train)
    model = fresh_copy(probe.model)
    optimizer = optimizer_of(model)
    order = torch.Generator().manual_seed(probe.recipe.seed)
    batch_size = min(probe.batch_of(LEARN_BATCH), n)
    # LEARN_STEPS batches of LEARN_BATCH images' worth: a batch of one sample of 200 images (add-100)
    # is three such batches, so it takes a third of the steps
    steps = max(1, min(LEARN_STEPS, int(LEARN_STEPS * LEARN_BATCH / (batch_size * probe.images_per_sample))))
    fit: dict[str, float] = {}
    held: dict[str, float] = {}
    held_n = batch_len(probe.held_out)
    step = 0
    with seeded(probe, "learnability"):  # dropout's masks
        for step in range(steps):
            index = torch.randint(0, n, (batch_size,), generator=order).to(probe.device)
            batch = {k: v[index] for k, v in train.items()}
            losses = model.losses(model(batch), batch)
            loss = model.total_loss(losses) if weighted else sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            if isinstance(loss, Tensor) and loss.requires_grad and torch.isfinite(loss):
                loss.backward()
                optimizer.step()
            if (step + 1) % 50 == 0 or step + 1 == steps:
                if until == "fit":
                    fit = scores(probe, model, train)
                    if all(fit[h] >= FITS for h in heads):
                        break
                else:
                    held = scores(probe, model, probe.held_out)
                    if all(learns(held[h], probe.chance(h), held_n) for h in heads):
                        break
    if until == "fit":
        held = scores(probe, model, probe.held_out)
    else:
        fit = scores(probe, model, train)
    return fit, held, step + 1


def check_learnability(probe: Probe) -> list[Finding]:
    """Whether the targets of a head that does not learn in the short run belong to its inputs.

    A head the reference optimizer teaches from GENERALISE_SAMPLES has learnable targets (when the
    recipe's optimizer, on the same samples, does not teach it, the optimizer is named); only when
    the reference memorises LEARN_SAMPLES samples but learns nothing held out are the data blamed."""
    heads = list(probe.model.heads)
    if not heads:
        return []
    n_big = min(probe.scaled(GENERALISE_SAMPLES), batch_len(probe.sample))
    big = slice_batch(probe.sample, n_big)
    if (few := too_few("learnability", probe, n_big, batch_len(probe.held_out))) is not None:
        return [few]
    learning = trace_of(probe)[0].learning()
    stalled = [h for h in heads if not learning.get(h, False)]
    reference = lambda m: torch.optim.Adam(m.parameters(), lr=LEARN_LR)  # noqa: E731
    _, ref_held, ref_steps = _fit(probe, big, reference, stalled, weighted=False, until="learn") if stalled else ({}, {}, 0)
    held_n = batch_len(probe.held_out)
    taught = [h for h in stalled if learns(ref_held[h], probe.chance(h), held_n)]
    own: dict[str, float] = {}
    untrained = set(taught) - set(probe.trained_heads())  # loss weight 0: the recipe never trains them
    if trained := [h for h in taught if h not in untrained]:  # the recipe's optimizer on the same samples and steps
        recipe = probe.recipe
        _, own, _ = _fit(probe, big, lambda m: make_optimizer(recipe, m), trained, weighted=True, until="learn")
    small = slice_batch(probe.sample, LEARN_SAMPLES)
    n_small = batch_len(small)
    untaught = [h for h in stalled if h not in taught]
    memorised: dict[str, float] = {}
    if untaught:
        memorised, _, _ = _fit(probe, small, reference, untaught, weighted=False, until="fit")
    what = f"{probe.recipe.optimizer.section.type} at lr {fmt(probe.recipe.optimizer.params.lr)}"
    # the heads the recipe's own optimizer teaches from these samples: [learning] judges a head
    # at chance after the short run as slow rather than broken then
    probe.cache["taught_by_recipe_optimizer"] = {h: own[h] for h in own if learns(own[h], probe.chance(h), held_n)}
    findings = []
    for head in heads:
        chance = probe.chance(head)
        if head not in stalled:
            findings.append(Finding("learnability", "info", f"heads.{head}: its targets belong to its inputs",
                                    f"heads.{head} learns on held-out samples in the short run (see [learning]): no fit needed"))  # fmt: skip
            continue
        figures = {"held_out": ref_held[head], "chance": chance, "samples": n_big, "reference_steps": ref_steps,
                   "recipe_held_out": own.get(head), "train_fit": memorised.get(head), "memorise_samples": n_small}  # fmt: skip
        measured = (f"heads.{head} after fitting {n_big} training samples with Adam at {LEARN_LR:g} ({ref_steps} steps): "
                    f"{pct(ref_held[head])} of {held_n} held-out samples (best constant guess {pct(chance)})")  # fmt: skip
        if head in untrained:  # not the optimizer's doing
            findings.append(Finding("learnability", "info", f"heads.{head}: its targets belong to its inputs; the recipe "
                                    "does not train it (see [loss_weights])", measured, figures=figures))  # fmt: skip
            continue
        if head in taught:
            measured += f"; with the recipe's optimizer ({what}) on the same samples: {pct(own[head])}"
            if learns(own[head], chance, held_n):
                findings.append(Finding("learnability", "info", f"heads.{head}: its targets belong to its inputs", measured, figures=figures))
                continue
            findings.append(Finding("learnability", "warning",
                f"heads.{head}: its targets are learnable (a reference optimizer learns them from {n_big} samples); the recipe's optimizer does not",
                measured, "the data are not to blame: with the same samples, model and losses, only the optimizer differs",
                f"{SEE_FIXES} (the optimizer's learning rate, momentum, weight decay)", list(OPTIMIZER_KEYS), figures))  # fmt: skip
            continue
        measured += f"; after fitting {n_small} of them: {pct(memorised.get(head, 0.0))} predicted"
        if head in (broken := broken_heads(probe)):  # the reference trains the same broken head: not the data
            findings.append(Finding("learnability", "info", f"heads.{head}: the data are not judged: the head itself is broken",
                                    f"{measured}; {broken[head]} (see the head's finding)", figures=figures))  # fmt: skip
        elif memorised.get(head, 0.0) >= FITS:
            findings.append(_memorises_only(probe, head, measured, figures, n_small, n_big))
        else:
            findings.append(Finding("learnability", "info", f"heads.{head}: held-out check", measured, figures=figures))
    return findings


def _memorises_only(probe: Probe, head: str, measured: str, figures: dict, n_small: int, n_big: int) -> Finding:
    """The error for a head the reference optimizer makes memorise but not generalise: the data
    are to blame, unless the generator is a built-in (its targets are its inputs' by its tests)
    and the fusion or the head is the user's code, which then can only memorise."""
    recipe = probe.recipe
    own = [f"{KIND_LABELS[kind]} '{choice.section.type}' from {origin}" for kind, choice in (("fusions", recipe.backbone), ("heads", recipe.heads[head]))
           if (origin := origin_of(kind, choice)) != "built-in"]  # fmt: skip
    title = f"heads.{head} memorises its training samples but predicts fresh ones at chance"
    seen = f"a reference optimizer that memorises {n_small} samples learns nothing from {n_big}"
    model = " and ".join(own)
    if own and origin_of("datasets", recipe.data) == "built-in":
        return Finding("learnability", "error", f"{title}: the model's own code cannot learn the rule", measured,
                       f"{seen}; the built-in generator '{recipe.data.section.type}' computes target '{probe.target_of(head)}' "
                       f"from the inputs it returns, so the code between them does not generalise: {model}",
                       f"compare what {model} computes with what the head reads (a layout or an order of the features "
                       "other than the head expects, a sample's features mixed with another's; docs/components.md, "
                       "the head's section)", [], figures)  # fmt: skip
    alternative = f"; or the model's own code ({model}) can only memorise" if own else ""
    return Finding("learnability", "error", title, measured,
                   f"{seen}: target '{probe.target_of(head)}' does not belong to its inputs: it was paired with another "
                   f"sample's inputs, or computed from something the model is not given{alternative}",
                   "make the generator compute each target from the inputs it returns for the same sample (look for a "
                   "shifted or shuffled index)", [], figures)  # fmt: skip
