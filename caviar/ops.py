"""Primitive ops with their vector-Jacobian products (VJPs).

Each op computes its output array, then hands ``result`` a closure mapping the output gradient
``g`` to one gradient per input. Broadcasting is undone by ``unbroadcast`` (a gradient is summed
back to its operand's shape). An input that does not require a gradient gets ``None`` and its
gradient is never computed: ``X @ W`` in the first layer does not pay for ``dX``.

The ops are attached to ``Tensor`` as methods and operators at the end of this module.
"""

from __future__ import annotations

import numbers

from . import backend
from .autodiff import Tensor, lift, result, unbroadcast
from .errors import ShapeError


def _binary_data(fn, a, b, verb):
    try:
        return fn(a.data, b.data)
    except ValueError as exc:
        raise ShapeError(f"cannot {verb} tensors of shapes {a.shape} and {b.shape}: they do not broadcast") from exc


def add(a, b):
    a, b = lift(a, b if isinstance(b, Tensor) else None), lift(b, a)
    out = _binary_data(lambda x, y: x + y, a, b, "add")

    def backward(g):
        return (unbroadcast(g, a.shape) if a.requires_grad else None,
                unbroadcast(g, b.shape) if b.requires_grad else None)

    return result(out, (a, b), backward, "add")


def sub(a, b):
    a, b = lift(a, b if isinstance(b, Tensor) else None), lift(b, a)
    out = _binary_data(lambda x, y: x - y, a, b, "subtract")

    def backward(g):
        return (unbroadcast(g, a.shape) if a.requires_grad else None,
                unbroadcast(-g, b.shape) if b.requires_grad else None)

    return result(out, (a, b), backward, "sub")


def mul(a, b):
    a, b = lift(a, b if isinstance(b, Tensor) else None), lift(b, a)
    out = _binary_data(lambda x, y: x * y, a, b, "multiply")

    def backward(g):
        return (unbroadcast(g * b.data, a.shape) if a.requires_grad else None,
                unbroadcast(g * a.data, b.shape) if b.requires_grad else None)

    return result(out, (a, b), backward, "mul")


def div(a, b):
    a, b = lift(a, b if isinstance(b, Tensor) else None), lift(b, a)
    out = _binary_data(lambda x, y: x / y, a, b, "divide")

    def backward(g):
        ga = unbroadcast(g / b.data, a.shape) if a.requires_grad else None
        gb = unbroadcast(-g * out / b.data, b.shape) if b.requires_grad else None
        return ga, gb

    return result(out, (a, b), backward, "div")


def neg(a):
    return result(-a.data, (a,), lambda g: (-g,), "neg")


def power(a, p):
    """``a ** p`` for a scalar exponent ``p``."""
    if isinstance(p, Tensor):
        if p.requires_grad or p.size != 1:
            raise TypeError("power takes a scalar exponent; write exp(p * log(a)) for a tensor exponent")
        p = p.item()
    if not isinstance(p, numbers.Real):
        raise TypeError(f"power takes a scalar exponent, got {type(p).__name__}")
    out = a.data**p

    def backward(g):
        return (g * (p * a.data ** (p - 1)),)

    return result(out, (a,), backward, "pow")


def rpow(a, base):
    """``base ** a`` for a scalar base."""
    return exp(a * float(backend.xp.log(base)))


