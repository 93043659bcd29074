"""RMSprop, the notes' form.

s = beta2 * s + (1 - beta2) * dW^2;  W = W - lr * dW / (sqrt(s) + epsilon).

PyTorch's RMSprop is the same update with ``alpha = beta2`` and epsilon outside the square
root, as here; its default alpha is 0.99 where caviar follows the notes' 0.999. Keras's
RMSprop defaults to rho = 0.9 and epsilon = 1e-7: pass ``beta2=0.9, epsilon=1e-7`` to match.
"""

from __future__ import annotations

from .. import backend
from .base import Optimizer, check_beta, check_epsilon, coef, fused_update


class RMSprop(Optimizer):
    """s = beta2 s + (1 - beta2) dW^2; W -= lr dW / (sqrt(s) + epsilon)."""

    defaults = {"lr": 0.001, "beta2": 0.999, "epsilon": 1e-8}
    kernel = "rmsprop"

    def __init__(self, lr=None, beta2=None, epsilon=None):
        super().__init__(lr)
        self.beta2 = check_beta("beta2", self.option("beta2", beta2))
        self.epsilon = check_epsilon(self.option("epsilon", epsilon))

    def hyperparameters(self):
        return {**super().hyperparameters(), "beta2": self.beta2, "epsilon": self.epsilon}

    def init_state(self, param):
        xp = backend.get_array_module(param.data)
        return {"s": xp.zeros_like(param.data), "_tmp": xp.empty_like(param.data)}

    def update(self, param, grad, state, lr):
        s, tmp = state["s"], state["_tmp"]
        xp = backend.get_array_module(s)
        if fused_update(self.kernel, param, grad, (s,), (self.beta2, 1 - self.beta2, self.epsilon, lr)):
            return
        s *= coef(self.beta2, tmp)
        xp.multiply(grad, grad, out=tmp)
        tmp *= coef(1 - self.beta2, tmp)
        s += tmp
        xp.sqrt(s, out=tmp)
        tmp += coef(self.epsilon, tmp)
        xp.divide(grad, tmp, out=tmp)
        tmp *= coef(lr, tmp)
        param.data -= tmp
