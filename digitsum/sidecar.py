"""A sidecar: an object that lives in a child Python process and is called, in order, through a pipe.

A logger whose library takes seconds to import and whose store is a database (MLflow) would
slow the run it reports if it did that work in the run's process: importing is Python work that
holds the interpreter's lock, so a thread cannot hide it (measured in docs/performance.md, "What
the loggers cost"). In a sidecar the work runs on the core the run's start-up leaves idle, and
each call is one line of JSON that the run writes and goes on::

    store = Sidecar("digitsum.components.mlflow_store:MLflowStore", "MLflow", experiment="x")
    started = store.call("start", name, tags)  # a Future; started.result() waits for the answer
    store.check()                              # raises the first error a call raised, if any
    store.close()                              # waits for every call, then ends the process

The object is ``target(**kwargs)`` (``"module:Class"``), made in the child as soon as the
sidecar starts. A process that knows early it will need one can start its child sooner with
:func:`warm_up` (``digitsum run`` does, for the loggers its recipe names, before it imports
torch): the child imports the target's module at once, and the first Sidecar of a target in that
module takes the child over. Its module is all the child imports, so it must not import torch; its methods
take and return JSON values. A :class:`UserError` raised there is raised here as the same
UserError; anything else as a :class:`SidecarError` carrying the child's traceback. After an
error the child skips the calls that follow (they would fail the same way) and answers each with
that error. Whatever the object prints goes to the run's standard error, never into the pipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Any

from collections.abc import Iterable

from . import threads
from .errors import UserError

#: The sidecar targets of the built-in loggers, by logger type (see :func:`warm_up_loggers`).
LOGGER_TARGETS = {
    "mlflow": "digitsum.components.mlflow_store:MLflowStore",
    "tensorboard": "digitsum.components.tensorboard_events:EventWriter",
}
#: The sidecar target that draws a run's pictures (engine/pictures.py, ``Pictures``).
PAINTER = "digitsum.engine.figures:Painter"
#: Children started by :func:`warm_up` that no Sidecar has taken over yet, by the module they import.
_warm: dict[str, subprocess.Popen] = {}


class SidecarError(RuntimeError):
    """An unexpected error in a sidecar's process (a bug there, or the process died): its
    message holds the child's traceback."""


class Sidecar:
    """``target(**kwargs)`` in a child process; :meth:`call` runs one of its methods there."""

    def __init__(self, target: str, name: str, **kwargs: Any) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._next_id = 0
        self._error: BaseException | None = None
        self._process = _warm.pop(_module_of(target), None) or _spawn()
        threading.Thread(target=self._read, name=f"digitsum-sidecar-{name}", daemon=True).start()
        self.made = self._send(None, [target, kwargs])

    def call(self, method: str, *args: Any) -> Future:
        """Run ``method(*args)`` on the object, after every call made before; its answer is the Future's result."""
        return self._send(method, list(args))

    def check(self) -> None:
        """Raise the first error a call has raised so far, if any (once), without waiting."""
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Wait for every call made, end the child process, and raise the first error not raised yet."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()  # the child exits when it has answered everything before
        self._process.wait()
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            future.exception()  # all answered (or failed by the reader, when the child died)
        self.check()

    def _send(self, method: str | None, args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
            self._pending[call_id] = future
            line = json.dumps({"id": call_id, "method": method, "args": args})
        try:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):  # closed, or the child is gone
            # answered now: the reader may have finished already, and a call left pending would
            # make close() wait forever (on_exception after on_end's close, say)
            with self._lock:
                unanswered = self._pending.pop(call_id, None) is not None
            if unanswered:
                future.set_exception(SidecarError(f"{self.name}: its process has ended; the call was not made"))
        return future

    def _read(self) -> None:
        for line in self._process.stdout:
            answer = json.loads(line)
            with self._lock:
                future = self._pending.pop(answer["id"])
            if "error" in answer:
                error = self._error_from(answer)
                with self._lock:
                    if self._error is None and not answer.get("skipped"):
                        self._error = error
                future.set_exception(error)
            else:
                future.set_result(answer.get("result"))
        code = self._process.wait()
        lost = SidecarError(f"{self.name}: its process ended (exit code {code}) with calls unanswered")
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            if pending and self._error is None:
                self._error = lost
        for future in pending:
            future.set_exception(lost)

    def _error_from(self, answer: dict[str, Any]) -> BaseException:
        if answer.get("user"):
            return UserError(answer["error"])
        return SidecarError(f"{self.name}: {answer['error']}\n{answer.get('traceback', '')}".rstrip())


