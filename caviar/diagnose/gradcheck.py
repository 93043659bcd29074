"""Gradient checking, as in the notes, with a breakdown that locates a bug.

The notes' algorithm: flatten every parameter into one vector theta; for each component,
d_theta_approx[i] = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 * eps); then
difference = ||approx - grad|| / (||approx|| + ||grad||).

Correction to the notes: their pseudo-code writes ``... / 2*eps``, which by precedence
multiplies by eps instead of dividing by 2*eps; caviar divides by ``(2 * eps)``.

The check runs in float64 whatever the parameters' dtype: with eps = 1e-7 a float32 cost
(resolution ~1e-7) would measure rounding, not the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from .. import backend
from ..autodiff import Tensor, no_grad
from ..errors import GradientCheckError
from ..functional import forbid_dropout

# The notes' thresholds on the difference.
GREAT = 1e-7
BUG = 1e-3


def verdict_for(difference: float) -> str:
    """'great' below 1e-7; 'inspect' up to 1e-3 (look for large entries); 'bug' from 1e-3."""
    if difference < GREAT:
        return "great"
    if difference < BUG:
        return "inspect"
    return "bug"


def relative_difference(approx, grad) -> float:
    """||approx - grad|| / (||approx|| + ||grad||), and 0 when both are zero."""
    denom = numpy.linalg.norm(approx) + numpy.linalg.norm(grad)
    return float(numpy.linalg.norm(approx - grad) / denom) if denom > 0 else 0.0


@dataclass
class ParamCheck:
    """One parameter's share of a gradient check."""

    name: str
    shape: tuple
    difference: float
    max_abs_error: float
    # (index, backprop gradient, numerical gradient) of the entries that disagree most.
    worst: list = field(default_factory=list)


@dataclass
class GradientCheckResult:
    """The outcome of ``gradient_check``: the overall difference, a verdict and a breakdown."""

    difference: float
    verdict: str
    epsilon: float
    method: str
    params: list

    @property
    def worst_param(self) -> ParamCheck:
        return max(self.params, key=lambda p: p.difference)

    def __getitem__(self, name) -> ParamCheck:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"no parameter named {name!r}; checked {[p.name for p in self.params]}")

    def __str__(self):
        lines = [f"gradient check ({self.method}, eps={self.epsilon:g}): difference {self.difference:.3e} -> {self.verdict}",
                 "  per parameter, largest difference first:"]
        for p in sorted(self.params, key=lambda p: -p.difference):
            lines.append(f"  {p.name:<16} {str(p.shape):<14} difference {p.difference:.3e}  max |error| {p.max_abs_error:.3e}")
            for index, analytic, numeric in p.worst[:3] if verdict_for(p.difference) != "great" else []:
                lines.append(f"      at {index}: backprop {analytic:+.6e}  numerical {numeric:+.6e}")
        return "\n".join(lines)


def _named(params):
    if isinstance(params, Tensor):
        params = [params]
    items = list(params.items()) if isinstance(params, dict) else [(p.name or f"params[{i}]", p) for i, p in enumerate(params)]
    for name, p in items:
        if not isinstance(p, Tensor):
            raise TypeError(f"parameter {name!r} is a {type(p).__name__}, not a caviar Tensor")
    if not items:
        raise ValueError("gradient_check needs at least one parameter")
    return items


def _cost_value(cost_fn):
    cost = cost_fn()
    if not isinstance(cost, Tensor) or cost.size != 1:
        shape = getattr(cost, "shape", type(cost).__name__)
        raise GradientCheckError(f"the cost function must return a scalar caviar Tensor, got {shape}")
    return cost


def gradient_check(cost_fn, params, *args, **kwargs):
    """Compare backprop's gradient with two-sided finite differences.

    Two forms: ``gradient_check(cost_fn, params, epsilon=1e-7, directions=None, seed=0)``
    checks any cost (see ``check_cost``); ``gradient_check(net, X, y, ...)`` checks a whole
    network's cost J on a batch, regularization included (see ``check_network``).
    """
    if hasattr(cost_fn, "cost") and hasattr(cost_fn, "params") and hasattr(cost_fn, "buffers"):
        return check_network(cost_fn, params, *args, **kwargs)
    return check_cost(cost_fn, params, *args, **kwargs)


def check_network(net, X, y, epsilon=1e-7, directions=None, seed=0, top=5):
    """Gradient check of ``net.cost(X, y)`` in training mode (batch norm uses batch statistics;
    dropout is refused) against every parameter. Running statistics are restored afterwards."""
    X = net.check_X(X)
    y = net.check_y(y, len(X))
    saved = {k: b.copy() for k, b in net.buffers.items()}
    try:
        return check_cost(lambda: net.cost(X, y, training=True), net.params, epsilon, directions, seed, top)
    finally:
        for k, b in net.buffers.items():
            b[...] = saved[k]


