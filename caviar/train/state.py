"""What training adds to a network: its optimizer (with its state and learning rate), the
epochs it has trained, its history across fits, and the generator of its mini-batch order.

A ``Network`` holds none of this itself: ``fit`` attaches a ``TrainingState`` as
``net.train_state`` and model files save it, so a loaded model continues exactly.
"""

from __future__ import annotations

from .. import backend
from .history import History


class TrainingState:
    def __init__(self, seed=None):
        self.optimizer = None
        self.epochs_trained = 0
        self.history = History()  # every epoch the network has trained, across fits
        self.shuffle_rng = backend.shuffle_rng(seed)  # the order of the mini-batches


def state_of(net):
    """The network's training state, created (seeded by the network's seed) on first use."""
    if net.train_state is None:
        net.train_state = TrainingState(net.config["seed"])
    return net.train_state
