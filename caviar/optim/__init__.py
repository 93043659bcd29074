"""Optimizers: state per parameter and an in-place update."""

from .base import Optimizer
from .gd import GradientDescent

__all__ = ["Optimizer", "GradientDescent"]
