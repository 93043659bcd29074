"""The notes' exponentially weighted average, with bias correction."""

from __future__ import annotations

from .base import check_beta


class ExponentialAverage:
    """v_t = beta v_{t-1} + (1 - beta) theta_t, reported as v_t / (1 - beta^t) when corrected.

    It averages over roughly 1 / (1 - beta) values (beta = 0.9: about 10). Without bias
    correction the first estimates are too small, since v_0 = 0.
    """

    def __init__(self, beta=0.9, bias_correction=True):
        self.beta = check_beta("beta", beta)
        self.bias_correction = bool(bias_correction)
        self.v = 0.0
        self.t = 0

    def update(self, theta):
        """Fold in one value; return the (corrected) average."""
        self.t += 1
        self.v = self.beta * self.v + (1 - self.beta) * theta
        return self.value

    @property
    def value(self):
        if self.t == 0:
            raise ValueError("the average has no value before the first update")
        if self.bias_correction:
            return self.v / (1 - self.beta**self.t)
        return self.v

    def __call__(self, values):
        """The averages after each of ``values`` (a fresh average each call)."""
        avg = ExponentialAverage(self.beta, self.bias_correction)
        return [avg.update(x) for x in values]
