"""Training and evaluation, top to bottom: the Trainer and its loop (docs/architecture.md)."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from ..contracts import Generator
from ..errors import UserError, error_text
from ..recipe import Recipe
from . import distributed
from .accel import configure_threads, plan
from .batches import eval_batches, steps_per_epoch, train_batches
from .build import build, pick_device
from ..callbacks import Callback, callback_keys
from .checkpoint import plain_mismatch, rng_state, save_checkpoint, set_rng_state, stepping_problem, weights_problems
from .component_errors import blame_components, built, check_batch, check_losses, check_metrics, check_outputs, check_states
from .distributed import World
from .model import DigitModel
from .tally import Tally
from .rundir import INIT_FILE, RUN_FILES, RUN_FORMAT, entries, lock, mark, matching, owned, record_outputs, unlock, users_files
from .warmstart import InitReport, freeze, load_init
from ..files import MetricsLog, write_json, write_text


@torch.no_grad()
def evaluate(
    model: DigitModel, generator: Generator, split: str, seed: int, device: torch.device, world: World = World()
) -> dict[str, dict[str, float]]:
    """Per-head mean loss and metrics over a whole split (each rank evaluates its share)."""
    was_training = model.training
    model.eval()
    tally = Tally()
    for batch in eval_batches(generator, split, seed, device):
        batch = world.shard(batch)
        outputs = model(batch)
        tally.add(model, outputs, model.losses(outputs, batch), batch)
    model.train(was_training)
    return tally.reduced(world).means()


def make_optimizer(recipe: Recipe, model: DigitModel, *, checked: bool = True) -> torch.optim.Optimizer:
    """The recipe's optimizer (``[train.optimizer]``) over the model's parameters; ``checked``:
    refused (:func:`built`) unless it is a torch optimizer holding each of them once (the doctor's
    optimizer check builds it unchecked, to measure what is wrong with it)."""
    optimizer, parameters = recipe.optimizer.cls(recipe.optimizer.params), list(model.parameters())
    made = optimizer.build(parameters)
    return built("optimizers", recipe.optimizer, optimizer, made, parameters) if checked else made


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's learning-rate schedule (``[train.schedule]``) over ``total_steps`` steps of ``optimizer``."""
    schedule = recipe.schedule.cls(recipe.schedule.params)
    return built("schedules", recipe.schedule, schedule, schedule.build(optimizer, total_steps))


