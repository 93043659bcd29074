"""The notes' fused ops, each with its closed-form backward.

Stateless functions: layers that own parameters (``caviar.nn``) call these in one line.
Rows are examples: logits and activations are ``(m, n)``, or ``(K, m, n)`` for a population of
K models stacked on a leading axis; the examples axis is always ``-2`` and the feature/class
axis ``-1``.
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy

from . import backend, kernels
from .autodiff import Tensor, is_grad_enabled, lift, result, unbroadcast
from .errors import GradientCheckError, ShapeError
from .ops import sigmoid_data

# -- softmax ---------------------------------------------------------------------------------


ROW_LOOP = 32  # classes up to which a row's max is taken column by column


def row_max(z, axis=-1):
    """The max along ``axis`` (kept as a length-1 axis). For a few classes on the last axis it
    is taken column by column: NumPy reduces a short last axis one row at a time (7x slower on
    (32, 64, 10) logits). A max is exact in any order, so both give the same values."""
    n = z.shape[axis] if z.ndim else 0
    if axis not in (-1, z.ndim - 1) or not 1 < n <= ROW_LOOP:
        return z.max(axis=axis, keepdims=True)
    mod = backend.get_array_module(z)
    out = z[..., 0].copy()
    for c in range(1, n):
        mod.maximum(out, z[..., c], out=out)
    return out[..., None]


def _log_softmax_data(z, axis=-1):
    mod = backend.get_array_module(z)
    shifted = z - row_max(z, axis)  # the row max: exp never overflows
    return shifted - mod.log(mod.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z, axis=-1):
    """exp(z) / sum(exp(z)) along ``axis``, computed after subtracting the row max."""
    z = lift(z)
    mod = backend.get_array_module(z.data)
    e = mod.exp(z.data - row_max(z.data, axis))
    out = e / e.sum(axis=axis, keepdims=True)

    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return result(out, (z,), backward, "softmax")


def log_softmax(z, axis=-1):
    """log(softmax(z)), without ever taking log(0)."""
    z = lift(z)
    mod = backend.get_array_module(z.data)
    out = _log_softmax_data(z.data, axis)

    def backward(g):
        return (g - mod.exp(out) * g.sum(axis=axis, keepdims=True),)

    return result(out, (z,), backward, "log_softmax")


def one_hot(labels, n_classes, dtype=None):
    """Class indices of any shape -> one-hot array with a trailing axis of ``n_classes``."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    mod = backend.get_array_module(labels)
    labels = mod.asarray(labels)
    return (labels[..., None] == mod.arange(n_classes)).astype(dtype or backend.DEFAULT_DTYPE)


def _class_targets(logits, labels):
    """Labels as class indices of shape ``logits.shape[:-1]`` (validated), or None with the
    one-hot / soft targets shaped like ``logits``: (indices, targets)."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    mod = backend.get_array_module(logits)
    labels = mod.asarray(labels)
    n_classes = logits.shape[-1]
    if labels.shape == logits.shape and labels.dtype.kind == "f":
        return None, labels.astype(logits.dtype, copy=False)
    if labels.shape != logits.shape[:-1]:
        raise ShapeError(
            f"labels of shape {labels.shape} fit neither logits of shape {logits.shape} (one-hot) "
            f"nor its class indices (shape {logits.shape[:-1]})"
        )
    if labels.dtype.kind == "f":
        if not bool((labels == mod.round(labels)).all()):
            raise ValueError("class indices must be whole numbers; give one-hot labels as a float array shaped like the logits")
        labels = labels.astype(mod.int64)
    return class_indices(labels, n_classes), None


def class_indices(labels, n_classes):
    """Integer class indices, refused where one is outside 0 .. n_classes - 1 (a compiled
    pass would read outside the logits)."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"label {bad} is outside the classes 0..{n_classes - 1} of logits with {n_classes} columns")
    return labels


def class_cross_entropy(log_p, indices, probs=False):
    """-log p of each example's class, and with ``probs`` also Yhat - Y (the softmax gradient),
    from log-probabilities and class indices. The same values as the notes' -sum(y log yhat)
    with y one-hot and exp(log_p) - y: the other classes only add zeros, and subtracting 1 where
    y is 1 and 0 elsewhere is subtracting 1 from one entry. No one-hot array is made."""
    mod = backend.get_array_module(log_p)
    index = indices[..., None]
    losses = -mod.take_along_axis(log_p, index, axis=-1)[..., 0]
    if not probs:
        return losses, None
    p = mod.exp(log_p)
    flat = p.reshape(-1, p.shape[-1])
    flat[mod.arange(len(flat)), mod.broadcast_to(indices, p.shape[:-1]).reshape(-1)] -= 1
    return losses, p


def class_cross_entropy_data(z, indices, probs=False):
    """Each example's -log softmax(z) of its class (class indices broadcasting against
    ``z.shape[:-1]``), and with ``probs`` Yhat - Y: in compiled passes where they run, else
    through ``log_softmax``. The same values either way."""
    if z.ndim <= 3 and z.shape[-1] <= kernels.ROW_BLOCK and kernels.usable(z, min_size=kernels.LOGITS_MIN_SIZE):
        return _compiled_class_cross_entropy(z, indices, probs)
    return class_cross_entropy(_log_softmax_data(z), backend.get_array_module(z).broadcast_to(indices, z.shape[:-1]),
                               probs)


