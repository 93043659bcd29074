"""caviar's exceptions: each message names the bad value, so a user can fix it without a debugger."""


class CaviarError(Exception):
    """Base class of every error caviar raises on purpose."""


class ShapeError(CaviarError, ValueError):
    """Operands whose shapes do not fit an operation; the message names both shapes."""


class AnomalyError(CaviarError, FloatingPointError):
    """A forward or backward pass produced NaN or inf while anomaly detection was on."""


class GradientCheckError(CaviarError, ValueError):
    """A cost that cannot be gradient-checked (for example, dropout in training mode)."""