def provenance(device: torch.device, recipe: Recipe) -> dict[str, str]:
    """Versions and machine that made a run, stored in its resolved recipe: the plugins are
    those whose components the recipe uses."""
    from importlib import metadata

    from ..registry import KIND_LABELS, REGISTRIES

    plugins, local = {}, []
    for kind, choice in recipe.choices():
        try:
            origin = REGISTRIES[kind].entry(choice.section.type).origin
        except UserError:  # registered in this process alone, since gone: no distribution to name
            continue
        if origin.distribution and not origin.builtin:
            plugins[origin.distribution] = origin.version or "?"
        elif origin.distribution is None:  # registered in this process: what reading the run back needs imported
            local.append(f"{KIND_LABELS[kind]} '{choice.section.type}' from {origin.value}")
    info = {
        "digitsum": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        info["torchvision"] = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        pass
    if plugins:
        info["plugins"] = ", ".join(f"{k} {v}" for k, v in sorted(plugins.items()))
    if local:
        info["local"] = ", ".join(local)
    return info


def check_run_data(recipe: Recipe, generator: Generator) -> None:
    """What a run needs of its data before anything is written (the Trainer, and ``compare`` for
    every variant before the first trains): a training and a test example at least, and the
    validation split ``data.val`` asks for; a UserError saying which is missing."""
    for split in ("train", "test"):  # a run with no step, or no measure, "succeeded" on nothing
        if not generator.size(split):
            raise UserError(f"data: '{recipe.data.section.type}' makes no {'training' if split == 'train' else 'test'} example from the data it was given "
                            "(too few images for one: see data.root or $DIGITSUM_DATA)")
    if recipe.data.section.val > 0:
        check_val_split(recipe, generator)


def check_val_split(recipe: Recipe, generator: Generator) -> int:
    """The size of the validation split ``data.val`` asks for; a UserError, before anything is
    written, when the recipe's generator cannot give one (one written before validation splits
    existed, whose ``size`` knows train and test only)."""
    asked = recipe.data.section.val
    name = f"dataset generator '{recipe.data.section.type}'"
    try:
        size = generator.size("val")
    except UserError:
        raise  # the data say why (e.g. data.val larger than the training split)
    except Exception as e:
        reason = f"its size('val') raised {type(e).__name__}: {e}"
    else:
        if isinstance(size, int) and size > 0:
            return size
        reason = f"its size('val') is {size!r}"
    raise UserError(
        f"data.val = {asked}: {name} gives no validation split ({reason}). A generator gives one by drawing "
        "its 'val' samples from DataContext.mnist('val') or DataContext.holdout() (docs/plugins.md); "
        "or set data.val = 0"
    )


def _overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` has a ``hook`` of its own (the base class's does nothing)."""
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class Trainer:
    """One recipe's model, data, optimizer and schedule, and the loop that trains them."""

    def __init__(self, recipe: Recipe, run_dir: Path | None, callbacks: Sequence[Callback] = (), *, initialise: bool = True) -> None:
        """Build the recipe, load the weights of its ``[init]`` and its data; write nothing yet (``fit`` does).

        ``run_dir`` None writes nothing: ranks other than 0 of a data-parallel run, or a trainer
        whose steps are driven by hand (the benchmarks time ``train_epoch``); ``fit`` on rank 0
        needs a run directory. ``initialise=False``: a resumed run, whose checkpoint gives the
        model (the weights of ``[init]`` are not read again).
        """
        self.recipe = recipe
        self.run_dir = run_dir
        self.callbacks = list(callbacks)
        self._writes = tuple(pattern for callback in self.callbacks for pattern in callback.writes)
        self.world = distributed.current()
        self.device = distributed.rank_device(self.world, pick_device(recipe.train.device))
        distributed.start(self.world, self.device)
        self.threads = configure_threads(recipe.train.threads, self.world.local_size)
        self.accel = plan(recipe.train, self.device)
        self.notes = list(self.accel.notes)  # shown by the console reporter
        built = build(recipe, self.device)
        torch.manual_seed(recipe.seed)  # what draws outside the data streams (dropout) starts from
        #: what ``[init]`` loaded into the model (None without one; a resumed run's comes from its checkpoint)
        self.init: InitReport | None = None
        if recipe.init is not None and initialise:
            if recipe.init.freeze_epochs and self.world.active:
                raise UserError(f"init.freeze_epochs ({recipe.init.where}) is not supported under torchrun (DistributedDataParallel "
                                "needs every parameter to train at every step); set it to 0 or run in one process")  # fmt: skip
            self.init = load_init(built.model, recipe.init)
            self.notes.extend(self.init.lines())
        self._init_to_record = self.init is not None  # init.json is written by the run that loaded it

        self.generator = built.generator
        self.model = self.accel.prepare_model(built.model)
        # what a training step calls: DDP under torchrun, compiled when asked; self.model otherwise
        self.step_model = self.accel.compiled(distributed.wrap(self.model, self.world, self.device))
        self.batch_size, self.epochs = recipe.data.section.batch_size, recipe.train.epochs
        with blame_components(recipe):  # loads and checks the data, builds the optimizer: before anything is written
            self.optimizer = make_optimizer(recipe, self.model)
            self.steps_per_epoch = steps_per_epoch(self.generator, self.batch_size, self.world.size)
            check_run_data(recipe, self.generator)
            #: whether a validation split is held out (``data.val`` > 0) and evaluated after each epoch
            self.validates = recipe.data.section.val > 0
            self.scheduler = make_scheduler(recipe, self.optimizer, self.epochs * self.steps_per_epoch)
        self.history: list[dict[str, Any]] = []
        #: the last trained epoch's figures as metrics.jsonl records them (samples, seconds,
        #: samples_per_s, lr, heads), for callbacks and loggers; empty before the first epoch ends
        self.epoch_record: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.failed = False
        self._states_checked = False  # whether the components' state_dicts survive a checkpoint (save_checkpoint)
        self._batch_checked = False  # whether a training batch was checked against the generator's specs
        # Where training stands: epochs completed, then the steps done of the next one, their
        # tally and time (see rewind_epoch).
        self.epochs_done, self.seconds_before = 0, 0.0  # seconds_before: time spent before a resume
        self.rewind_epoch()
        self._fit_started = self._epoch_started = time.perf_counter()
        self.resumed = False

    def rewind_epoch(self) -> None:
        """Forget the steps done of the epoch in progress: the next ``train_epoch`` starts at its first step."""
        self.step, self.tally, self.epoch_seconds = 0, Tally(), 0.0

    def request_stop(self, reason: str, *, failed: bool = False) -> None:
        """End training after the current step (callbacks and signal handlers call this).

        A stop within an epoch checkpoints it part-way (not evaluated): ``digitsum run --resume``
        continues from there. ``failed``: the model is no longer good (e.g. the loss became
        NaN): the current epoch is neither evaluated nor checkpointed, so the last good
        checkpoint stays.
        """
        self.stop_reason = self.stop_reason or reason
        self.failed = self.failed or failed

    def _emit(self, hook: str, *args: Any) -> None:
        """Every callback's ``hook``, each after one that raised too (a logger failing must not
        cost the next one its record of the epoch, nor leave it open at the end); then the first
        error goes on (the run is recorded as failed, and ``--resume`` goes on once the bug is fixed)."""
        errors = []
        for callback in self.callbacks if self.world.is_main else ():  # rank 0 speaks for a data-parallel run
            # what it writes there, by the names it declares (`writes`), looked for around its own
            # hooks only (not around each step of one that does nothing then): a user's notes stay theirs
            writes = callback.writes if self.run_dir is not None and _overrides(callback, hook) else ()
            before = entries(self.run_dir) if writes else set()
            try:
                getattr(callback, hook)(self, *args)
            except Exception as error:
                errors.append(error)
            if writes and (new := matching(entries(self.run_dir) - before, writes)):
                record_outputs(self.run_dir, new)  # the run's, for --force
        if errors:
            raise errors[0]

    def _stop_now(self, step: int | None = None) -> bool:
        """Whether to stop; in a data-parallel run all ranks take rank 0's decision together,
        every few steps (``step``) and at the end of an epoch (``step=None``)."""
        if self.world.active:
            if step is not None and (step + 1) % distributed.STOP_CHECK_EVERY and step + 1 != self.steps_per_epoch:
                return False
            self.stop_reason, self.failed = distributed.agree_to_stop(self.stop_reason, self.failed, self.device)
        return bool(self.stop_reason)

    def train_step(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        batch = self.accel.prepare_batch(batch)
        with self.accel.autocast():
            outputs = self.step_model(batch)
            losses = self.model.losses(outputs, batch)
            if not self._batch_checked:  # once: a head's loss keeps its form
                check_losses(self.recipe, losses)
            loss = self.model.total_loss(losses)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return outputs, losses, loss

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train the steps of ``epoch`` from ``self.step`` on; return its metrics once complete."""
        self._epoch_started = time.perf_counter() - self.epoch_seconds
        every = self.recipe.train.checkpoint_every
        batches = train_batches(self.generator, self.batch_size, self.recipe.seed, epoch, self.device, self.step, self.world.size)
        for step, batch in enumerate(batches, start=self.step):
            first = not self._batch_checked  # checked once: a generator's batches and the heads' outputs keep their form
            if first:
                size = min(self.batch_size, self.generator.size("train") - step * self.batch_size)
                check_batch(self.recipe, self.recipe.interface(), batch, size, self.device)
            batch = self.world.shard(batch)
            outputs, losses, loss = self.train_step(batch)
            if first:
                check_outputs(self.recipe, self.model, outputs, batch)
                check_metrics(self.recipe, self.model, outputs, batch)
                self._batch_checked = True
            self.tally.add(self.model, outputs, losses, batch)
            self.step = step + 1
            self._emit("on_step", epoch, step, loss.detach())
            if self._stop_now(step):
                break
            done = (epoch - 1) * self.steps_per_epoch + self.step
            if every and done % every == 0 and self.step < self.steps_per_epoch:
                self.save_checkpoint()
        seconds = time.perf_counter() - self._epoch_started
        self.epoch_seconds = seconds
        tally = self.tally.reduced(self.world)
        return {"heads": tally.means(), "samples": tally.count, "seconds": round(seconds, 3),
                "samples_per_s": round(tally.count / seconds, 1),
                "lr": self.scheduler.get_last_lr()[0]}  # fmt: skip

    def evaluate(self, split: str = "test") -> dict[str, dict[str, float]]:
        with self.accel.autocast():
            return evaluate(self.model, self.generator, split, self.recipe.seed, self.device, self.world)

    @property
    def finished(self) -> bool:
        return self.epochs_done == self.epochs

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (the fields are listed in engine/checkpoint.py)."""
        in_epoch = self.step > 0
        return {
            "format": RUN_FORMAT,
            "epoch": self.epochs_done,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "tally": self.tally.reduced(self.world).state_dict(),
            "history": self.history,
            "epoch_seconds": time.perf_counter() - self._epoch_started if in_epoch else 0.0,
            "seconds": self.seconds_before + time.perf_counter() - self._fit_started,
            "recipe": self.recipe.to_dict(),
            "init": self.init.to_dict() if self.init is not None else None,  # what the first epochs freeze
            "threads": self.threads,  # a resume keeps it: the count changes a result's last bits
            "callbacks": dict(zip(callback_keys(self.callbacks), (c.state_dict() for c in self.callbacks))),
        }

    def load_state_dict(self, state: dict[str, Any], where: Path | str = "checkpoint") -> None:
        """Continue from a checkpoint (already read and checked by ``load_checkpoint``)."""
        epoch, step = state["epoch"], state["step"]
        if epoch > self.epochs or step >= self.steps_per_epoch or (epoch == self.epochs and step):
            raise UserError(
                f"{where} is at epoch {epoch} step {step}, outside this recipe's "
                f"{self.epochs} epochs of {self.steps_per_epoch} steps"
            )
        for name, own in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
            if problem := plain_mismatch(own.state_dict(), state[name], f"its {name} state"):  # a hand-made or foreign checkpoint
                raise UserError(f"{where} does not fit the {name} this recipe builds: {problem}")
        done = epoch * self.steps_per_epoch + step  # steps taken, each one scheduler step
        taken = state["scheduler"].get("last_epoch", done)
        if taken != done:
            raise UserError(f"{where} does not fit its own position: its schedule has taken {taken} steps, "
                            f"the run {done} (epoch {epoch}, step {step})")  # fmt: skip
        left = self.epochs * self.steps_per_epoch - done
        if problem := stepping_problem(self.optimizer, self.scheduler, state["optimizer"], state["scheduler"], left):
            raise UserError(f"{where} does not fit the optimizer and schedule this recipe builds: {problem}")
        if problems := weights_problems(self.model.state_dict(), state["model"]):
            raise UserError(f"{where} holds no weights a run saved: " + "; ".join(problems))
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            # the checkpoint holds every rank's sums added up: rank 0 carries them on
            self.tally = Tally.from_state(state["tally"], self.device) if self.world.is_main else Tally()
            init = InitReport.from_dict(state["init"]) if state.get("init") else None
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{where} does not fit the model this recipe builds: {error_text(e, 300)}") from None
        saved = state.get("callbacks", {})  # absent in checkpoints of digitsum 0.1.0
        for key, callback in zip(callback_keys(self.callbacks), self.callbacks):
            if key in saved:
                try:
                    callback.load_state_dict(saved[key])
                except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:  # what a forged state makes it raise
                    raise UserError(f"{where} does not fit this run's callback {key}: its state makes it raise "
                                    f"{type(e).__name__}: {error_text(e)}") from None  # fmt: skip
        if self.recipe.train.threads == 0 and state.get("threads") and self.device.type == "cpu":
            # as trained so far: a checkpoint moved from another machine (or written by a digitsum
            # whose default followed the load) resumes bit-identically
            self.threads = configure_threads(int(state["threads"]))
        if init is not None:
            self.init = init
        self.epochs_done, self.step, self.history = epoch, step, list(state["history"])
        self.epoch_seconds, self.seconds_before = float(state["epoch_seconds"]), float(state["seconds"])
        self.resumed = True

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt (every rank calls this; rank 0 writes, with the ranks' tallies summed)."""
        state = self.state_dict()
        if self.world.is_main:
            if not self._states_checked:  # once: the components' state_dicts keep their types
                check_states(self.recipe, {"optimizers": state["optimizer"], "schedules": state["scheduler"], **state["callbacks"]},
                             dict(zip(callback_keys(self.callbacks), self.callbacks)))  # fmt: skip
                self._states_checked = True
            save_checkpoint(self.run_dir / "checkpoint.pt", state)

    def check_users_files(self) -> None:
        """Refuse to start where the run directory holds a user's file under a name this run
        writes (``metrics.csv``, ``init.json``, its pictures: each callback's ``writes``)."""
        own = {*RUN_FILES, *([INIT_FILE] if self._init_to_record else []), *matching(entries(self.run_dir), self._writes)}
        theirs = users_files(self.run_dir, own)
        if theirs:
            it = "it" if len(theirs) == 1 else "them"
            raise UserError(f"{self.run_dir} holds {', '.join(theirs)}, which digitsum did not write, and this run would "
                            f"write over {it}: move {it} away, or choose another --out")  # fmt: skip

    def fit(self) -> dict[str, Any]:
        """Train every epoch, evaluating and checkpointing after each; write the run directory.

        A resumed trainer (``load_state_dict``) continues at its position and keeps the
        run directory's recipe.toml and the metrics of the epochs it had completed. In a
        data-parallel run, rank 0 alone writes the run directory.

        If anything raises, every callback's ``on_exception`` is called, summary.json records
        the failure (the last checkpoint stays as it was), and the exception goes on — as a
        :class:`~digitsum.engine.component_errors.ComponentError` when a component's code raised it.
        """
        writes = self.world.is_main and self.run_dir is not None
        if writes:  # one writer at a time: a second run or resume into this folder is refused
            self.check_users_files()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock(self.run_dir)
        try:
            made = {"optimizers": self.optimizer, "schedules": self.scheduler}  # their step() is the plugin's code too
            with blame_components(self.recipe, self.callbacks, made):
                return self._fit()
        except BaseException as error:
            self._record_failure(error)
            raise
        finally:
            if writes:
                unlock(self.run_dir)

    def _fit(self) -> dict[str, Any]:
        self._fit_started = self._epoch_started = time.perf_counter()
        log = None
        if self.world.is_main:
            if self.run_dir is None:
                raise ValueError("Trainer.fit writes a run directory: give the Trainer one (run_dir)")
            log = MetricsLog(self.run_dir / "metrics.jsonl")
            if self.resumed:
                log.keep_epochs(self.epochs_done)
            else:
                if not owned(self.run_dir):
                    mark(self.run_dir)  # a Trainer given a folder directly: the run is digitsum's all the same
                made = provenance(self.device, self.recipe)
                if self.init is not None:  # the bits the run started from: same recipe, seed and source, same run
                    made["init_sha256"] = self.init.sha256
                write_text(self.run_dir / "recipe.toml", self.recipe.to_toml(made))
            if self._init_to_record:
                write_json(self.run_dir / INIT_FILE, self.init.to_dict())
                record_outputs(self.run_dir, {INIT_FILE})
        self._emit("on_start")
        for epoch in range(self.epochs_done + 1, self.epochs + 1):
            if self.init is not None and self.init.frozen:  # init.freeze_epochs: loaded parameters train later
                freeze(self.model, self.init.frozen, frozen=epoch <= self.init.freeze_epochs)
            self._emit("on_epoch_start", epoch)
            train = self.train_epoch(epoch)
            if self.failed:
                break
            if self.step < self.steps_per_epoch:  # stopped part-way: keep the place, evaluate nothing
                self.save_checkpoint()
                break
            self.epoch_record = train
            # "val" only when held out; "val" and "test" every train.eval_every-th epoch and the last
            splits = ["val", "test"] if self.validates else ["test"]
            evaluated = epoch % self.recipe.train.eval_every == 0 or epoch == self.epochs
            evaluations = {split: self.evaluate(split) for split in splits} if evaluated else {}
            self.history.append({"epoch": epoch, "train": train["heads"], **evaluations})
            if log is not None:
                log.append({"epoch": epoch, "split": "train", **train})
                for split, heads in evaluations.items():
                    log.append({"epoch": epoch, "split": split, "heads": heads})
            self.epochs_done = epoch
            self.rewind_epoch()
            self.save_checkpoint()
            self._emit("on_epoch_end", epoch, train["heads"], evaluations.get("test", {}))
            if self._stop_now():
                break
        summary = self.summary()
        if self.stop_reason and not self.finished:
            summary["stopped"] = self.stop_reason
            summary["position"] = {"epoch": self.epochs_done, "step": self.step}
        if self.world.is_main:
            write_json(self.run_dir / "summary.json", summary)
        self._emit("on_end", summary)
        distributed.barrier(self.world)
        return summary

    def summary(self) -> dict[str, Any]:
        """What summary.json says of the run so far: recipe, seed, device, epochs, the last
        epoch's train metrics, the latest val (when held out) and test metrics, seconds."""
        latest = {split: entry[split] for entry in self.history for split in ("train", "val", "test") if split in entry}
        summary = {
            "format": RUN_FORMAT,
            "recipe": self.recipe.name,
            "seed": self.recipe.seed,
            "device": str(self.device),
            "epochs": len(self.history),
            "metrics": {split: latest[split] for split in ("train", "val", "test") if split in latest},
            "seconds": round(self.seconds_before + time.perf_counter() - self._fit_started, 3),
        }
        if self.world.active:
            summary["world_size"] = self.world.size
        return summary

    def _record_failure(self, error: BaseException) -> None:
        """Close every callback, and let summary.json say that the run failed and why."""
        try:
            self._emit("on_exception", error)
        except Exception:  # closing must not hide the error that matters
            pass
        if not self.world.is_main or self.run_dir is None or not (self.run_dir / "recipe.toml").exists():
            return  # nothing was written: there is no run directory to mark
        reason = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
        summary = self.summary()
        summary["failed"] = reason if not isinstance(error, KeyboardInterrupt) else "interrupted (KeyboardInterrupt)"
        summary["position"] = {"epoch": self.epochs_done, "step": self.step}
        try:
            write_json(self.run_dir / "summary.json", summary)
        except UserError:  # the disk that failed the run may fail this too; the error says why
            pass