def _compiled_class_cross_entropy(z, indices, probs):
    """``class_cross_entropy(_log_softmax_data(z), indices, probs)`` in four compiled passes
    and NumPy's exp and log between them (a compiler's exp and log round differently): the
    row max and shift, the row sums of exp (in NumPy's pairwise order), log p with each
    example's loss, then 1 subtracted at each example's class of exp(log p). The same values."""
    z3 = kernels.stacked(z)
    K, m, _ = z3.shape
    labels = indices.reshape((-1, m))  # (1, m) where the members share them: the kernels read row 0
    if len(labels) not in (1, K):
        labels = numpy.broadcast_to(labels, (K, m))  # raises for labels of another shape
    shifted = numpy.empty_like(z3)
    kernels.run("softmax_shift", z3, shifted)
    e = numpy.exp(shifted)
    sums = numpy.empty((K, m), dtype=z.dtype)
    kernels.run("row_sums", e, sums, kernels.constants(z.dtype, -0.0))
    numpy.log(sums, out=sums)
    losses = numpy.empty((K, m), dtype=z.dtype)
    kernels.run("softmax_log_p", shifted, sums, labels, e, losses)  # log p written over exp
    if not probs:
        return losses.reshape(z.shape[:-1]), None
    p = numpy.exp(e, out=shifted)
    kernels.run("minus_one_at", p, labels, kernels.constants(z.dtype, 1))
    return losses.reshape(z.shape[:-1]), p.reshape(z.shape)


def softmax_cross_entropy(logits, labels, reduction="mean"):
    """Cross-entropy of softmax(logits) against labels: mean over examples of -sum y log yhat.

    ``labels`` are class indices (shape ``logits.shape[:-1]``) or one-hot / soft targets shaped
    like ``logits``. The gradient is the notes' dZ = Yhat - Y (divided by m for the mean),
    computed from ``log_softmax`` so log(0) is never taken. ``reduction="none"`` gives one loss
    per example, ``"sum"`` their sum.
    """
    logits = lift(logits)
    z = logits.data
    indices, y = _class_targets(z, labels)
    if indices is not None:
        losses, probs_minus_y = class_cross_entropy_data(z, indices, logits.requires_grad)
    else:
        log_p = _log_softmax_data(z)
        losses = -(y * log_p).sum(axis=-1)
        probs_minus_y = backend.get_array_module(z).exp(log_p) - y if logits.requires_grad else None
    if reduction == "none":
        out = losses
        backward = lambda g: (probs_minus_y * g[..., None],)  # noqa: E731
    else:
        out, scale = _reduce_scalar(losses, reduction, "softmax_cross_entropy")
        backward = lambda g: (probs_minus_y * (g * scale),)  # noqa: E731
    return result(out, (logits,), backward, "softmax_cross_entropy")


def _reduce_scalar(losses, reduction, op):
    mod = backend.get_array_module(losses)
    if reduction == "sum":
        return mod.asarray(losses.sum()), 1.0
    if reduction == "mean":
        return mod.asarray(losses.mean()), 1.0 / max(losses.size, 1)
    raise ValueError(f"unknown reduction {reduction!r} for {op}; expected 'mean', 'sum' or 'none'")


def sigmoid_cross_entropy(logits, labels, reduction="mean"):
    """Binary cross-entropy of sigmoid(logits): -(y log a + (1 - y) log(1 - a)).

    Computed as max(z, 0) - z*y + log(1 + exp(-|z|)), which neither overflows nor takes log(0)
    at |z| = 1000. ``labels`` (0/1 or probabilities) have the logits' shape or as many entries.
    The gradient is sigmoid(z) - y, over the number of entries for the mean.
    """
    logits = lift(logits)
    z = logits.data
    mod = backend.get_array_module(z)
    y = labels.data if isinstance(labels, Tensor) else mod.asarray(labels)
    if y.shape != z.shape:
        if y.size != z.size:
            raise ShapeError(f"labels of shape {y.shape} do not match logits of shape {z.shape}")
        y = y.reshape(z.shape)
    y = y.astype(z.dtype, copy=False)
    losses = mod.maximum(z, 0) - z * y + mod.log1p(mod.exp(-mod.abs(z)))
    delta = sigmoid_data(z) - y if logits.requires_grad else None
    if reduction == "none":
        out = losses
        backward = lambda g: (delta * g,)  # noqa: E731
    else:
        out, scale = _reduce_scalar(losses, reduction, "sigmoid_cross_entropy")
        backward = lambda g: (delta * (g * scale),)  # noqa: E731
    return result(out, (logits,), backward, "sigmoid_cross_entropy")


# -- layers ----------------------------------------------------------------------------------

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "linear")
LEAKY_SLOPE = 0.01  # leaky ReLU's slope for z < 0


def check_activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return name


def _activate_inplace(z, name, slope):
    """g(z), written over z (a fresh array the caller owns)."""
    mod = backend.get_array_module(z)
    if name == "relu":
        mod.maximum(z, 0, out=z)
    elif name == "leaky_relu":
        mod.multiply(z, slope, out=z, where=z < 0)
    elif name == "tanh":
        mod.tanh(z, out=z)
    elif name == "sigmoid":
        z[...] = sigmoid_data(z)
    return z


def _activation_grad(g, out, name, slope):
    """dZ = dA * g'(Z), with g'(Z) written from A = g(Z) so Z need not be kept."""
    if name == "relu":
        return g * (out > 0)
    if name == "leaky_relu":
        return backend.get_array_module(g).where(out > 0, g, g * slope)
    if name == "tanh":
        return g * (1 - out * out)
    if name == "sigmoid":
        return g * out * (1 - out)
    return g


def _bias_activate(z, b, name, slope, inplace=True):
    """g(z + b), written over z (a fresh array the caller owns) or, with ``inplace=False``, into
    a new array; b may be None. ReLU runs as one compiled pass where it can (``caviar.kernels``),
    with the same values."""
    K = z.shape[0] if z.ndim == 3 else 1
    if (name == "relu" and z.ndim <= 3 and kernels.usable(z)
            and (b is None or (b.dtype == z.dtype and b.size == K * z.shape[-1]))):
        out = z if inplace else numpy.empty_like(z)
        kernels.run("bias_relu", kernels.stacked(z), kernels.per_unit(z if b is None else b, K), b is not None,
                    kernels.constants(z.dtype, 0), kernels.stacked(out))
        return out
    if not inplace:
        z = z.copy()
    if b is not None:
        z += b
    return _activate_inplace(z, name, slope)


_NO_MASK = numpy.empty((1, 1, 1), dtype=numpy.bool_)  # relu_grad's kept where there is none


