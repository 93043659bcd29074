"""Plain (mini-batch) gradient descent: W = W - alpha * dW."""

from __future__ import annotations

from .base import Optimizer, coef, fused_update


class GradientDescent(Optimizer):
    """theta <- theta - lr * dtheta, in place."""

    defaults = {"lr": 0.01}
    kernel = "gd"

    def update(self, param, grad, state, lr):
        if not fused_update(self.kernel, param, grad, (), (lr,)):
            param.data -= coef(lr, param.data) * grad