def matmul(a, b):
    """Matrix product with NumPy's rules, including stacked leading axes:
    ``(K, m, n) @ (K, n, h) -> (K, m, h)`` and broadcasting ``(K, m, n) @ (n, h)``."""
    a, b = lift(a), lift(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul needs tensors with at least one axis, got shapes {a.shape} and {b.shape}")
    if a.ndim == 1 and b.ndim == 1:
        if a.shape != b.shape:
            raise ShapeError(f"cannot matmul shapes {a.shape} and {b.shape}: lengths differ")
        return (a * b).sum()
    if a.ndim == 1:  # a vector is a (1, n) row, as in NumPy, and the row axis is dropped
        out = matmul(a.reshape(1, -1), b)
        return out.reshape(out.shape[:-2] + out.shape[-1:])
    if b.ndim == 1:  # a (n, 1) column, and the column axis is dropped
        out = matmul(a, b.reshape(-1, 1))
        return out.reshape(out.shape[:-1])
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"cannot matmul shapes {a.shape} and {b.shape}: "
            f"inner dimensions {a.shape[-1]} and {b.shape[-2]} differ"
        )
    try:
        out = a.data @ b.data
    except ValueError as exc:
        raise ShapeError(f"cannot matmul shapes {a.shape} and {b.shape}: leading axes do not broadcast") from exc

    def backward(g):
        ga = unbroadcast(g @ b.data.swapaxes(-1, -2), a.shape) if a.requires_grad else None
        gb = unbroadcast(a.data.swapaxes(-1, -2) @ g, b.shape) if b.requires_grad else None
        return ga, gb

    return result(out, (a, b), backward, "matmul")


def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ShapeError(f"axis {ax} is out of range for a tensor with {ndim} axes")
    return tuple(sorted(ax % ndim for ax in axes))


def _expand_reduced(g, axes, shape, keepdims):
    if not keepdims:
        mod = backend.get_array_module(g)
        g = mod.expand_dims(g, axes) if axes else g
    return backend.get_array_module(g).broadcast_to(g, shape)


def sum(a, axis=None, keepdims=False):  # noqa: A001 - the natural name, as in NumPy
    axes = _normalize_axis(axis, a.ndim)
    out = a.data.sum(axis=axes, keepdims=keepdims)

    def backward(g):
        return (_expand_reduced(g, axes, a.shape, keepdims),)

    return result(out, (a,), backward, "sum")


def mean(a, axis=None, keepdims=False):
    axes = _normalize_axis(axis, a.ndim)
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    out = a.data.mean(axis=axes, keepdims=keepdims)

    def backward(g):
        return (_expand_reduced(g / count, axes, a.shape, keepdims),)

    return result(out, (a,), backward, "mean")


def exp(a):
    a = lift(a)
    out = backend.get_array_module(a.data).exp(a.data)
    return result(out, (a,), lambda g: (g * out,), "exp")


def log(a):
    a = lift(a)
    out = backend.get_array_module(a.data).log(a.data)
    return result(out, (a,), lambda g: (g / a.data,), "log")


def sqrt(a):
    a = lift(a)
    out = backend.get_array_module(a.data).sqrt(a.data)
    return result(out, (a,), lambda g: (g * 0.5 / out,), "sqrt")


def abs(a):  # noqa: A001
    """|a|; its gradient at 0 is taken as 0 (the subgradient L1 uses)."""
    a = lift(a)
    mod = backend.get_array_module(a.data)
    return result(mod.abs(a.data), (a,), lambda g: (g * mod.sign(a.data),), "abs")


def maximum(a, b):
    """Elementwise maximum; at ties the gradient is split evenly between the two inputs."""
    a, b = lift(a, b if isinstance(b, Tensor) else None), lift(b, a)
    mod = backend.get_array_module(a.data)
    out = _binary_data(mod.maximum, a, b, "take the maximum of")

    def backward(g):
        share_a = (a.data > b.data) + 0.5 * (a.data == b.data)
        ga = unbroadcast(g * share_a, a.shape) if a.requires_grad else None
        gb = unbroadcast(g * (1.0 - share_a), b.shape) if b.requires_grad else None
        return ga, gb

    return result(out, (a, b), backward, "maximum")


def relu(a):
    mod = backend.get_array_module(a.data)
    out = mod.maximum(a.data, 0)
    return result(out, (a,), lambda g: (g * (a.data > 0),), "relu")


