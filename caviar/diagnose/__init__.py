"""Diagnosis: gradient checking (and, later, bias/variance and the basic recipe)."""

from .gradcheck import GradientCheckResult, ParamCheck, check_cost, check_network, gradient_check, relative_difference, verdict_for

__all__ = ["GradientCheckResult", "ParamCheck", "check_cost", "check_network", "gradient_check", "relative_difference", "verdict_for"]