def _backprop_activation(g, out, name, slope, b_shape=None, scale=None, drop=None, overwrite=False):
    """(dZ, db): dZ = dA * g'(Z), and db = dZ summed over the examples when ``b_shape`` is
    given; with ``scale`` (the dropout above the activation), dA is taken as g * scale. For
    ReLU, one compiled pass where it can, and for a linear layer's db one pass over dZ = dA: NumPy sums over the examples row after row, which the
    kernels repeat, except over a single unit (h = 1), where NumPy sums pairwise and NumPy runs.
    ``drop``: ``dropout_over``'s (inverses, kept), where ``out`` is that dropout's output (above
    a ReLU), for the scale that dropout used, in the ReLU's pass. ``overwrite``: g is a fresh array the caller owns,
    and the ReLU's kernel writes dZ over it."""
    h = g.shape[-1]
    K = g.shape[0] if g.ndim == 3 else 1
    compiled_db = b_shape is None or (h >= 2 and math.prod(b_shape) == K * h)
    if drop is not None and name != "relu":
        raise ValueError(f"dropout_over's scale is for a ReLU's gradient, not {name}'s")
    if scale is not None:  # NumPy's product, before the ReLU's pass
        g = g * scale
    if (name == "relu" and g.ndim <= 3 and g.shape == out.shape and compiled_db and kernels.usable(g, out)
            and (drop is None or g.ndim == 3)):
        dz = g if overwrite else numpy.empty_like(g)
        db = numpy.empty(b_shape, dtype=g.dtype) if b_shape is not None else None
        inverses, kept = drop if drop is not None else (numpy.empty((K, 1), g.dtype), _NO_MASK)
        kernels.run("relu_grad_over" if overwrite else "relu_grad", kernels.stacked(g), kernels.stacked(out),
                    *(() if overwrite else (kernels.stacked(dz),)),
                    db.reshape(K, -1) if b_shape is not None else numpy.empty((K, 1), g.dtype), b_shape is not None,
                    kernels.constants(g.dtype, 0, 1), inverses, kept, drop is not None)
        return dz, db
    if drop is not None:  # the scale that dropout used
        inverses, kept = drop
        g = g * numpy.where(kept, inverses.reshape(-1, 1, 1), g.dtype.type(0))
    if name == "linear" and b_shape is not None and g.ndim <= 3 and compiled_db and kernels.usable(g):
        db = numpy.empty(b_shape, dtype=g.dtype)
        kernels.run("column_sums", kernels.stacked(g), db.reshape(K, -1))
        return g, db
    dz = _activation_grad(g, out, name, slope)
    return dz, (unbroadcast(dz, b_shape) if b_shape is not None else None)


def activation(z, name, slope=LEAKY_SLOPE):
    """A = g(Z) for g in relu, leaky_relu (slope 0.01), tanh, sigmoid, linear."""
    check_activation(name)
    z = lift(z)
    if name == "linear":
        return z
    out = _bias_activate(z.data, None, name, slope, inplace=False)
    return result(out, (z,), lambda g: (_backprop_activation(g, out, name, slope)[0],), name)


def dense(a, W, b=None, activation="linear", slope=LEAKY_SLOPE):
    """One layer of the notes, fused: A = g(A_prev @ W + b).

    Backward is the notes' layer backprop: dZ = dA * g'(Z), dW = A_prev^T dZ, db = sum of dZ
    over examples, dA_prev = dZ W^T (each only if its input needs it). Shapes: A_prev (m, n_in)
    or (K, m, n_in), W (n_in, n_out) or (K, n_in, n_out), b (n_out,) or (K, 1, n_out).
    """
    check_activation(activation)
    a, W = lift(a), lift(W)
    if a.shape[-1] != W.shape[-2]:
        raise ShapeError(f"a layer with weights of shape {W.shape} needs inputs with {W.shape[-2]} columns, got shape {a.shape}")
    try:
        # A population's first layer, (m, n) @ (K, n, h), stays K products of a single model's
        # shape: one wide (m, n) @ (n, K*h) product, with the layout changes it needs, is no
        # faster on the default search's shapes (benchmarks/population_floor.py: 0.98-1.15x the
        # time), and would change the float32 rounding of members against their solo runs.
        z = a.data @ W.data
    except ValueError as exc:
        raise ShapeError(f"cannot apply weights of shape {W.shape} to inputs of shape {a.shape}") from exc
    parents = (a, W)
    if b is not None:
        b = lift(b)
        parents = (a, W, b)
    out = _bias_activate(z, None if b is None else b.data, activation, slope)

    def backward(g):
        da, dW, db = dense_backward(g, a.data, W.data, out, activation, slope,
                                    b.shape if b is not None and b.requires_grad else None, a.requires_grad,
                                    W.requires_grad)
        if b is None:
            return da, dW
        return da, dW, db

    return result(out, parents, backward, f"dense[{activation}]")


def dense_backward(g, a, W, out, activation, slope=LEAKY_SLOPE, b_shape=None, need_da=True, need_dW=True,
                   scale=None, drop=None, overwrite=False):
    """The notes' layer backprop on arrays, from dA = ``g`` (times ``scale``, a dropout's above
    the layer, where given, or the scale of ``drop``, ``dropout_over``'s) and the layer's input
    ``a``, weights ``W`` and output ``out`` = g(Z): (dA_prev, dW, db), each None unless asked for
    (db where ``b_shape`` is given). ``dense``'s backward, and a population's tape-free step
    (``overwrite``: g is a fresh array the caller owns, which dZ may be written over)."""
    dz, db = _backprop_activation(g, out, activation, slope, b_shape, scale, drop, overwrite)
    da = dz @ W.swapaxes(-1, -2) if need_da else None
    dW = unbroadcast(a.swapaxes(-1, -2) @ dz, W.shape) if need_dW else None
    return da, dW, db


