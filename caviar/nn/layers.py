"""Layers own parameters and call the stateless ops of ``caviar.functional`` in one line.

Every layer is called as ``layer(a, training, rng)`` and exposes ``params`` (trainable
Tensors by name) and ``buffers`` (state that is not trained, like running statistics).
"""

from __future__ import annotations

from .. import backend
from .. import functional as F
from ..autodiff import Tensor
from . import init as initializers


class Layer:
    params: dict
    buffers: dict

    def __init__(self):
        self.params, self.buffers = {}, {}

    def __call__(self, a, training=False, rng=None):  # pragma: no cover - abstract
        raise NotImplementedError


class Dense(Layer):
    """Z = A_prev @ W + b, and A = g(Z) when an activation is given (fused, one op).

    With ``bias=False`` (before batch norm, whose beta does the bias's job) there is no b.
    """

    def __init__(self, n_in, n_out, activation="linear", init="he", init_scale=None, bias=True,
                 rng=None, dtype=None):
        super().__init__()
        self.activation = F.check_activation(activation)
        scheme = initializers.resolve(init, activation)
        rng = backend.rng(rng)
        self.params["W"] = Tensor(initializers.weights(scheme, n_in, n_out, rng, init_scale, dtype), requires_grad=True, name="W")
        if bias:
            self.params["b"] = Tensor(backend.xp.zeros(n_out, dtype=dtype or backend.DEFAULT_DTYPE), requires_grad=True, name="b")

    def __call__(self, a, training=False, rng=None):
        return F.dense(a, self.params["W"], self.params.get("b"), self.activation)


class BatchNorm(Layer):
    """Batch norm of Z before the activation: gamma * z_norm + beta, with running estimates.

    ``momentum`` is the notes' beta of the running averages (0.9); see ``functional.batch_norm``.
    """

    def __init__(self, n, momentum=0.9, epsilon=1e-5, dtype=None):
        super().__init__()
        dtype = dtype or backend.DEFAULT_DTYPE
        xp = backend.xp
        self.momentum, self.epsilon = momentum, epsilon
        self.params["gamma"] = Tensor(xp.ones(n, dtype=dtype), requires_grad=True, name="gamma")
        self.params["beta"] = Tensor(xp.zeros(n, dtype=dtype), requires_grad=True, name="beta")
        self.buffers["running_mean"] = xp.zeros(n, dtype=dtype)
        self.buffers["running_var"] = xp.ones(n, dtype=dtype)

    def __call__(self, z, training=False, rng=None):
        running = (self.buffers["running_mean"], self.buffers["running_var"])
        return F.batch_norm(z, self.params["gamma"], self.params["beta"], running, training, self.momentum, self.epsilon)


class Activation(Layer):
    def __init__(self, name):
        super().__init__()
        self.name = F.check_activation(name)

    def __call__(self, z, training=False, rng=None):
        return F.activation(z, self.name)


class Dropout(Layer):
    """Inverted dropout with probability ``keep_prob`` of keeping each unit (training only)."""

    def __init__(self, keep_prob):
        super().__init__()
        self.keep_prob = F.check_keep_prob(keep_prob)

    def __call__(self, a, training=False, rng=None):
        return F.dropout(a, self.keep_prob, rng, training)