def warm_up(target: str) -> None:
    """Start the child process of a later ``Sidecar(target, ...)`` now, and let it import
    ``target``'s module while this process does other work. Once per module; an error there
    (the library missing, say) is raised by the Sidecar that takes the child over, as usual.
    A child no Sidecar takes over ends when this process does (its pipe closes)."""
    module = _module_of(target)
    if module not in _warm:
        _warm[module] = _spawn(module)


def is_warm(target: str) -> bool:
    """Whether :func:`warm_up` started a child for ``target``'s module that no Sidecar has taken over yet."""
    return _module_of(target) in _warm


def warm_up_loggers(types: Iterable[str]) -> None:
    """:func:`warm_up` the sidecars of the built-in loggers among ``types`` (a recipe's, from
    ``recipe.logger_types``), before the run imports torch: importing MLflow (a second and more
    of Python work) then runs on the core the run's own start-up leaves idle, not beside
    training's threads. Other types have no sidecar to warm up."""
    for kind in types:
        target = LOGGER_TARGETS.get(kind)
        if target is not None:
            warm_up(target)


def _module_of(target: str) -> str:
    return target.partition(":")[0]


def _spawn(preload: str | None = None) -> subprocess.Popen:
    """A child serving one object (:func:`_serve`); ``preload``: a module it imports at once."""
    process = subprocess.Popen(
        [sys.executable, "-m", "digitsum.sidecar", *([preload] if preload else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
    )  # fmt: skip
    threads.count_as_own(process.pid)  # its start-up is the run's own work, not a busy machine's
    return process


def _serve() -> None:
    """The child's side: make the object, then answer each call, in order, until the pipe closes."""
    import gc
    import importlib
    import os
    import signal
    import traceback

    # Ctrl-C reaches every process of the terminal: the run turns it into a checkpointed stop,
    # and its last calls (the MLflow run's end) still need this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        # the run's work comes first: beside a training step's threads, which wait for one
        # another at every barrier, a process taking a core's timeslice stalls them all
        # (threads.py); the run waits for this one only where it must (a checkpoint, the end)
        os.nice(19)
    gc.disable()  # a short-lived process: the collector's passes would only slow its imports
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything the object prints goes to standard error, not into the answers
    if len(sys.argv) > 1:  # warmed up: import the target's module before the first request
        try:
            importlib.import_module(sys.argv[1])
        except Exception:  # raised again, with its traceback, where the object is made
            pass
    target, failure = None, None
    for line in sys.stdin:
        request = json.loads(line)
        answer: dict[str, Any] = {"id": request["id"]}
        if failure is not None:
            answer.update(failure, skipped=True)
        else:
            try:
                if request["method"] is None:
                    module, _, name = request["args"][0].partition(":")
                    target = getattr(importlib.import_module(module), name)(**request["args"][1])
                else:
                    answer["result"] = getattr(target, request["method"])(*request["args"])
            except UserError as e:
                failure = {"error": e.message, "user": True}
                answer.update(failure)
            except Exception as e:  # relayed with its traceback: a bug the user reports
                failure = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
                answer.update(failure)
        channel.write(json.dumps(answer) + "\n")
        channel.flush()
    os._exit(0)  # everything is answered (and committed); skip tearing down the imported libraries


if __name__ == "__main__":
    _serve()