def mean_squared_error(yhat, y, reduction="mean"):
    """Mean of (yhat - y)^2 over every entry; y of yhat's shape or with as many entries."""
    yhat = lift(yhat)
    mod = backend.get_array_module(yhat.data)
    target = y.data if isinstance(y, Tensor) else mod.asarray(y)
    if target.shape != yhat.shape:
        if target.size != yhat.size:
            raise ShapeError(f"targets of shape {target.shape} do not match predictions of shape {yhat.shape}")
        target = target.reshape(yhat.shape)
    diff = yhat.data - target.astype(yhat.dtype, copy=False)
    if reduction == "none":
        return result(diff * diff, (yhat,), lambda g: (2 * diff * g,), "mean_squared_error")
    out, scale = _reduce_scalar(diff * diff, reduction, "mean_squared_error")
    return result(out, (yhat,), lambda g: (2 * diff * (g * scale),), "mean_squared_error")


# -- batch norm ------------------------------------------------------------------------------


def batch_norm(z, gamma, beta, running=None, training=True, momentum=0.9, epsilon=1e-5):
    """The notes' batch norm of Z (before the activation), over the examples axis (-2).

    Training mode: z_norm = (z - mu) / sqrt(sigma^2 + epsilon) with the mini-batch mean and
    biased variance, then gamma * z_norm + beta; ``running = (mean, var)`` arrays are updated in
    place as exponentially weighted averages, ``running = momentum * running + (1 - momentum)
    * batch``. Eval mode normalizes with the running estimates, so one example at a time gives
    the same answer as a batch.

    Conventions: ``momentum`` is the notes' beta of the weighted average (0.9 by default),
    which is Keras's ``momentum``; PyTorch's ``momentum`` is ``1 - momentum`` (0.1). PyTorch
    also feeds the *unbiased* batch variance (times m / (m - 1)) into its running variance,
    where caviar, Keras and the notes use the biased one.

    Backward is the closed-form batch-norm gradient,
    dz = (1/m) / sigma * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)).
    """
    z, gamma, beta = lift(z), lift(gamma), lift(beta)
    if z.ndim < 2:
        raise ShapeError(f"batch_norm needs z of shape (m, n) or (K, m, n), got {z.shape}")
    if training:
        out, xhat, inv_std = batch_norm_train(z.data, gamma.data, beta.data, running, momentum, epsilon)

        def backward(g):
            dz, dgamma, dbeta = batch_norm_grad(g, xhat, gamma.data, inv_std)
            if beta.shape != gamma.shape:
                dbeta = unbroadcast(g, beta.shape)
            return (dz if z.requires_grad else None, dgamma if gamma.requires_grad else None,
                    dbeta if beta.requires_grad else None)

        return result(out, (z, gamma, beta), backward, "batch_norm")
    if running is None:
        raise ValueError("batch norm in eval mode needs the running (mean, var) estimates")
    mod = backend.get_array_module(z.data)
    run_mean, run_var = running
    stat_shape = z.shape[:-2] + (1, z.shape[-1]) if run_mean.ndim > 1 else (z.shape[-1],)
    inv_std = 1.0 / mod.sqrt(run_var.reshape(stat_shape) + epsilon)
    K, h = (z.shape[0] if z.ndim == 3 else 1), z.shape[-1]
    if (not (is_grad_enabled() and (z.requires_grad or gamma.requires_grad or beta.requires_grad))
            and _batch_norm_compiled(z.data, gamma.data, beta.data)
            and kernels.usable(z.data, run_mean, inv_std, contiguous=False) and run_mean.size == K * h):
        # evaluation (nothing to differentiate): one pass, the same values, no xhat kept
        out = numpy.empty_like(z.data)
        kernels.run("batch_norm_eval", kernels.stacked(z.data), kernels.per_unit(run_mean, K),
                    kernels.per_unit(inv_std, K), kernels.per_unit(gamma.data, K), kernels.per_unit(beta.data, K),
                    kernels.stacked(out))
        return result(out, (z, gamma, beta), None, "batch_norm")
    xhat = (z.data - run_mean.reshape(stat_shape)) * inv_std
    out = gamma.data * xhat + beta.data

    def backward(g):
        dgamma = unbroadcast(g * xhat, gamma.shape) if gamma.requires_grad else None
        dbeta = unbroadcast(g, beta.shape) if beta.requires_grad else None
        return (g * gamma.data * inv_std if z.requires_grad else None), dgamma, dbeta

    return result(out, (z, gamma, beta), backward, "batch_norm")


def _batch_norm_compiled(z, gamma, beta):
    """Whether batch norm's kernels take these arrays: (m, h) or (K, m, h) of a float dtype
    with per-unit gamma and beta of it, h >= 2 (the kernels sum over the examples row after
    row, as NumPy does except over a single unit, where it sums pairwise)."""
    K = z.shape[0] if z.ndim == 3 else 1
    return (z.ndim in (2, 3) and z.shape[-1] >= 2 and kernels.usable(z) and gamma.dtype == beta.dtype == z.dtype
            and gamma.size == beta.size == K * z.shape[-1])


def batch_norm_train(z, gamma, beta, running=None, momentum=0.9, epsilon=1e-5, relu=False, overwrite=False):
    """Training-mode batch norm on arrays (``batch_norm``'s forward, which a population's step
    calls as it is): (out, xhat, inv_std) with the mini-batch statistics, and ``running =
    (mean, var)`` updated in place; with ``relu``, out is the ReLU of batch norm's output (the
    activation layer above it, in the same pass). One compiled pass where it can, with the
    same values (``caviar.kernels``); the running estimates in it too where they are
    contiguous arrays of z's dtype. ``overwrite``: z is a fresh array the caller owns and no
    longer needs, and the kernel writes xhat over it."""
    m, h = z.shape[-2], z.shape[-1]
    if m < 2:
        raise ValueError("batch norm in training mode needs at least 2 examples in a mini-batch, got 1")
    inside = False  # the running estimates updated in the kernel
    if _batch_norm_compiled(z, gamma, beta):
        K = z.shape[0] if z.ndim == 3 else 1
        out, xhat = numpy.empty_like(z), (z if overwrite else numpy.empty_like(z))
        mu, var, inv_std = (numpy.empty(z.shape[:-2] + (1, h), dtype=z.dtype) for _ in range(3))
        rows = [mu.reshape(K, h), var.reshape(K, h)]
        inside = running is not None and kernels.usable(z, *running) and all(r.size == K * h for r in running)
        kernels.run("batch_norm_over" if overwrite else "batch_norm", kernels.stacked(z), kernels.per_unit(gamma, K),
                    kernels.per_unit(beta, K), kernels.constants(z.dtype, m, epsilon, 1.0, momentum, 1 - momentum, 0),
                    kernels.stacked(out), *(() if overwrite else (kernels.stacked(xhat),)), *rows,
                    inv_std.reshape(K, h), *([r.reshape(K, h) for r in running] if inside else rows), inside, relu)
    else:
        mod = backend.get_array_module(z)
        mu = z.mean(axis=-2, keepdims=True)
        centered = z - mu
        var = (centered * centered).mean(axis=-2, keepdims=True)
        inv_std = 1.0 / mod.sqrt(var + epsilon)
        xhat = centered * inv_std
        out = gamma * xhat + beta
        if relu:
            out = _bias_activate(out, None, "relu", LEAKY_SLOPE)
    if running is not None and not inside:
        run_mean, run_var = running
        run_mean *= momentum
        run_mean += (1 - momentum) * mu.reshape(run_mean.shape)
        run_var *= momentum
        run_var += (1 - momentum) * var.reshape(run_var.shape)
    return out, xhat, inv_std


