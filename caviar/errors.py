"""caviar's exceptions: each message names the bad value, so a user can fix it without a debugger."""


class CaviarError(Exception):
    """Base class of every error caviar raises on purpose."""


class ShapeError(CaviarError, ValueError):
    """Operands whose shapes do not fit an operation; the message names both shapes."""


class AnomalyError(CaviarError, FloatingPointError):
    """A forward or backward pass produced NaN or inf while anomaly detection was on."""


class GradientCheckError(CaviarError, ValueError):
    """A cost that cannot be gradient-checked (for example, dropout in training mode)."""


class DivergedError(CaviarError, FloatingPointError):
    """Training produced a NaN or inf cost; the weights are the last ones that gave a finite cost."""

    def __init__(self, iteration, cost, lr=None):
        self.iteration = iteration
        self.cost = cost
        self.lr = lr
        hint = f" (lr={lr:g})" if isinstance(lr, float) else ""
        super().__init__(
            f"training diverged at iteration {iteration}: the cost became {cost}{hint}; "
            "try a smaller learning rate, input normalization, or gradient-friendly initialization"
        )


class DataError(CaviarError, ValueError):
    """Data that cannot be used as given; the message says where and why."""
