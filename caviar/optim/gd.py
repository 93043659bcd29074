"""Plain (mini-batch) gradient descent: W = W - alpha * dW."""

from __future__ import annotations

from .base import Optimizer, coef, fused_update


class GradientDescent(Optimizer):
    """theta <- theta - lr * dtheta, in place."""

    defaults = {"lr": 0.01}

    def update(self, param, grad, state, lr):
        if not fused_update("gd", param, grad, (), (lr,)):
            param.data -= coef(lr, param.data) * grad