def batch_norm_relu_dropout(z, gamma, beta, running, momentum, epsilon, rngs, keep_probs, constants=None):
    """``batch_norm_train(z, ..., relu=True, overwrite=True)`` then ``dropout_over`` on its
    output, in the kernel's last pass: for a population's fresh linear product ``z`` (K, m, h),
    whose xhat it writes over z. Returns (out, xhat, inv_std, ``dropout_over``'s (inverses,
    kept)), the same values, draws and bools as the two one after the other; None where the
    kernel does not run (nothing is drawn or updated then)."""
    m, h = z.shape[-2], z.shape[-1]
    if m < 2 or z.ndim != 3 or not _batch_norm_compiled(z, gamma, beta):
        return None
    K = z.shape[0]
    if running is None or not (kernels.usable(z, *running) and all(r.size == K * h for r in running)):
        return None
    keeps = [float(p) for p in keep_probs]
    constants = mask_constants(keeps, z.dtype) if constants is None else constants
    keys, thresholds, inverses = _mask_draws(rngs, keeps, z.dtype, constants)
    out, kept = numpy.empty_like(z), numpy.empty(z.shape, dtype=numpy.bool_)
    mu, var, inv_std = numpy.empty((3, K, 1, h), dtype=z.dtype)
    kernels.run("batch_norm_relu_dropout_over", z, kernels.per_unit(gamma, K), kernels.per_unit(beta, K),
                kernels.constants(z.dtype, m, epsilon, 1.0, momentum, 1 - momentum, 0), out, mu.reshape(K, h),
                var.reshape(K, h), inv_std.reshape(K, h), *[r.reshape(K, h) for r in running], True, keys, thresholds,
                inverses, kept)
    return out, z, inv_std, (inverses, kept)


def batch_norm_grad(g, xhat, gamma, inv_std, out=None, scale=None, drop=None, overwrite=False):
    """(dz, dgamma, dbeta) of training-mode batch norm from the upstream gradient ``g`` and
    ``batch_norm_train``'s xhat and inv_std: the closed form, dgamma and dbeta shaped as gamma.
    With ``out`` (the ReLU output of ``batch_norm_train(relu=True)``), g is the gradient at the
    ReLU's output, taken as g * ``scale`` where a dropout's is given (or ``drop``'s, where
    ``dropout_over`` wrote the dropout over ``out``), and backpropagated through the ReLU
    first: in the loop of the compiled kernel's first pass where it runs, else the ReLU
    gradient's own pass. The same values either way. ``overwrite``: g is a fresh array the
    caller owns, and the gradients are written over it."""
    m = xhat.shape[-2]
    compiled = _batch_norm_compiled(xhat, gamma, gamma) and kernels.usable(g, xhat) and g.shape == xhat.shape
    K, h = (xhat.shape[0] if xhat.ndim == 3 else 1), xhat.shape[-1]
    if (out is not None and compiled and out.shape == g.shape and kernels.usable(g, out)
            and (drop is None or g.ndim == 3)):  # the ReLU's gradient in the loop of the first pass
        if scale is not None:
            g, overwrite = g * scale, True
        dz = g if overwrite else g.copy()  # the kernel writes over its g
        dgamma, dbeta = numpy.empty(gamma.shape, g.dtype), numpy.empty(gamma.shape, g.dtype)
        common = (kernels.stacked(dz), kernels.stacked(xhat), kernels.per_unit(gamma, K), inv_std.reshape(K, h),
                  kernels.constants(g.dtype, m, 0, 1), dgamma.reshape(K, h), dbeta.reshape(K, h),
                  *(numpy.empty((K, h), g.dtype) for _ in range(3)), kernels.stacked(out))
        if drop is None:
            kernels.run("relu_batch_norm_grad_over_plain", *common)
        else:
            kernels.run("relu_batch_norm_grad_over", *common, *drop)
        return dz, dgamma, dbeta
    if out is not None:  # the ReLU's gradient first, where batch norm's kernel does not take it
        g = _backprop_activation(g, out, "relu", LEAKY_SLOPE, scale=scale, drop=drop, overwrite=overwrite)[0]
        overwrite = True  # that pass's dz is this function's own
    elif scale is not None:
        g, overwrite = g * scale, True
    if _batch_norm_compiled(xhat, gamma, gamma) and kernels.usable(g, xhat) and g.shape == xhat.shape:
        dz = g if overwrite else numpy.empty_like(g)
        dgamma, dbeta = numpy.empty(gamma.shape, g.dtype), numpy.empty(gamma.shape, g.dtype)
        kernels.run("batch_norm_grad_over" if overwrite else "batch_norm_grad", kernels.stacked(g),
                    kernels.stacked(xhat), kernels.per_unit(gamma, K), inv_std.reshape(K, h),
                    kernels.constants(g.dtype, m), *(() if overwrite else (kernels.stacked(dz),)),
                    dgamma.reshape(K, h), dbeta.reshape(K, h), *(numpy.empty((K, h), g.dtype) for _ in range(3)))
        return dz, dgamma, dbeta
    dgamma, dbeta = unbroadcast(g * xhat, gamma.shape), unbroadcast(g, gamma.shape)
    dxhat = g * gamma
    dz = (inv_std / m) * (m * dxhat - dxhat.sum(axis=-2, keepdims=True)
                          - xhat * (dxhat * xhat).sum(axis=-2, keepdims=True))
    return dz, dgamma, dbeta


