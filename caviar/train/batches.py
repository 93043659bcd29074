"""Mini-batches: shuffle indices (not data) each epoch, partition, keep the last partial batch."""

from __future__ import annotations

import numbers

import numpy


def check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def minibatch_indices(m, batch_size, rng=None, shuffle=True, min_last=1):
    """Index arrays of the mini-batches of one epoch.

    ``batch_size = m`` is batch gradient descent, ``1`` stochastic gradient descent. The last
    batch keeps the remainder (m mod batch_size examples); if it would hold fewer than
    ``min_last`` examples (batch norm needs 2) it is merged into the batch before it.
    """
    batch_size = min(check_batch_size(batch_size), m)
    order = rng.permutation(m) if shuffle else numpy.arange(m)
    batches = [order[i : i + batch_size] for i in range(0, m, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_last:
        batches[-2:] = [numpy.concatenate(batches[-2:])]
    return batches
