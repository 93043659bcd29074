"""Gradient descent with momentum, the notes' form.

v = beta * v + (1 - beta) * dW;  W = W - lr * v.

The notes' v is an exponentially weighted average of the gradients. PyTorch's SGD keeps
buf = mu * buf + dW (no 1 - beta factor) and steps W -= lr * buf, so caviar's
``Momentum(lr, beta)`` equals ``torch.optim.SGD(lr=lr * (1 - beta), momentum=beta)``
(with dampening 0); Keras's SGD momentum is PyTorch's form too.
"""

from __future__ import annotations

from .. import backend
from .base import Optimizer, check_beta, coef, fused_update, power


class Momentum(Optimizer):
    """v = beta v + (1 - beta) dW; W -= lr v (optionally with bias correction v / (1 - beta^t))."""

    defaults = {"lr": 0.01, "beta1": 0.9}
    kernel = "momentum"
    names = {"beta1": "beta"}

    def __init__(self, lr=None, beta=None, bias_correction=False):
        super().__init__(lr)
        self.beta = check_beta("beta", self.option("beta1", beta))
        self.bias_correction = bool(bias_correction)

    def hyperparameters(self):
        return {**super().hyperparameters(), "beta": self.beta, "bias_correction": self.bias_correction}

    def init_state(self, param):
        xp = backend.get_array_module(param.data)
        return {"v": xp.zeros_like(param.data), "t": 0, "_tmp": xp.empty_like(param.data)}

    def update(self, param, grad, state, lr):
        v, tmp = state["v"], state["_tmp"]
        state["t"] += 1
        xp = backend.get_array_module(v)
        scale = lr / (1 - power(self.beta, state["t"])) if self.bias_correction else lr
        if fused_update(self.kernel, param, grad, (v,), (self.beta, 1 - self.beta, scale)):
            return
        v *= coef(self.beta, tmp)
        v += xp.multiply(grad, coef(1 - self.beta, tmp), out=tmp)
        param.data -= xp.multiply(v, coef(scale, tmp), out=tmp)
