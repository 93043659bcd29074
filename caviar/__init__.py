"""caviar: deep networks that train well.

The engine (a small define-by-run autodiff and the notes' fused ops), optimizers, and the
gradient checker. Arrays are ``(m, n_x)``: rows are examples.
"""

from . import backend, functional, nn, ops, optim, schedules, train
from .autodiff import Tensor, Variable, check_finite, detect_anomaly, is_grad_enabled, no_grad
from .diagnose import gradient_check
from .errors import AnomalyError, CaviarError, DivergedError, GradientCheckError, ShapeError
from .nn import Network
from .train import History, fit
from .train import load_model as load  # a Network or an Ensemble
from .train import save_model as save
from .ops import concatenate, stack

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "CaviarError",
    "DivergedError",
    "History",
    "Network",
    "GradientCheckError",
    "ShapeError",
    "Tensor",
    "Variable",
    "backend",
    "check_finite",
    "concatenate",
    "detect_anomaly",
    "functional",
    "gradient_check",
    "is_grad_enabled",
    "fit",
    "load",
    "save",
    "nn",
    "no_grad",
    "ops",
    "optim",
    "schedules",
    "stack",
    "train",
]
