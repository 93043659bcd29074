"""The optimizer protocol: state per parameter, updated in place.

An optimizer only computes and applies updates from gradients that backprop left in
``.grad``; it never builds the cost. ``minimize(cost_fn, params)`` is the framework-style
convenience from the notes: zero gradients, evaluate the cost, backprop, step.
"""

from __future__ import annotations

import numbers

from ..autodiff import Tensor, no_grad


def check_lr(lr):
    """A learning rate is a non-negative number, or a schedule: a callable ``step -> lr``."""
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr >= 0:
        raise ValueError(f"learning rate lr must be a non-negative number, got {lr!r}")
    return float(lr)


class Optimizer:
    """Base class: subclasses implement ``update(param, grad, state, lr)`` in place."""

    def __init__(self, lr):
        self.lr = check_lr(lr)
        self.iterations = 0  # completed steps: the notes' t is iterations + 1 during a step
        self.state = {}

    def current_lr(self):
        return self.lr(self.iterations) if callable(self.lr) else self.lr

    def init_state(self, param):
        return {}

    def update(self, param, grad, state, lr):  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, params):
        """Apply one update to every parameter that has a gradient."""
        lr = self.current_lr()
        with no_grad():
            for p in params:
                if p.grad is None:
                    continue
                state = self.state.get(id(p))
                if state is None:
                    state = self.state[id(p)] = self.init_state(p)
                self.update(p, p.grad, state, lr)
        self.iterations += 1

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
