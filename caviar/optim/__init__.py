"""Optimizers, in order of increasing complexity: state per parameter, updated in place."""

from .adam import Adam
from .base import Optimizer
from .ewa import ExponentialAverage
from .gd import GradientDescent
from .momentum import Momentum
from .rmsprop import RMSprop

OPTIMIZERS = {
    "gd": GradientDescent,
    "sgd": GradientDescent,
    "gradient-descent": GradientDescent,
    "momentum": Momentum,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def get(name, lr=None, **kwargs):
    """An optimizer by name ('gd', 'momentum', 'rmsprop', 'adam'), or one given, unchanged."""
    if isinstance(name, Optimizer):
        return name
    key = str(name).lower().replace("_", "-")
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of gd, momentum, rmsprop, adam")
    return OPTIMIZERS[key](lr, **kwargs)


__all__ = ["Adam", "ExponentialAverage", "GradientDescent", "Momentum", "Optimizer", "RMSprop", "get", "OPTIMIZERS"]
