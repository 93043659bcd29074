"""Train/dev/test splits by the notes' rule, stratified by class, seeded.

The notes' rule: with up to about a million examples the old 60/20/20 holds; in the big-data
era dev and test only need to be big enough to evaluate, so from 1,000,000 examples on they
keep 10,000 each (98/1/1 at one million, 99.5/0.25/0.25 at four million). caviar reads "up to"
as "below": one million exactly gets the notes' 980,000/10,000/10,000.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy

from .loading import DataError

BIG_DATA = 1_000_000
BIG_DATA_EVAL_SIZE = 10_000


def _resolve(value, m, name):
    """A ratio in [0, 1) of m, or an absolute count (an int >= 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise DataError(f"{name} must be a ratio in [0, 1) or a number of examples, got {value!r}")
    if isinstance(value, numbers.Integral) and value >= 1:
        return int(value)
    if value >= 1:
        raise DataError(f"{name} must be a ratio in [0, 1) or a whole number of examples, got {value!r}")
    return max(1, int(round(value * m))) if value > 0 else 0


def split_sizes(m, dev=None, test=None):
    """(n_train, n_dev, n_test) for m examples; ``dev``/``test`` are ratios, counts, or None
    for the notes' rule. ``test=0`` gives a train/dev split only."""
    if m < 1:
        raise DataError("there are no examples to split")
    default = 0.2 if m < BIG_DATA else BIG_DATA_EVAL_SIZE
    n_dev = _resolve(default if dev is None else dev, m, "dev")
    n_test = _resolve(default if test is None else test, m, "test")
    n_train = m - n_dev - n_test
    if n_train < 1:
        raise DataError(f"{m} examples are too few for a split with {n_dev} dev and {n_test} test examples; "
                        "at least one must be left to train on")
    return n_train, n_dev, n_test


def _quotas(counts, n, m):
    """Per-class shares of n that sum to n exactly (largest remainder)."""
    exact = counts * (n / m)
    quotas = numpy.floor(exact).astype(numpy.int64)
    short = n - int(quotas.sum())
    if short:
        quotas[numpy.argsort(-(exact - quotas), kind="stable")[:short]] += 1
    return quotas


@dataclass
class Split:
    """Index arrays of each set, and the sets themselves as (X, y) pairs (test may be None)."""

    train_index: numpy.ndarray
    dev_index: numpy.ndarray
    test_index: numpy.ndarray
    train: tuple | None = None
    dev: tuple | None = None
    test: tuple | None = None


def split_indices(y, dev=None, test=None, seed=0, stratify=True, class_names=None):
    """Index arrays (train, dev, test) of ``len(y)`` examples; every example in exactly one.

    With ``stratify`` (for class labels), each class keeps its proportion in every set, which
    needs at least two examples of every class.
    """
    y = numpy.asarray(y)
    m = len(y)
    n_train, n_dev, n_test = split_sizes(m, dev, test)
    rng = numpy.random.default_rng(seed)
    perm = rng.permutation(m)
    if not stratify:
        return perm[n_dev + n_test :], perm[:n_dev], perm[n_dev : n_dev + n_test]
    if y.dtype.kind in "iu" and len(y) and 0 <= y.min() and y.max() < 65536:  # class indices: counted, not sorted
        counts = numpy.bincount(y)
        classes = numpy.flatnonzero(counts)
        inverse = numpy.cumsum(counts > 0).astype(numpy.uint16)[y] - numpy.uint16(1)
        counts = counts[classes]
    else:
        classes, inverse, counts = numpy.unique(y, return_inverse=True, return_counts=True)
    single = numpy.flatnonzero(counts < 2)
    if single.size:
        c = classes[single[0]]
        name = class_names[int(c)] if class_names is not None else c
        raise DataError(f"class {name!r} has a single example; a stratified split needs at least 2 of each class")
    by_class = perm[numpy.argsort(inverse[perm], kind="stable")]
    q_test = _quotas(counts, n_test, m)
    q_dev = _quotas(counts, n_dev, m)
    parts = {"train": [], "dev": [], "test": []}
    start = 0
    for count, qt, qd in zip(counts, q_test, q_dev):
        members = by_class[start : start + count]
        start += count
        parts["test"].append(members[:qt])
        parts["dev"].append(members[qt : qt + qd])
        parts["train"].append(members[qt + qd :])
    return tuple(rng.permutation(numpy.concatenate(parts[k])) for k in ("train", "dev", "test"))


def split(X, y, dev=None, test=None, seed=0, stratify=None, class_names=None):
    """Split X and y into train/dev/test sets by the notes' rule; see ``split_indices``.

    ``stratify`` defaults to True for class labels (integers) and False for regression targets.
    """
    y = numpy.asarray(y)
    if len(X) != len(y):
        raise DataError(f"X has {len(X)} examples but y has {len(y)}")
    if stratify is None:
        stratify = y.dtype.kind in "iub"
    tr, de, te = split_indices(y, dev, test, seed, stratify, class_names)
    return Split(tr, de, te, (X[tr], y[tr]), (X[de], y[de]), (X[te], y[te]) if len(te) else None)
