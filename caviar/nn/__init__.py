"""Layers, initializers and the Network."""

from . import init
from .layers import Activation, BatchNorm, Dense, Dropout, Layer
from .network import Network

__all__ = ["Activation", "BatchNorm", "Dense", "Dropout", "Layer", "Network", "init"]