# -- dropout ---------------------------------------------------------------------------------

class _Checking(threading.local):
    """Gradient checks under way in this thread (a check in one thread never refuses another
    thread's dropout), and what the innermost one checks."""

    depth = 0
    reason = ""


_checking = _Checking()


@contextlib.contextmanager
def forbid_dropout(reason):
    """Make training-mode dropout raise ``GradientCheckError`` inside the block."""
    previous = _checking.reason
    _checking.depth += 1
    _checking.reason = reason
    try:
        yield
    finally:
        _checking.depth -= 1
        _checking.reason = previous


def refuse_if_checking(keep_prob):
    """Training-mode dropout inside a gradient check is an error: J would not be consistent."""
    if _checking.depth:
        raise GradientCheckError(
            f"dropout with keep_prob={keep_prob} in training mode makes J inconsistent, so its gradient "
            f"cannot be checked ({_checking.reason}); check with dropout off (training=False or keep_prob=1)"
        )


def check_keep_prob(keep_prob):
    if not (isinstance(keep_prob, (int, float)) and 0.0 < keep_prob <= 1.0):
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}")
    return float(keep_prob)


def dropout(a, keep_prob, rng=None, training=True):
    """Inverted dropout, exactly as in the notes: d = rand < keep_prob; a * d / keep_prob.

    The identity when not training or when ``keep_prob == 1``; backward uses the same mask.
    ``rng`` is a seeded generator from ``caviar.backend.rng``; the mask's uniforms are
    ``dropout_mask``'s.
    """
    keep_prob = check_keep_prob(keep_prob)
    a = lift(a)
    if not training or keep_prob == 1.0:
        return a
    refuse_if_checking(keep_prob)
    out, scale = dropout_mask(a.data, [backend.rng(rng)], [keep_prob])
    return result(out, (a,), lambda g: (g * scale,), "dropout")


# SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014, as
# in Vigna's splitmix64.c): the stream a dropout mask's uniforms come from
_GOLDEN = numpy.uint64(0x9E3779B97F4A7C15)
_MIX1 = numpy.uint64(0xBF58476D1CE4E5B9)
_MIX2 = numpy.uint64(0x94D049BB133111EB)


def dropout_bits(keys, n):
    """(K, n) uint64: outputs 1 .. n of SplitMix64 from each member's key (the state before
    its first output), in NumPy's wrapping uint64 arithmetic."""
    z = numpy.arange(1, n + 1, dtype=numpy.uint64) * _GOLDEN + numpy.asarray(keys, dtype=numpy.uint64).reshape(-1, 1)
    z ^= z >> numpy.uint64(30)
    z *= _MIX1
    z ^= z >> numpy.uint64(27)
    z *= _MIX2
    z ^= z >> numpy.uint64(31)
    return z


def dropout_mask(a, rngs, keep_probs, keep=None, inverse=None):
    """(a * scale, scale) for inverted dropout, member k's mask drawn with ``rngs[k]`` and kept
    with probability ``keep_probs[k]`` (a single network is one member): scale = 1/keep where
    rand < keep, else 0, the notes' d = rand < keep_prob; a * d / keep_prob, 1/keep rounded to
    a's dtype. A member with keep_prob 1 draws nothing and keeps every unit. ``keep`` and
    ``inverse`` are the GPU's (K, 1, 1) arrays of keep_probs and their inverses, which a
    population builds once where its data is (default: made here).

    On NumPy, a mask costs one draw from the member's generator, its key: the uniforms are
    rand = (x >> 11) / 2**53 for SplitMix64's outputs x (``dropout_bits``) taken over the
    member's elements in C order, so rand < keep is x >> 11 < ceil(keep * 2**53), in integers.
    That stream is compiled into the product's pass (one pass, no draws array: 0.07 ms where
    NumPy's float32 draws alone took 0.86 ms on (10, 128, 256) here), and NumPy's uint64
    arithmetic is its reference (the same masks, ``tests/test_kernels.py``). On CuPy, the
    uniforms are the member's own generator's draws (``rng.random``)."""
    dtype, K = a.dtype, len(rngs)
    keeps = [float(p) for p in keep_probs]
    if not isinstance(a, numpy.ndarray):  # the GPU: its generator's draws
        if keep is None and K == 1:
            keep, inverse = keeps[0], 1.0 / keeps[0]
        elif keep is None:
            keep = backend.xp.asarray(keeps).reshape(-1, 1, 1)
            inverse = backend.xp.asarray([1.0 / p for p in keeps]).reshape(-1, 1, 1)
        # a member that keeps every unit draws nothing: its rows must be 0 (kept), not empty's
        # leftovers (which gave such a member random masks beside members that drop units)
        draws = (backend.xp.empty if max(keeps) < 1.0 else backend.xp.zeros)(a.shape, dtype=dtype)
        rows = draws.reshape((K,) + a.shape) if K == 1 else draws
        for k in (k for k in range(K) if keeps[k] < 1.0):  # rng.random(shape, dtype): CuPy needs the
            rngs[k].random(rows.shape[1:], dtype=dtype, out=rows[k])  # size with out, or draws one value
        return dropout_scale(a, draws, keep, inverse)
    keys, thresholds, inverses = _mask_draws(rngs, keeps, dtype)
    rows = a.reshape(K, -1, a.shape[-1] if a.ndim else 1)  # member k's elements in C order
    if kernels.usable(rows, min_size=1):
        out, scale = numpy.empty_like(rows), numpy.empty_like(rows)
        kernels.run("dropout", rows, keys, thresholds, inverses, kernels.constants(dtype, 0), out, scale)
        return out.reshape(a.shape), scale.reshape(a.shape)
    kept = (dropout_bits(keys, rows[0].size) >> numpy.uint64(11)) < thresholds
    scale = numpy.where(kept, inverses, dtype.type(0)).astype(dtype, copy=False).reshape(a.shape)
    return a * scale, scale


