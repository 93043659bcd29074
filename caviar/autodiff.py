"""Define-by-run reverse-mode autodiff: the Tensor, the tape, and ``backward``.

A user writes only the forward pass. Every op (``caviar/ops.py``, ``caviar/functional.py``)
computes its output array and a small ``backward`` closure that maps the output's gradient to
its inputs' gradients (a vector-Jacobian product). ``Tensor.backward`` walks the recorded
graph in reverse topological order and accumulates gradients into the leaves' ``.grad``.

Speed matters here: a mini-batch step is a handful of matrix products, so the per-op Python
cost is kept to one object and one closure, and gradients no input asks for are never computed
(an op's backward checks ``requires_grad`` of each input before doing the work).
"""

from __future__ import annotations

import contextlib
import threading

from . import backend
from .errors import AnomalyError, ShapeError

class _Modes(threading.local):
    """Whether ops record the graph, and whether they check for NaN and inf: per thread, as in
    PyTorch, so a ``no_grad()`` evaluation in one thread never turns off recording in another
    (two fits in threads, scikit-learn's threading backend)."""

    grad_enabled = True
    anomaly = False


_modes = _Modes()


class no_grad:  # noqa: N801 - used as a function, ``with no_grad():``, as PyTorch's
    """Record nothing inside the block: for inference and for optimizer updates. A class, not
    a generator's context manager: an optimizer step enters it once a mini-batch."""

    __slots__ = ("previous",)

    def __enter__(self):
        self.previous, _modes.grad_enabled = _modes.grad_enabled, False

    def __exit__(self, *exc):
        _modes.grad_enabled = self.previous


def is_grad_enabled() -> bool:
    return _modes.grad_enabled


@contextlib.contextmanager
def detect_anomaly():
    """Raise ``AnomalyError`` at the first op whose output or input gradient is NaN or inf.

    Off by default because checking every array costs a pass over it.
    """
    previous, _modes.anomaly = _modes.anomaly, True
    try:
        yield
    finally:
        _modes.anomaly = previous


def is_anomaly_enabled() -> bool:
    return _modes.anomaly


def check_finite(tensor, what="tensor"):
    """Raise ``AnomalyError`` if ``tensor`` (a Tensor or array) holds NaN or inf; return it otherwise."""
    data = tensor.data if isinstance(tensor, Tensor) else tensor
    mod = backend.get_array_module(data)
    if not bool(mod.isfinite(data).all()):
        n_nan = int(mod.isnan(data).sum())
        n_inf = int(mod.isinf(data).sum())
        raise AnomalyError(f"{what} of shape {tuple(data.shape)} holds {n_nan} NaN and {n_inf} inf values")
    return tensor


class Tensor:
    """An array that records the operations applied to it, for reverse-mode differentiation.

    Parameters
    ----------
    data : array_like
        A floating array keeps its dtype (float64 stays float64, for checks); Python numbers,
        booleans and integer arrays become the default float32.
    requires_grad : bool
        Whether ``backward`` should compute a gradient for this tensor (into ``.grad``).
    name : str, optional
        Used in error messages and in gradient-check reports.
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_parents", "_backward", "_op", "__weakref__")
    # Make ``ndarray + Tensor`` call Tensor.__radd__ instead of broadcasting over the Tensor.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, name=None, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = backend.as_float_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._parents = ()
        self._backward = None
        self._op = None

    # -- array-like attributes -------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    def __len__(self):
        return len(self.data)

    def item(self):
        return self.data.item()

    def numpy(self):
        """The value as a NumPy array (a copy on the GPU)."""
        return backend.to_numpy(self.data)

    def __float__(self):
        return float(self.data)

    def __repr__(self):
        label = f", name={self.name!r}" if self.name else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad}{label})"

    def zero_grad(self):
        """Forget the accumulated gradient."""
        self.grad = None

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    # -- the tape ----------------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires a gradient.

        ``grad`` is the seed: required unless ``self`` holds a single value (a scalar cost).
        Gradients accumulate across calls, as in every framework: zero them between steps.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require a gradient: none of its inputs "
                "was created with requires_grad=True (or it was computed under no_grad())"
            )
        mod = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() needs a seed gradient for a non-scalar tensor of shape {self.shape}; "
                    "reduce it to a scalar cost first (e.g. .sum() or .mean()) or pass grad=..."
                )
            grad = mod.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else mod.asarray(grad, dtype=self.data.dtype)
            if grad.shape != self.shape:
                raise ShapeError(f"seed gradient of shape {grad.shape} does not match the tensor's shape {self.shape}")
        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:  # a leaf
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                if _modes.anomaly:
                    check_finite(pg, f"gradient flowing from {node._op} into an input")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg


def _topological_order(root):
    """Nodes that lead to ``root`` (and require gradients), each after all of its inputs."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if parent.requires_grad and id(parent) not in seen:
                stack.append((parent, False))
    return order


def Variable(data, name=None, dtype=None) -> Tensor:
    """A trainable tensor: ``Tensor(data, requires_grad=True)``."""
    return Tensor(data, requires_grad=True, name=name, dtype=dtype)


def result(data, parents, backward, op):
    """Wrap an op's output array; record ``backward`` only if some input needs a gradient.

    ``backward(g)`` returns one gradient (or None) per parent, each of the parent's shape.
    """
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out.name = None
    out._op = op
    if _modes.grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._backward = backward
    else:
        out.requires_grad = False
        out._parents = ()
        out._backward = None
    if _modes.anomaly:
        check_finite(data, f"output of {op}")
    return out


def lift(x, like=None):
    """``x`` as a Tensor; a Python number takes the dtype of ``like`` (so float64 stays float64)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (int, float)) and not isinstance(x, bool):
        mod = backend.get_array_module(like.data)
        return Tensor(mod.asarray(x, dtype=like.data.dtype))
    return Tensor(x)


def unbroadcast(g, shape):
    """Sum a gradient back to the shape of the operand that was broadcast to make it."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g
