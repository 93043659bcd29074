"""A population's dropout layer: each member drops units with its own keep_prob and generator."""

from __future__ import annotations

import numpy

from .. import backend
from .. import functional as F
from ..autodiff import result
from ..nn.layers import Layer


class PopulationDropout(Layer):
    """Inverted dropout with each member's keep_prob and generator: member k's mask is drawn
    exactly as the single network's would be, with its own generator."""

    def __init__(self, keep_probs, rngs):
        super().__init__()
        self.keep_probs, self.rngs = keep_probs, rngs

    @property
    def keep_probs(self):
        return self._keep_probs

    @keep_probs.setter
    def keep_probs(self, values):
        self._keep_probs = list(values)
        self._dropping = [k for k, keep in enumerate(self._keep_probs) if keep < 1.0]
        # the GPU's draws are compared with these where they are, so a call copies nothing there
        self._keep = backend.xp.asarray(self._keep_probs, dtype=numpy.float64).reshape(-1, 1, 1)
        self._inverse = backend.xp.asarray([1.0 / k for k in self._keep_probs], dtype=numpy.float64).reshape(-1, 1, 1)
        self._constants = {}  # dtype -> F.mask_constants, made at the first step in that dtype

    def drop(self, a):
        """(a with dropout, the scale its gradient is multiplied by), or (a, None) where no
        member drops units."""
        if not self._dropping:
            return a, None
        F.refuse_if_checking(min(self.keep_probs))
        # member k's mask is the single network's (F.dropout_mask), drawn with its own generator
        return F.dropout_mask(a, self.rngs, self._keep_probs, self._keep, self._inverse)

    def drop_over(self, a):
        """Dropout written over ``a``, a ReLU's output that the caller owns (``F.dropout_over``):
        ``(inverses, kept)`` for the ReLU's gradient; None where no member drops units (``a``
        is left as it is); False where the kernels do not run (``drop`` is the way then)."""
        if not self._dropping:
            return None
        F.refuse_if_checking(min(self.keep_probs))
        return F.dropout_over(a, self.rngs, self._keep_probs, self._mask_constants(a.dtype)) or False

    def bias_relu_over(self, z, b):
        """The layer below's bias and ReLU, then this dropout, in one pass over ``z``, its fresh
        product (``F.bias_relu_dropout``): ``(inverses, kept)`` as ``drop_over`` gives them;
        None where no member drops units and False where the kernel does not run (``z`` is
        left as it is for the layer's own pass then)."""
        if not self._dropping:
            return None
        F.refuse_if_checking(min(self.keep_probs))
        return F.bias_relu_dropout(z, b, self.rngs, self._keep_probs, self._mask_constants(z.dtype)) or False

    def batch_norm_relu_over(self, z, gamma, beta, running, momentum, epsilon):
        """The batch norm and ReLU layers below, then this dropout, in one call over ``z``, a
        linear layer's fresh product (``F.batch_norm_relu_dropout``): (out, xhat, inv_std,
        (inverses, kept)); None where no member drops units or the kernel does not run."""
        if not self._dropping:
            return None
        F.refuse_if_checking(min(self.keep_probs))
        return F.batch_norm_relu_dropout(z, gamma, beta, running, momentum, epsilon, self.rngs, self._keep_probs,
                                         self._mask_constants(z.dtype))

    def _mask_constants(self, dtype):
        constants = self._constants.get(dtype)
        if constants is None:
            constants = self._constants[dtype] = F.mask_constants(self._keep_probs, dtype)
        return constants

    def __call__(self, a, training=False, rng=None):
        if not training or not self._dropping:
            return a
        out, scale = self.drop(a.data)
        return result(out, (a,), lambda g: (g * scale,), "dropout")
