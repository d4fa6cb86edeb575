"""Synaptic summation: the canonical order that makes results independent of how the machine is cut.

Synaptic input is summed strictly in (projection, delay, sample, pre-synaptic neuron) order,
starting from zero, instead of with a BLAS matmul, whose result for a column changes with the
matrix width (measured: 218 of 384 shape cases differ in the last bit).  That is what makes
spikes bit-identical for any number of cores per population and any batch composition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accumulate_events", "analog_input", "analog_input_block", "ANALOG_BLOCK_ELEMENTS"]


def accumulate_events(n_batch: int, b: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Sum event rows per sample, in event order: ``out[b[e]] += rows[e]``.

    ``b`` (n_events,) sample index of each event; ``rows`` (n_events, n) the
    synaptic row each event adds.  The sum for every (sample, column) is taken
    strictly sequentially in event order, starting from zero, so a column's
    value never depends on which other columns or samples are computed beside
    it.  This is what makes spikes bit-identical for any number of cores per
    population and any batch composition (BLAS matmul is not: its result for a
    column changes with the matrix width).  Returns (n_batch, n).
    """
    n = rows.shape[1]
    out_dtype = rows.dtype
    if len(b) == 0:
        return np.zeros((n_batch, n), out_dtype)
    # With two or more contiguous columns, numpy reduces a non-last axis row by
    # row (the inner loop runs over columns), i.e. strictly in event order, and
    # about 10x faster than cumsum.  With one column the reduced axis becomes
    # the inner loop and numpy sums pairwise, so cumsum (sequential by
    # definition) is kept there.  tests/unit/model/test_network.py pins both paths
    # against a plain sequential loop.
    sequential_reduce = n >= 2
    if n_batch == 1:
        rows = np.ascontiguousarray(rows)
        return np.add.reduce(rows, axis=0, keepdims=True) if sequential_reduce else np.cumsum(rows, axis=0)[-1:]
    order = np.argsort(b, kind="stable")
    bs = b[order]
    rank = np.arange(len(bs)) - np.searchsorted(bs, bs, side="left")
    padded = np.zeros((n_batch, int(rank.max()) + 1, n), out_dtype)
    padded[bs, rank] = rows[order]            # zeros after a sample's last event add exactly nothing
    return np.add.reduce(padded, axis=1) if sequential_reduce else np.cumsum(padded, axis=1)[:, -1]


def analog_input(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` for x (batch, n_in) and w (n_in, n), summed strictly in input order.

    Like :func:`~spinnray.model.neurons.accumulate_events`, a column's value never
    depends on how many other columns sit beside it (BLAS matmul does), so the
    result is bit-identical for any split of the post population over cores.
    """
    prod = x[:, :, None] * w[None, :, :]          # (batch, n_in, n)
    if w.shape[1] >= 2:
        return np.add.reduce(prod, axis=1)       # row by row over inputs: sequential
    return np.cumsum(prod, axis=1)[:, -1]


#: elements of a block of projected input (steps x batch x n) and of the (events, n) product of its sparse path
ANALOG_BLOCK_ELEMENTS = 262_144


def analog_input_block(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`analog_input` of several steps at once: x (steps, batch, n_in) -> (steps, batch, n),
    equal to calling it step by step (the same sequential sum over inputs).

    Mostly-zero input (spike trains written as analog 0/1, as in the cue task) is summed over
    its nonzero entries only, in input order (:func:`~spinnray.model.neurons.accumulate_events`): the
    skipped terms are zeros, which change no sum (at most the sign of an all-zero one)."""
    steps, batch, n_in = x.shape
    n = w.shape[1]
    nz = np.count_nonzero(x)
    if nz * 4 <= x.size:
        if nz * n > ANALOG_BLOCK_ELEMENTS and steps > 1:   # bound the (events, n) temporary
            h = steps // 2
            return np.concatenate([analog_input_block(x[:h], w), analog_input_block(x[h:], w)])
        k, b, i = np.nonzero(x)                    # C order: inputs ascending within (step, sample)
        rows = x[k, b, i][:, None] * w[i]          # (events, n)
        return accumulate_events(steps * batch, k * batch + b, rows).reshape(steps, batch, n)
    # One input at a time over the whole block: the same sequential sum as analog_input, in
    # n_in operations on (steps, batch, n) arrays (no (steps, batch, n_in, n) product).
    out = x[:, :, 0, None] * w[0]
    tmp = np.empty_like(out)
    for i in range(1, n_in):
        out += np.multiply(x[:, :, i, None], w[i], out=tmp)
    return out