def mask_constants(keeps, dtype):
    """(thresholds, inverses, zero) of the masks with keep probabilities ``keeps``: each
    (K, 1), ceil(keep * 2**53) and 1/keep rounded to ``dtype``, and 0 in ``dtype`` (the
    kernels' constant), which a population's dropout layer computes once."""
    K = len(keeps)
    thresholds = numpy.array([math.ceil(p * 2.0 ** 53) for p in keeps], dtype=numpy.uint64).reshape(K, 1)
    return thresholds, numpy.array([1.0 / p for p in keeps]).astype(dtype).reshape(K, 1), kernels.constants(dtype, 0)


def _mask_draws(rngs, keeps, dtype, constants=None):
    """(keys, thresholds, inverses), each (K, 1): one draw from each dropping member's
    generator (its mask's key), then ``mask_constants`` (given as ``constants``, or made
    here)."""
    K = len(rngs)
    keys = numpy.array([rngs[k].bit_generator.random_raw() if keeps[k] < 1.0 else 0 for k in range(K)],
                       dtype=numpy.uint64).reshape(K, 1)
    thresholds, inverses, _ = mask_constants(keeps, dtype) if constants is None else constants
    return keys, thresholds, inverses


def dropout_over(a, rngs, keep_probs, constants=None):
    """``dropout_mask``'s product written over ``a`` (K, m, h), a ReLU's output that the caller
    owns and no longer needs, with the same masks and draws from ``rngs``. Returns ``(inverses,
    kept)``: each member's 1/keep (K, 1) and whether each unit was kept (bools, a quarter of
    the scale's bytes), which ``_backprop_activation`` takes as ``drop`` for the dropout's and
    the ReLU's gradient in one pass. None where the kernels do not run (nothing is drawn then:
    ``dropout_mask`` is the way). ``constants``: ``mask_constants(keep_probs, a.dtype)``,
    where the caller keeps them."""
    if a.ndim != 3 or not kernels.usable(a, min_size=1):
        return None
    keeps = [float(p) for p in keep_probs]
    constants = mask_constants(keeps, a.dtype) if constants is None else constants
    keys, thresholds, inverses = _mask_draws(rngs, keeps, a.dtype, constants)
    kept = numpy.empty(a.shape, dtype=numpy.bool_)
    kernels.run("dropout_over", a, keys, thresholds, inverses, constants[2], kept)
    return inverses, kept


def bias_relu_dropout(z, b, rngs, keep_probs, constants=None):
    """``_bias_activate(z, b, "relu")`` written over ``z`` (a population's fresh product, (K, m,
    h)), then ``dropout_over`` on that output, in one compiled pass: the same values, draws and
    bools as the two one after the other. Returns ``dropout_over``'s ``(inverses, kept)``, or
    None where the kernel does not run (nothing is drawn then and z is left as it is)."""
    K = z.shape[0] if z.ndim == 3 else 0
    if (z.ndim != 3 or not kernels.usable(z, min_size=1)
            or (b is not None and not (b.dtype == z.dtype and b.size == K * z.shape[-1]))):
        return None
    keeps = [float(p) for p in keep_probs]
    constants = mask_constants(keeps, z.dtype) if constants is None else constants
    keys, thresholds, inverses = _mask_draws(rngs, keeps, z.dtype, constants)
    kept = numpy.empty(z.shape, dtype=numpy.bool_)
    kernels.run("bias_relu_dropout", z, kernels.per_unit(z if b is None else b, K), b is not None, constants[2], keys,
                thresholds, inverses, kept)
    return inverses, kept


def dropout_scale(a, draws, keep, inverse):
    """(a * scale, scale) with scale = 1/keep where a draw is under keep, else 0, from uniform
    ``draws`` of a's shape (the GPU's dropout: ``dropout_mask``). ``keep`` and ``inverse`` are
    floats or (K, 1, 1) arrays, both rounded to a's dtype; the draws become the scale."""
    mod = backend.get_array_module(a)
    dtype = a.dtype
    keep = keep if isinstance(keep, float) else mod.asarray(keep).astype(dtype)
    inverse = dtype.type(inverse) if isinstance(inverse, float) else mod.asarray(inverse).astype(dtype)
    scale = mod.multiply(draws < keep, inverse, out=draws)
    return a * scale, scale


# -- regularization --------------------------------------------------------------------------


def _weights(weights):
    return [lift(w) for w in (weights if isinstance(weights, (list, tuple)) else [weights])]


def l2_penalty(weights, lambd, m):
    """lambd / (2m) * sum of the squared Frobenius norms of ``weights``; its gradient is lambd/m * W.

    For a population, ``lambd`` may be an array with one lambda per member (weights stacked as
    (K, n_in, n_out)): the value is the sum of the members' terms, each member's gradient its own.
    """
    weights = _weights(weights)
    mod = backend.get_array_module(weights[0].data)
    if isinstance(lambd, numpy.ndarray):
        return l2_penalty_per_member(weights, lambd, m)[0]
    coef = lambd / (2.0 * m)
    total = float(member_squares(weights)[0])
    out = mod.asarray(coef * total, dtype=weights[0].dtype)

    def backward(g):
        return tuple(g * (2 * coef) * w.data if w.requires_grad else None for w in weights)

    return result(out, tuple(weights), backward, "l2_penalty")


def l2_terms(weights, lambd, m):
    """The population form's numbers: (each member's lambda/(2m) ||W||^2 summed over the
    weights, float64 (K,); 2 lambda/(2m) per member as a (K, 1, 1) array in the weights' dtype,
    the factor of W in the gradient)."""
    weights = _weights(weights)
    coef, twice = l2_factors(lambd, m, weights[0].data)
    return coef * member_squares(weights), twice


