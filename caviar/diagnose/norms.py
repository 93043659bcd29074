"""Per-layer gradient and activation norms, to see vanishing and exploding gradients.

The notes' example: a deep linear network with W[l] = 1.5 I has activations that grow like
1.5^L, and with 0.5 I they shrink like 0.5^L; gradients do the same in the other direction.
"""

from __future__ import annotations

import numpy

from .. import backend
from ..autodiff import Tensor, no_grad
from ..train.callbacks import Callback


def gradient_norms(net):
    """{parameter name: Frobenius norm of its current gradient} (after a backward pass)."""
    return {name: float(numpy.linalg.norm(backend.to_numpy(p.grad))) for name, p in net.params.items() if p.grad is not None}


def activation_norms(net, X):
    """Mean per-example L2 norm of the output of every Dense layer (then activation) on X."""
    a = Tensor(net.check_X(X).astype(net.params["W1"].dtype))
    norms = {}
    with no_grad():
        l = 0
        for layer in net.layers:
            a = layer(a, training=False)
            if "W" in layer.params:
                l += 1
            norms[f"A{l}"] = float(numpy.linalg.norm(backend.to_numpy(a.data), axis=-1).mean())
    return norms


class GradientNorms(Callback):
    """Record every parameter's gradient norm every ``every`` iterations into
    ``history.grad_norms`` (one dict per recorded iteration) and, given a probe batch, the
    activation norms of every layer after each epoch into ``activations``."""

    def __init__(self, every=1, probe=None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of iterations, got {every!r}")
        self.every, self.probe = every, probe
        self.activations = []

    def on_batch_end(self, run, iteration, cost):
        if iteration % self.every != 0:
            return
        if not run.population:
            run.history.grad_norms.append({"iteration": iteration, **gradient_norms(run.net)})
            return
        for slot, number in enumerate(run.members):  # each member's own norms, from its slice
            run.histories[number].grad_norms.append({"iteration": iteration, **{
                name: float(numpy.linalg.norm(backend.to_numpy(p.grad[slot]))) for name, p in run.net.params.items()
                if p.grad is not None}})

    def on_epoch_end(self, run, epoch, logs):
        if self.probe is not None and not run.population:
            self.activations.append({"epoch": epoch, **activation_norms(run.net, self.probe)})
