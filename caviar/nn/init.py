"""Weight initializers from the notes (week 1: vanishing/exploding gradients).

W[l] has shape (n[l-1], n[l]) (rows are examples, so inputs come first). Biases start at zero.

| scheme   | standard deviation of W[l]     | note                                            |
|----------|--------------------------------|-------------------------------------------------|
| zeros    | 0                              | kept to show that symmetry is not broken        |
| random   | 0.01 (the notes' "large" is 10)| ``init_scale`` is the scale itself              |
| xavier   | sqrt(1 / n[l-1])               | for tanh                                        |
| glorot   | sqrt(2 / (n[l-1] + n[l]))      |                                                 |
| he       | sqrt(2 / n[l-1])               | for ReLU                                        |

``init_scale`` multiplies the standard deviation of any scheme (the notes: "the numerator can
also be a hyperparameter"); for ``random`` it is the standard deviation itself.
"""

from __future__ import annotations

import math

from .. import backend

SCHEMES = ("zeros", "random", "xavier", "glorot", "he")


def resolve(init, activation):
    """``"auto"`` picks He for the ReLU family and Xavier for tanh/sigmoid, as the notes advise."""
    if init == "auto":
        return "he" if activation in ("relu", "leaky_relu") else "xavier"
    if init not in SCHEMES:
        raise ValueError(f"unknown init {init!r}; expected 'auto' or one of {', '.join(SCHEMES)}")
    return init


def std(scheme, n_in, n_out, init_scale=None):
    """The standard deviation of the weights of one layer under ``scheme``."""
    if scheme == "zeros":
        return 0.0
    if scheme == "random":
        return 0.01 if init_scale is None else float(init_scale)
    base = {
        "xavier": math.sqrt(1.0 / n_in),
        "glorot": math.sqrt(2.0 / (n_in + n_out)),
        "he": math.sqrt(2.0 / n_in),
    }[scheme]
    return base * (1.0 if init_scale is None else float(init_scale))


def weights(scheme, n_in, n_out, rng, init_scale=None, dtype=None, leading=()):
    """A (``*leading``, n_in, n_out) weight array drawn from N(0, std^2)."""
    dtype = dtype or backend.DEFAULT_DTYPE
    shape = tuple(leading) + (n_in, n_out)
    s = std(scheme, n_in, n_out, init_scale)
    if s == 0.0:
        return backend.xp.zeros(shape, dtype=dtype)
    w = rng.standard_normal(shape, dtype=backend.CHECK_DTYPE) * s
    return backend.to_device(w.astype(dtype))
