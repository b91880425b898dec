"""What "the loss fell" means: one definition for the doctor, the watch and ``check_recipe``.

Each caller asks with its own share (a few hundred doctor steps should lower the loss far more
than one epoch against the one before), but the question is the same: did the loss come down
by at least ``share`` of the way it could still go? The way it could go ends at the loss's
floor (the lowest loss reachable under the head's settings: 0 for plain cross-entropy, more
with label smoothing), so a loss that starts near a raised floor is not held to a fall it
cannot make. Nothing here imports torch: plain floats in, a bool out.
"""

from __future__ import annotations

import math


def fell(before: float, after: float, share: float, floor: float = 0.0) -> bool:
    """Whether a loss went from ``before`` to ``after`` by at least ``share`` of the distance
    from ``before`` down to ``floor``. Non-finite values never fell.

    With ``floor = 0`` and a positive loss this is ``after <= (1 - share) * before``. A loss
    that may be negative (a floor below 0) is measured against ``|before - floor|``.
    """
    if not (math.isfinite(before) and math.isfinite(after) and math.isfinite(floor)):
        return False
    room = before - floor
    if room <= 0:  # already at (or below) the floor: nothing left to fall
        return after <= before
    return after <= before - share * room


def fraction_fallen(before: float, after: float, floor: float = 0.0) -> float:
    """How much of the way from ``before`` to ``floor`` the loss went (negative: it rose)."""
    room = before - floor
    if not (math.isfinite(before) and math.isfinite(after)) or room <= 0:
        return 0.0
    return (before - after) / room