def l2_factors(lambd, m, like):
    """(lambda/(2m) per member, float64 (K,); 2 lambda/(2m) as a (K, 1, 1) array in the dtype
    and module of ``like``): the factors of the population form's L2 term and gradient."""
    coef = numpy.asarray(lambd, dtype=numpy.float64) / (2.0 * m)
    return coef, backend.get_array_module(like).asarray((2 * coef).reshape(-1, 1, 1).astype(like.dtype))


def squares(w):
    """The sum of squares of weight ``w`` (n_in, n_out; a vector is one row), or each member's
    over stacked (K, n_in, n_out) weights ((K,)), in ``w``'s dtype: the squares summed over
    the rows, row after row (NumPy's order for an axis that is not the last), then the n_out
    column sums added as NumPy adds a row (pairwise). Every L2 term sums in this order, a
    single network's and a population's (``member_squares``), so a member's term is its solo
    network's bit for bit. NumPy's order for ``(w * w).sum()``, pairwise over all the squares,
    gave a compiled pass eight scalar sums per block of 128 terms, which it could not
    vectorize; summing rows is elementwise over a row (``compiled.member_squares``, 3.5x faster)."""
    w = w if w.ndim >= 2 else w.reshape(1, -1)
    return (w * w).sum(axis=-2).sum(axis=-1)  # NumPy's add.reduce over each axis; CuPy's sums on a GPU


def member_squares(weights):
    """Each member's sum of squares over stacked (K, n_in, n_out) ``weights``, float64 (K,), or
    a single network's over its (n_in, n_out) ones ((1,)): each weight's ``squares``, then the
    weights' in order. From ``kernels.MIN_SIZE`` elements a compiled pass gives the same sums
    (no array of squares written; one call for the weights that are columns of one array, as
    a population's are; split over two threads from ``kernels.SPLIT``). A caller that sums the
    same weights step after step keeps their ``SquaresPlan`` instead."""
    return SquaresPlan(weights)()


class SquaresPlan:
    """``member_squares`` of some weights, its compiled passes' arguments worked out once: a
    population sums the same weights (views of its optimizer's (K, P) array) at every step,
    and finding each one's block, checking it and building the passes' arrays took 55 of the
    72 us of the squares of the default search's 10 x 64-64-64-64-10 group a step (in place,
    /tmp script). ``holds(weights)``: the weights still have the arrays it was made for (a
    rebuilt (K, P) array or members leaving give new ones, and a new plan; so does a weight
    whose rows are a copy, as a strided one's, which the pass reads at the plan's making)."""

    __slots__ = ("datas", "sums", "passes", "copied")

    def __init__(self, weights):
        self.datas = [w.data for w in weights]
        self.copied = False  # a pass reads a copy of a weight: good for this plan's first call only
        self.sums = [None] * len(weights)  # each weight's sums: NumPy's where no pass takes it
        self.passes = []  # (block, starts, sizes, widths, scratch, out, constants, places)
        found_passes = {}
        for q, data in enumerate(self.datas):
            data = data if data.ndim >= 2 else data.reshape(1, -1)  # a vector: one row
            rows = data.reshape(data.shape[0] if data.ndim == 3 else 1, -1)  # a view: each member's row
            found = kernels.columns_of(rows) if data.shape[-1] > 0 and kernels.usable(rows, contiguous=False) else None
            if found is None:
                continue
            block, start = found
            self.copied = self.copied or not numpy.may_share_memory(block, data)
            places, starts, sizes, widths = found_passes.setdefault(id(block), (block, [], [], [], []))[1:]
            places.append(q), starts.append(start), sizes.append(rows.shape[1]), widths.append(data.shape[-1])
        for block, places, starts, sizes, widths in found_passes.values():
            self.passes.append((block, numpy.asarray(starts, dtype=numpy.int64), numpy.asarray(sizes, dtype=numpy.int64),
                                numpy.asarray(widths, dtype=numpy.int64),
                                numpy.empty((len(block), max(widths)), dtype=block.dtype),
                                numpy.empty((len(block), len(places)), dtype=block.dtype),
                                kernels.constants(block.dtype, -0.0), places))

    def holds(self, weights):
        return (not self.copied and len(weights) == len(self.datas)
                and all(w.data is d for w, d in zip(weights, self.datas)))

    def __call__(self):
        """The sums for the weights' values now, float64 (K,)."""
        sums = self.sums
        for block, starts, sizes, widths, scratch, out, constants, places in self.passes:
            kernels.run("member_squares", block, starts, sizes, widths, scratch, out, constants)
            for i, q in enumerate(places):
                sums[q] = out[:, i]
        total = 0
        for q, s in enumerate(sums):  # in the weights' order, as l2_penalty adds them
            if s is None:
                s = backend.to_numpy(squares(self.datas[q])).reshape(-1)
            total = total + s.astype(numpy.float64)
        return total


def l2_penalty_per_member(weights, lambd, m):
    """The population form of ``l2_penalty``: weights stacked (K, n_in, n_out), one lambda per
    member. Returns (the sum of the members' terms as a Tensor, each member's term as float64)."""
    weights = _weights(weights)
    mod = backend.get_array_module(weights[0].data)
    per_member, twice = l2_terms(weights, lambd, m)
    out = mod.asarray(per_member.sum(), dtype=weights[0].dtype)

    def backward(g):
        return tuple(g * twice * w.data if w.requires_grad else None for w in weights)

    return result(out, tuple(weights), backward, "l2_penalty"), per_member


def l1_penalty(weights, lambd, m):
    """lambd / (2m) * sum of |w| over ``weights`` (the notes' L1 term); gradient lambd/(2m) sign(W)."""
    weights = _weights(weights)
    mod = backend.get_array_module(weights[0].data)
    coef = lambd / (2.0 * m)
    total = sum(float(mod.abs(w.data).sum()) for w in weights)
    out = mod.asarray(coef * total, dtype=weights[0].dtype)

    def backward(g):
        return tuple(g * coef * mod.sign(w.data) if w.requires_grad else None for w in weights)

    return result(out, tuple(weights), backward, "l1_penalty")
