"""Arithmetic on numbers written as digit tensors, exact and in log space, vectorised over a batch.

Numbers are int64 tensors ``[B, length]`` of digits in ``base``, **most significant first**
(``digitsum.contracts.Digits``). Distributions over a number's digits are log-probabilities
``[B, length, base]``, one independent distribution per digit, in the same order.

The likelihood of a sum follows from the digit distributions of its two terms position by
position, with a carry: at the units, the pair of digits makes ``t = a + b`` in ``0 .. 2·base-2``;
the sum's digit there is ``(t + carry_in) mod base`` and the carry out ``(t + carry_in) div base``.
So ``P(sum)`` is a chain over the carry (two states), and costs ``O(length)`` small tensor ops
(:func:`sum_log_likelihood`), never an enumeration of the ``base^(2·length)`` digit strings.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The log-probability that stands for "impossible" (0): finite, so that no ``-inf - -inf`` turns
#: a gradient into NaN, and low enough that ``exp`` of it beside any real path is exactly 0.
IMPOSSIBLE = -1e9


def add_digits(a: Tensor, b: Tensor, base: int = 10) -> Tensor:
    """The exact sum of two numbers ``[B, N]`` (digits, most significant first) -> ``[B, N + 1]``."""
    total = a + b
    digits = []
    carry = torch.zeros_like(total[:, 0])
    for i in range(total.shape[1] - 1, -1, -1):  # units first: the carry runs that way
        value = total[:, i] + carry
        digits.append(value % base)
        carry = value // base
    digits.append(carry)
    return torch.stack(digits[::-1], dim=1)


def pair_sum_log_probs(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``log P(a_i + b_i = t)`` for ``t`` in ``0 .. 2·base-2``, per position: ``[B, N, base]`` x2 ->
    ``[B, N, 2·base-1]``, the two digits independent."""
    base = log_a.shape[-1]
    joint = log_a.unsqueeze(-1) + log_b.unsqueeze(-2)  # [B, N, a, b]
    t = torch.arange(2 * base - 1, device=log_a.device)
    a = torch.arange(base, device=log_a.device)
    b = t[:, None] - a[None, :]  # the b that makes t with each a: [2·base-1, base]
    valid = (b >= 0) & (b < base)
    pairs = joint[..., a[None, :].expand_as(b), b.clamp(0, base - 1)]  # [B, N, t, a]
    return pairs.masked_fill(~valid, IMPOSSIBLE).logsumexp(dim=-1)


def _by_carry(pair: Tensor, index: Tensor) -> Tensor:
    """``pair[b, i, index[b, i, ...]]``, IMPOSSIBLE where ``index`` is outside ``pair``'s range."""
    width = pair.shape[-1]
    valid = (index >= 0) & (index < width)
    found = pair.gather(2, index.clamp(0, width - 1).flatten(2)).view(index.shape)
    return found.masked_fill(~valid, IMPOSSIBLE)


def sum_log_likelihood(log_a: Tensor, log_b: Tensor, total: Tensor) -> Tensor:
    """Exact ``log P(a + b = total)`` per sample, ``[B]``.

    ``log_a``, ``log_b``: log-probabilities ``[B, N, base]`` of the two terms' digits (most
    significant first, independent); ``total``: the labelled sum ``[B, N + 1]``, most significant
    first (its leading digit is the last carry: 0 or 1). The forward recursion over the carry,
    units first: ``alpha[c]`` is the log-probability of the sum's lower digits so far with a carry
    ``c`` into the next position. A sum no two N-digit numbers make (a leading digit above 1) gets
    :data:`IMPOSSIBLE`. Computed in float32 at least; differentiable.
    """
    dtype = torch.promote_types(log_a.dtype, torch.float32)
    log_a, log_b = log_a.to(dtype), log_b.to(dtype)
    batch, n, base = log_a.shape
    pair = pair_sum_log_probs(log_a, log_b).flip(1)  # units first
    digits = total.flip(1)  # units first; digits[:, n] is the last carry
    carry = torch.arange(2, device=total.device)
    # the pair sum t that gives digit s with carry c_in in and c_out out: s + base·c_out - c_in
    index = digits[:, :n, None, None] + base * carry[None, None, None, :] - carry[None, None, :, None]
    step = _by_carry(pair, index)  # [B, N, c_in, c_out]
    alpha = torch.tensor([0.0, IMPOSSIBLE], dtype=dtype, device=log_a.device).expand(batch, 2)
    for i in range(n):
        alpha = (alpha[:, :, None] + step[:, i]).logsumexp(dim=1).clamp_min(IMPOSSIBLE)
    last = digits[:, n]
    found = alpha.gather(1, last.clamp(0, 1)[:, None]).squeeze(1)
    return torch.where(last <= 1, found, torch.full_like(found, IMPOSSIBLE))


def argmax_sum(log_a: Tensor, log_b: Tensor) -> Tensor:
    """The sum of the most probable digits of each term: ``[B, N, base]`` x2 -> ``[B, N + 1]``."""
    return add_digits(log_a.argmax(-1), log_b.argmax(-1), log_a.shape[-1])


@torch.no_grad()
def most_probable_sum(log_a: Tensor, log_b: Tensor) -> Tensor:
    """The sum digits of the most probable (sum digits, carries) path: ``[B, N + 1]``.

    Viterbi over the carry chain, each position's digit pairs marginalised (``P(a_i + b_i = t)``):
    unlike :func:`argmax_sum`, a position whose digits are uncertain counts every pair that
    gives the same sum digit. Exact MAP of the sum would also marginalise the carries (not a
    chain's max-product); the two agree whenever one carry path dominates.
    """
    batch, n, base = log_a.shape
    pair = pair_sum_log_probs(log_a.float(), log_b.float()).flip(1)  # units first
    carry = torch.arange(2, device=log_a.device)
    s = torch.arange(base, device=log_a.device)
    index = s + base * carry[None, :, None] - carry[:, None, None]  # [c_in, c_out, s]
    scores = _by_carry(pair, index.expand(batch, n, 2, 2, base).reshape(batch, n, 2, 2 * base))
    scores = scores.view(batch, n, 2, 2, base)
    best, digit = scores.max(dim=-1)  # [B, N, c_in, c_out]: best sum digit for each carry pair
    delta = torch.full_like(best[:, 0, 0], IMPOSSIBLE)  # [B, carry]: no carry into the units
    delta[:, 0] = 0.0
    back = []
    for i in range(n):
        step = delta[:, :, None] + best[:, i]  # [B, c_in, c_out]
        delta, came_from = step.max(dim=1)
        back.append(came_from)
    c = delta.argmax(dim=1)  # the last carry: the sum's leading digit
    out = [c]
    for i in range(n - 1, -1, -1):  # gathers, not arange(batch): an exported model keeps the batch size free
        c_in = back[i].gather(1, c[:, None]).squeeze(1)
        out.append(digit[:, i].flatten(1).gather(1, (2 * c_in + c)[:, None]).squeeze(1))
        c = c_in
    return torch.stack(out, dim=1)  # leading digit first