def check_cost(cost_fn, params, epsilon=1e-7, directions=None, seed=0, top=5):
    """Compare backprop's gradient of ``cost_fn()`` with two-sided finite differences.

    Parameters
    ----------
    cost_fn : callable
        Takes no argument and returns the scalar cost J as a Tensor computed from ``params``;
        it is called once per perturbation, so it must be deterministic: training-mode dropout
        is refused (the notes: J is not consistent). Regularization terms belong in J.
    params : Tensor, list of Tensor, or dict name -> Tensor
        The parameters to check. They are promoted to float64 for the check and restored after.
    epsilon : float
        The perturbation (the notes' 1e-7).
    directions : int, optional
        Beyond the notes, for large models: instead of every component, check ``directions``
        random unit directions u per parameter with the directional derivative
        (J(theta + eps u) - J(theta - eps u)) / (2 eps) against grad . u; 2 * directions cost
        evaluations per parameter instead of 2 * size.
    seed : int
        Seeds the random directions.
    top : int
        How many worst entries each parameter's breakdown names.

    Returns
    -------
    GradientCheckResult
        ``difference``, ``verdict`` ('great' < 1e-7 <= 'inspect' < 1e-3 <= 'bug') and, per
        parameter, its own difference and the entries that disagree most.
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    if directions is not None and (not isinstance(directions, int) or directions < 1):
        raise ValueError(f"directions must be a positive int, got {directions!r}")
    named = _named(params)
    saved = [(p, p.data, p.grad) for _, p in named]
    try:
        for p, data, _ in saved:
            p.data = data.astype(backend.CHECK_DTYPE)  # a copy, so perturbing never touches the original
            p.grad = None
        with forbid_dropout("gradient checking"):
            cost = _cost_value(cost_fn)
            if not cost.requires_grad:
                raise GradientCheckError("the cost does not depend on any parameter that requires a gradient")
            cost.backward()
            grads = [backend.to_numpy(p.grad).astype(numpy.float64) if p.grad is not None
                     else numpy.zeros(p.shape) for _, p in named]
            with no_grad():
                if directions is None:
                    checks = [_check_components(cost_fn, name, p, g, epsilon, top) for (name, p), g in zip(named, grads)]
                else:
                    rng = numpy.random.default_rng(seed)
                    checks = [_check_directions(cost_fn, name, p, g, epsilon, directions, rng)
                              for (name, p), g in zip(named, grads)]
    finally:
        for p, data, grad in saved:
            p.data, p.grad = data, grad
    approx = numpy.concatenate([c[1] for c in checks])
    analytic = numpy.concatenate([c[2] for c in checks])
    difference = relative_difference(approx, analytic)
    return GradientCheckResult(
        difference=difference,
        verdict=verdict_for(difference),
        epsilon=epsilon,
        method="components" if directions is None else f"{directions} random directions per parameter",
        params=[c[0] for c in checks],
    )


def _evaluate(cost_fn):
    return float(backend.to_numpy(_cost_value(cost_fn).data))


def _check_components(cost_fn, name, p, grad, epsilon, top):
    flat = p.data.reshape(-1)  # a view of the float64 copy
    approx = numpy.empty(flat.size)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + epsilon
        plus = _evaluate(cost_fn)
        flat[i] = old - epsilon
        minus = _evaluate(cost_fn)
        flat[i] = old
        approx[i] = (plus - minus) / (2 * epsilon)
    analytic = grad.reshape(-1)
    error = numpy.abs(approx - analytic)
    worst = [
        (tuple(int(j) for j in numpy.unravel_index(i, p.shape)) if p.shape else (), float(analytic[i]), float(approx[i]))
        for i in numpy.argsort(-error)[:top]
    ]
    check = ParamCheck(name, tuple(p.shape), relative_difference(approx, analytic),
                       float(error.max()) if error.size else 0.0, worst)
    return check, approx, analytic


def _check_directions(cost_fn, name, p, grad, epsilon, k, rng):
    original = p.data.copy()
    mod = backend.get_array_module(p.data)
    approx, analytic = numpy.empty(k), numpy.empty(k)
    for j in range(k):
        u = rng.standard_normal(p.shape)
        u /= numpy.linalg.norm(u) or 1.0
        u_dev = mod.asarray(u)
        p.data[...] = original + epsilon * u_dev
        plus = _evaluate(cost_fn)
        p.data[...] = original - epsilon * u_dev
        minus = _evaluate(cost_fn)
        p.data[...] = original
        approx[j] = (plus - minus) / (2 * epsilon)
        analytic[j] = float((grad * u).sum())
    error = numpy.abs(approx - analytic)
    worst = [((f"direction {int(j)}",), float(analytic[j]), float(approx[j])) for j in numpy.argsort(-error)[:3]]
    check = ParamCheck(name, tuple(p.shape), relative_difference(approx, analytic), float(error.max()), worst)
    return check, approx, analytic
