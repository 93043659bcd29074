"""The optimizer protocol: state per parameter, updated in place.

An optimizer only computes and applies updates from gradients that backprop left in
``.grad``; it never builds the cost. ``minimize(cost_fn, params)`` is the framework-style
convenience from the notes: zero gradients, evaluate the cost, backprop, step.

Hyperparameters may be floats or arrays that broadcast against the parameters (a population
of models gives each member its own learning rate and betas); ``lr`` may also be a schedule,
a callable ``step -> lr``.
"""

from __future__ import annotations

import numbers

import numpy

from ..autodiff import Tensor, no_grad


def _per_member(name, value, ok, requirement):
    """An array of per-member values (a population): float64, every entry checked."""
    arr = numpy.asarray(value, dtype=numpy.float64)
    bad = ~ok(arr)
    if bad.any():
        raise ValueError(f"{name} must be {requirement}, got {arr[bad].flat[0]!r} for member {int(numpy.argmax(bad.ravel()))}")
    return arr


def check_lr(lr):
    """A learning rate is a non-negative number, a schedule (a callable ``step -> lr``), or an
    array of per-member rates for a population."""
    if callable(lr):
        return lr
    if isinstance(lr, numpy.ndarray):
        return _per_member("learning rate lr", lr, lambda a: a >= 0, "a non-negative number")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr >= 0:
        raise ValueError(f"learning rate lr must be a non-negative number, got {lr!r}")
    return float(lr)


def check_beta(name, beta):
    if isinstance(beta, numpy.ndarray):
        return _per_member(name, beta, lambda a: (a >= 0) & (a < 1), "in [0, 1)")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < 1:
        raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
    return float(beta)


def check_epsilon(epsilon):
    if isinstance(epsilon, numpy.ndarray):
        return _per_member("epsilon", epsilon, lambda a: a > 0, "positive")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    return float(epsilon)


def coef(value, dtype):
    """A coefficient in the parameter's dtype. Scalars and per-member arrays are both computed in
    float64 first: a Python float is then rounded to float32 by the array operation itself, an
    array by ``astype``, to the same value, so a population member's update is bit-identical
    to the same model trained alone."""
    if isinstance(value, float):
        return value
    return value.astype(dtype, copy=False)


class _Rows:
    """A population parameter seen as (K, rest): ``data`` is a view, so updates land in place."""

    __slots__ = ("data", "dtype")

    def __init__(self, param):
        self.data = param.data.reshape(len(param.data), -1)
        self.dtype = param.dtype


class Optimizer:
    """Base class: subclasses implement ``init_state(param)`` and ``update(param, grad, state, lr)``."""

    default_lr = 0.01

    def __init__(self, lr=None):
        self.lr = check_lr(self.default_lr if lr is None else lr)
        self.iterations = 0  # completed steps
        self.state = {}

    def current_lr(self):
        return self.lr(self.iterations) if callable(self.lr) else self.lr

    def hyperparameters(self):
        """The constructor's arguments, for model files and reports."""
        return {"lr": self.lr if isinstance(self.lr, float) else None}

    def init_state(self, param):
        return {}

    def update(self, param, grad, state, lr):  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, params):
        """Apply one update to every parameter that has a gradient.

        With per-member hyperparameters (a population: arrays of shape (K, 1)), each parameter
        is updated through a (K, rest) view, so that every elementwise pass runs over long
        contiguous rows instead of broadcasting the coefficients over short trailing axes.
        """
        lr = self.current_lr()
        per_member = isinstance(lr, numpy.ndarray) or any(
            isinstance(v, numpy.ndarray) for v in self.hyperparameter_values())
        with no_grad():
            for p in params:
                if p.grad is None:
                    continue
                target, grad = (_Rows(p), p.grad.reshape(len(p.data), -1)) if per_member else (p, p.grad)
                state = self.state.get(id(p))
                if state is None:
                    state = self.state[id(p)] = self.init_state(target)
                self.update(target, grad, state, lr)
        self.iterations += 1

    def hyperparameter_values(self):
        return [v for k, v in vars(self).items() if k in ("beta", "beta1", "beta2", "epsilon")]

    @staticmethod
    def zero_grad(params):
        for p in params:
            p.grad = None

    def minimize(self, cost_fn, params):
        """One step on ``cost_fn()``: zero grads, forward, backward, update. Returns the cost."""
        params = [params] if isinstance(params, Tensor) else list(params)
        self.zero_grad(params)
        cost = cost_fn()
        cost.backward()
        self.step(params)
        return cost

    # -- state as arrays, for model files ---------------------------------------------------
    def state_arrays(self, params):
        """{'<param name>.<key>': array} for every parameter with state (names from ``params``)."""
        out = {}
        for name, p in params.items():
            for key, value in self.state.get(id(p), {}).items():
                if key.startswith("_"):
                    continue
                out[f"{name}.{key}"] = value
        return out

    def load_state_arrays(self, params, arrays):
        for name, p in params.items():
            state = self.init_state(p)
            found = False
            for key in list(state):
                if not key.startswith("_") and f"{name}.{key}" in arrays:
                    value = arrays[f"{name}.{key}"]
                    state[key] = int(value) if isinstance(state[key], int) else value.astype(p.dtype)
                    found = True
            if found:
                self.state[id(p)] = state

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"
