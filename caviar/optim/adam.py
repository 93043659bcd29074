"""Adam, the notes' form: momentum and RMSprop together, with bias correction.

v = beta1 v + (1 - beta1) dW;  s = beta2 s + (1 - beta2) dW^2
v_hat = v / (1 - beta1^t);  s_hat = s / (1 - beta2^t)
W = W - lr * v_hat / (sqrt(s_hat) + epsilon)

PyTorch's Adam is the same update (same defaults, epsilon outside the square root).
Keras's Adam defaults to epsilon 1e-7 instead of the notes' 1e-8.
"""

from __future__ import annotations

from .. import backend
from .base import Optimizer, check_beta, check_epsilon, coef, fused_update, power


class Adam(Optimizer):
    """Adam with bias correction; defaults beta1 0.9, beta2 0.999, epsilon 1e-8 (the notes')."""

    defaults = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
    kernel = "adam"

    def __init__(self, lr=None, beta1=None, beta2=None, epsilon=None):
        super().__init__(lr)
        self.beta1 = check_beta("beta1", self.option("beta1", beta1))
        self.beta2 = check_beta("beta2", self.option("beta2", beta2))
        self.epsilon = check_epsilon(self.option("epsilon", epsilon))

    def hyperparameters(self):
        return {**super().hyperparameters(), "beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon}

    def init_state(self, param):
        xp = backend.get_array_module(param.data)
        return {"v": xp.zeros_like(param.data), "s": xp.zeros_like(param.data), "t": 0,
                "_tmp": xp.empty_like(param.data)}

    def update(self, param, grad, state, lr):
        v, s, tmp = state["v"], state["s"], state["_tmp"]
        state["t"] += 1
        t = state["t"]
        xp = backend.get_array_module(v)
        b1, b2 = self.beta1, self.beta2
        if fused_update(self.kernel, param, grad, (v, s), (b1, 1 - b1, b2, 1 - b2, 1 / (1 - power(b2, t)), self.epsilon,
                                                     lr / (1 - power(b1, t)))):
            return
        # the reference, each line one pass (the compiled kernel does these in one)
        v *= coef(b1, tmp)
        v += xp.multiply(grad, coef(1 - b1, tmp), out=tmp)
        s *= coef(b2, tmp)
        xp.multiply(grad, grad, out=tmp)
        tmp *= coef(1 - b2, tmp)
        s += tmp
        # tmp <- sqrt(s_hat) + epsilon, then lr * v_hat / tmp, all in one buffer
        xp.multiply(s, coef(1 / (1 - power(b2, t)), tmp), out=tmp)
        xp.sqrt(tmp, out=tmp)
        tmp += coef(self.epsilon, tmp)
        xp.divide(v, tmp, out=tmp)
        tmp *= coef(lr / (1 - power(b1, t)), tmp)
        param.data -= tmp