def leaky_relu(a, slope=0.01):
    """max(slope * a, a): the notes' leaky ReLU with slope 0.01 by default."""
    mod = backend.get_array_module(a.data)
    positive = a.data > 0
    out = mod.where(positive, a.data, a.data * slope)
    return result(out, (a,), lambda g: (mod.where(positive, g, g * slope),), "leaky_relu")


def tanh(a):
    out = backend.get_array_module(a.data).tanh(a.data)
    return result(out, (a,), lambda g: (g * (1 - out * out),), "tanh")


def sigmoid_data(x):
    """1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2, which never overflows."""
    mod = backend.get_array_module(x)
    return 0.5 * (1 + mod.tanh(0.5 * x))


def sigmoid(a):
    out = sigmoid_data(a.data)
    return result(out, (a,), lambda g: (g * out * (1 - out),), "sigmoid")


def reshape(a, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        out = a.data.reshape(shape)
    except ValueError as exc:
        raise ShapeError(f"cannot reshape a tensor of shape {a.shape} into {shape}") from exc
    return result(out, (a,), lambda g: (g.reshape(a.shape),), "reshape")


def transpose(a, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = axes or tuple(reversed(range(a.ndim)))
    if sorted(ax % a.ndim for ax in axes) != list(range(a.ndim)):
        raise ShapeError(f"axes {axes} are not a permutation of the {a.ndim} axes of shape {a.shape}")
    inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i] % a.ndim))
    out = a.data.transpose(axes)
    return result(out, (a,), lambda g: (g.transpose(inverse),), "transpose")


def _is_basic_index(index):
    """Basic indexing (ints, slices, None, ...) selects each element at most once."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    if isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    out = a.data[index]
    basic = _is_basic_index(index)

    def backward(g):
        mod = backend.get_array_module(g)
        grad = mod.zeros_like(a.data)
        if basic:
            grad[index] = g
        else:  # repeated fancy indices must accumulate
            backend.scatter_add(grad, index, g)
        return (grad,)

    return result(out, (a,), backward, "getitem")


def concatenate(tensors, axis=0):
    tensors = [lift(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    mod = backend.get_array_module(tensors[0].data)
    try:
        out = mod.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as exc:
        shapes = ", ".join(str(t.shape) for t in tensors)
        raise ShapeError(f"cannot concatenate shapes {shapes} along axis {axis}") from exc
    ax = axis % out.ndim
    bounds, start = [], 0
    for t in tensors:
        bounds.append((start, start + t.shape[ax]))
        start += t.shape[ax]

    def backward(g):
        grads = []
        for t, (lo, hi) in zip(tensors, bounds):
            index = (slice(None),) * ax + (slice(lo, hi),)
            grads.append(g[index] if t.requires_grad else None)
        return tuple(grads)

    return result(out, tuple(tensors), backward, "concatenate")


def stack(tensors, axis=0):
    """Stack tensors of equal shape on a new axis (built from reshape and concatenate)."""
    tensors = [lift(t) for t in tensors]
    ax = axis % (tensors[0].ndim + 1)
    expanded = [t.reshape(t.shape[:ax] + (1,) + t.shape[ax:]) for t in tensors]
    return concatenate(expanded, axis=ax)


def _attach():
    T = Tensor
    T.__add__ = add
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = sub
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = mul
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = div
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__neg__ = neg
    T.__pos__ = lambda a: a
    T.__pow__ = power
    T.__rpow__ = rpow
    T.__matmul__ = matmul
    T.__rmatmul__ = lambda a, b: matmul(b, a)
    T.__getitem__ = getitem
    T.sum = sum
    T.mean = mean
    T.exp = exp
    T.log = log
    T.sqrt = sqrt
    T.abs = abs
    T.relu = relu
    T.leaky_relu = leaky_relu
    T.tanh = tanh
    T.sigmoid = sigmoid
    T.reshape = reshape
    T.transpose = transpose
    T.T = property(lambda a: transpose(a))


_attach()
