"""Diagnosis: gradient checking, bias/variance and the basic recipe, per-layer norms, plots."""

from .gradcheck import (GradientCheckResult, ParamCheck, check_cost, check_network, gradient_check,
                        relative_difference, verdict_for)
from .norms import GradientNorms, activation_norms, gradient_norms
from .recipe import BIAS_THRESHOLD, VARIANCE_THRESHOLD, Diagnosis, diagnose

__all__ = ["BIAS_THRESHOLD", "Diagnosis", "GradientCheckResult", "GradientNorms", "ParamCheck",
           "VARIANCE_THRESHOLD", "activation_norms", "check_cost", "check_network", "diagnose",
           "gradient_check", "gradient_norms", "relative_difference", "verdict_for"]
