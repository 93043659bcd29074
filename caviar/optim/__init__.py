"""Optimizers, in order of increasing complexity: state per parameter, updated in place.

Adding an optimizer is its own module (a class with ``defaults``, ``init_state`` and
``update``) and one line in ``OPTIMIZERS``: the command line's choices, search spaces,
populations and model files all read this registry.
"""

from .adam import Adam
from .base import Optimizer
from .ewa import ExponentialAverage
from .gd import GradientDescent
from .momentum import Momentum
from .rmsprop import RMSprop

OPTIMIZERS = {
    "gd": GradientDescent,
    "momentum": Momentum,
    "rmsprop": RMSprop,
    "adam": Adam,
}
ALIASES = {"sgd": "gd", "gradient-descent": "gd"}


def lookup(name):
    """The optimizer class registered under ``name`` (or an alias)."""
    key = str(name).lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def name_of(optimizer):
    """The registry name of an optimizer object."""
    return next(k for k, cls in OPTIMIZERS.items() if type(optimizer) is cls)


def build(name, strict=True, **hyperparameters):
    """An optimizer from the notes' hyperparameter names (``lr``, ``beta1``, ``beta2``,
    ``epsilon``); None means the optimizer's default. With ``strict``, a name the optimizer
    does not take is an error; otherwise it is ignored (a search space shared by several
    optimizers gives Adam's beta2 to momentum trials too)."""
    cls = lookup(name)
    given = {k: v for k, v in hyperparameters.items() if v is not None}
    unknown = sorted(set(given) - set(cls.defaults))
    if unknown and strict:
        raise ValueError(f"optimizer {name!r} takes no {', '.join(unknown)}; it takes {', '.join(cls.defaults)}")
    return cls(**{cls.names.get(k, k): v for k, v in given.items() if k in cls.defaults})


def get(name, lr=None, **kwargs):
    """An optimizer by name ('gd', 'momentum', 'rmsprop', 'adam') with its constructor's
    arguments, or one given, unchanged."""
    if isinstance(name, Optimizer):
        return name
    return lookup(name)(lr, **kwargs)


__all__ = ["Adam", "ExponentialAverage", "GradientDescent", "Momentum", "Optimizer", "RMSprop", "build", "get",
           "lookup", "name_of", "OPTIMIZERS"]
