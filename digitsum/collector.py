"""Python's cyclic garbage collector during a command: off while the command starts, frozen after.

Importing torch, and ``torch._dynamo`` (which every ``torch.optim`` optimizer imports), creates
millions of long-lived objects. The cyclic collector walks all of them again and again while
they are being created, and once more when the interpreter exits. Measured on 2 CPU cores:
with the collector off, ``import torch`` took 1.11-1.29 s instead of 1.37-1.56 s and
``import torch._dynamo`` 0.88-0.99 s instead of 1.17-1.24 s; a process that had imported both
took 1.2-1.4 s to exit, 0.2 s with what it had frozen (``gc.freeze``: moved where the collector
never looks again).

So the command line pauses the collector first thing (:func:`pause`); when training starts
(or the doctor's checks: a paused collector there cost 15 % more memory),
:func:`setup_done` freezes what start-up made and turns the collector back on, so that a long
run collects its own garbage as usual; and as the command ends, :func:`exiting` freezes
everything, which the interpreter's exit then frees without walking it. Only the command line
calls these: in a notebook, a long-lived process whose objects come and go, nothing is paused
and :func:`setup_done` does nothing.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn the collector off until :func:`setup_done` (the command line calls this first)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def setup_done() -> None:
    """Freeze what exists now and turn the collector back on, if :func:`pause` turned it off;
    otherwise nothing. Called when training starts, and when the doctor's probe is built."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False


def exiting() -> None:
    """The command is over: freeze everything, so that the interpreter's exit does not walk it
    (the collector is back on, for whatever still runs at exit)."""
    global _paused
    gc.freeze()
    gc.enable()
    _paused = False
