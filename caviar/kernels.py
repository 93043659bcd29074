"""Compiled one-pass kernels (numba) for the elementwise work of a training step.

The NumPy code of ``caviar.functional`` and ``caviar.optim`` is the readable reference: one
array operation per line of the notes, each a pass over memory (Adam makes about 13 passes over
the parameters, batch norm about 7 over the activations each way). A kernel here does, for every
element, exactly the same float operations in the same order and dtype (no fused multiply-add,
no fast-math): sums over the examples run in NumPy's order for that axis (row after row, from
the first), a mean divides by m, a bool mask multiplies as 0.0 or 1.0. Its results are therefore
bit-identical to the reference (``tests/test_kernels.py`` holds this for every kernel, float32
and float64, single networks and populations), so a population member still equals its solo
run whether or not the kernels run. exp, log and tanh stay in NumPy (its SIMD versions round
differently from a compiler's).

Arrays are 3-D (K, m, h): K members (a single network is K = 1), m examples, h units;
per-member coefficients are (K,) arrays in the data's dtype, computed in float64 and rounded
once, as ``caviar.optim.base.coef`` rounds them. Scalars that NumPy applies as weak Python
numbers (m, epsilon, 1.0) come in a small array of the data's dtype, for the same reason.

Without numba, on the GPU, below ``MIN_SIZE`` elements (where a kernel call costs more than
NumPy's few passes) or with ``CAVIAR_FUSED=0``, ``usable`` is False and the reference runs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy

from . import backend

MIN_SIZE = 1 << 12  # elements from which a kernel beats NumPy's passes (and pays numba's start, once)
SPLIT = 1 << 18  # elements from which a kernel's work is split over two threads
THREADS = min(2, os.cpu_count() or 1)  # 1 where each core already has its own worker (caviar tune)
_pool = None
_kernels = None  # by name, compiled on first use (numba's import alone takes 0.2 s)


def _compile():  # noqa: C901 - one definition per kernel
    import numba

    jit = numba.njit(cache=True, nogil=True, error_model="numpy")

    # -- optimizer updates over (K, P) rows ---------------------------------------------------
    @jit
    def sgd(p, g, lr):  # p -= lr * g
        for k in range(p.shape[0]):
            a = lr[k]
            for j in range(p.shape[1]):
                p[k, j] = p[k, j] - a * g[k, j]

    @jit
    def momentum(p, g, v, beta, one_minus, scale):
        for k in range(p.shape[0]):
            b, c, a = beta[k], one_minus[k], scale[k]
            for j in range(p.shape[1]):
                vv = v[k, j] * b + g[k, j] * c
                v[k, j] = vv
                p[k, j] = p[k, j] - vv * a

    @jit
    def rmsprop(p, g, s, beta2, one_minus, eps, lr):
        for k in range(p.shape[0]):
            b, c, e, a = beta2[k], one_minus[k], eps[k], lr[k]
            for j in range(p.shape[1]):
                gg = g[k, j]
                ss = s[k, j] * b + (gg * gg) * c
                s[k, j] = ss
                p[k, j] = p[k, j] - (gg / (numpy.sqrt(ss) + e)) * a

    @jit
    def adam(p, g, v, s, beta1, one_minus1, beta2, one_minus2, correct2, eps, step):
        for k in range(p.shape[0]):
            b1, c1, b2, c2, h2, e, a = beta1[k], one_minus1[k], beta2[k], one_minus2[k], correct2[k], eps[k], step[k]
            for j in range(p.shape[1]):
                gg = g[k, j]
                vv = v[k, j] * b1 + gg * c1
                v[k, j] = vv
                ss = s[k, j] * b2 + (gg * gg) * c2
                s[k, j] = ss
                p[k, j] = p[k, j] - (vv / (numpy.sqrt(ss * h2) + e)) * a

    @jit
    def add_scaled(g, w, c):  # g += c * w, row k with its own c[k, 0] (the L2 term's gradient)
        for k in range(g.shape[0]):
            a = c[k, 0]
            for j in range(g.shape[1]):
                g[k, j] = g[k, j] + a * w[k, j]

    # -- layers over (K, m, h) ----------------------------------------------------------------
    @jit
    def bias_relu(z, b, with_bias, consts):  # z = max(z + b, 0) in place; NumPy's maximum keeps z at a tie or NaN
        zero = consts[0]
        for k in range(z.shape[0]):
            for i in range(z.shape[1]):
                for j in range(z.shape[2]):
                    x = z[k, i, j] + b[k, j] if with_bias else z[k, i, j]
                    z[k, i, j] = x if (x >= zero or x != x) else zero

    @jit
    def relu_grad(g, out, dz, db, with_bias, consts):  # dz = g * (out > 0); db = dz summed over examples, row after row
        zero, one = consts[0], consts[1]
        K, m, h = g.shape
        for k in range(K):
            for i in range(m):
                for j in range(h):
                    dz[k, i, j] = g[k, i, j] * (one if out[k, i, j] > zero else zero)
            if with_bias:
                for j in range(h):
                    db[k, j] = dz[k, 0, j]
                for i in range(1, m):
                    for j in range(h):
                        db[k, j] = db[k, j] + dz[k, i, j]

    @jit
    def batch_norm(z, gamma, beta, consts, out, xhat, mu, var, inv_std):
        m_, eps, one = consts[0], consts[1], consts[2]
        K, m, h = z.shape
        for k in range(K):
            for j in range(h):
                mu[k, j] = z[k, 0, j]
            for i in range(1, m):
                for j in range(h):
                    mu[k, j] = mu[k, j] + z[k, i, j]
            for j in range(h):
                mu[k, j] = mu[k, j] / m_
            for i in range(m):  # centered, kept in xhat
                for j in range(h):
                    xhat[k, i, j] = z[k, i, j] - mu[k, j]
            for j in range(h):  # its squares, summed row after row
                var[k, j] = xhat[k, 0, j] * xhat[k, 0, j]
            for i in range(1, m):
                for j in range(h):
                    var[k, j] = var[k, j] + xhat[k, i, j] * xhat[k, i, j]
            for j in range(h):
                var[k, j] = var[k, j] / m_
                inv_std[k, j] = one / numpy.sqrt(var[k, j] + eps)
            for i in range(m):
                for j in range(h):
                    x = xhat[k, i, j] * inv_std[k, j]
                    xhat[k, i, j] = x
                    out[k, i, j] = gamma[k, j] * x + beta[k, j]

    @jit
    def batch_norm_grad(g, xhat, gamma, inv_std, consts, dz, dgamma, dbeta, s1, s2):
        m_ = consts[0]
        K, m, h = g.shape
        for k in range(K):
            for j in range(h):  # row 0 starts the sums over the examples, as in NumPy
                gg, x = g[k, 0, j], xhat[k, 0, j]
                dx = gg * gamma[k, j]
                dgamma[k, j], dbeta[k, j], s1[k, j], s2[k, j] = gg * x, gg, dx, dx * x
            for i in range(1, m):
                for j in range(h):
                    gg, x = g[k, i, j], xhat[k, i, j]
                    dx = gg * gamma[k, j]
                    dgamma[k, j] = dgamma[k, j] + gg * x
                    dbeta[k, j] = dbeta[k, j] + gg
                    s1[k, j] = s1[k, j] + dx
                    s2[k, j] = s2[k, j] + dx * x
            for i in range(m):
                for j in range(h):
                    dx = g[k, i, j] * gamma[k, j]
                    dz[k, i, j] = (inv_std[k, j] / m_) * ((m_ * dx - s1[k, j]) - xhat[k, i, j] * s2[k, j])

    return {"gd": sgd, "momentum": momentum, "rmsprop": rmsprop, "adam": adam, "add_scaled": add_scaled, "bias_relu": bias_relu,
            "relu_grad": relu_grad, "batch_norm": batch_norm, "batch_norm_grad": batch_norm_grad}


def kernels():
    """The compiled kernels by name; empty without numba (or with a numba that refuses this NumPy)."""
    global _kernels
    if _kernels is None:
        try:
            _kernels = _compile()
        except Exception:  # noqa: BLE001 - any failure of an optional compiler means: use NumPy
            _kernels = {}
    return _kernels


def usable(*arrays):
    """Whether the kernels run on ``arrays``: NumPy arrays of one float dtype, C-contiguous,
    the first of ``MIN_SIZE`` elements or more (``CAVIAR_FUSED=0`` turns the kernels off)."""
    first = arrays[0]
    return (os.environ.get("CAVIAR_FUSED", "1") != "0" and backend.name() == "numpy"
            and isinstance(first, numpy.ndarray) and first.dtype in (numpy.float32, numpy.float64)
            and first.size >= MIN_SIZE
            and all(isinstance(a, numpy.ndarray) and a.dtype == first.dtype and a.flags.c_contiguous for a in arrays)
            and bool(kernels()))


def column(value, K, dtype):
    """A hyperparameter (a float or a per-member (K, 1) array) as a (K,) array in ``dtype``,
    computed in float64 and rounded once: the value ``base.coef`` gives the NumPy update."""
    return numpy.ascontiguousarray(numpy.broadcast_to(numpy.asarray(value, dtype=numpy.float64).reshape(-1), (K,)),
                                   dtype=dtype)


def constants(dtype, *values):
    """Scalars as NumPy applies weak Python numbers to an array: rounded to its dtype."""
    return numpy.asarray(values, dtype=numpy.float64).astype(dtype)


def stacked(array):
    """(m, h) or (K, m, h) as a (K, m, h) view."""
    return array if array.ndim == 3 else array.reshape((1,) + array.shape)


def per_unit(array, K):
    """A per-unit vector ((h,), (1, h) or (K, 1, h), contiguous or a view of a population's
    parameter block) as a (K, h) view."""
    return array.reshape(K, -1)


def _halves(kernel, first_args, second_args):
    """Run ``kernel`` on two halves of the work at once, one on a helper thread (numba releases
    the GIL), and wait for both."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(1, thread_name_prefix="caviar-kernel")
    first = _pool.submit(kernel, *first_args)
    kernel(*second_args)
    first.result()


def run(name, *args):
    """Kernel ``name`` on ``args``; split over two threads by members (every array argument
    with a leading axis of K) when the work is large, K >= 2 and ``THREADS`` allows."""
    kernel = kernels()[name]
    lead = args[0]
    K = lead.shape[0]
    if lead.size < SPLIT or THREADS < 2 or K < 2:
        kernel(*args)
        return
    h = K // 2

    def half(part):
        return [a[part] if isinstance(a, numpy.ndarray) and a.ndim >= 2 and a.shape[0] == K else a for a in args]

    _halves(kernel, half(slice(None, h)), half(slice(h, None)))


def update(kind, arrays, coefficients):
    """Optimizer ``kind``'s kernel on (K, P) ``arrays`` (parameter, gradient, state...), split
    over two threads when large (memory-bound work gains the second core)."""
    kernel = kernels()[kind]
    K, P = arrays[0].shape
    coefficients = [column(c, K, arrays[0].dtype) for c in coefficients]
    if K * P < SPLIT or THREADS < 2:
        kernel(*arrays, *coefficients)
    elif K >= 2:  # whole members on each thread
        h = K // 2
        _halves(kernel, [*(a[:h] for a in arrays), *(c[:h] for c in coefficients)],
                [*(a[h:] for a in arrays), *(c[h:] for c in coefficients)])
    else:
        h = P // 2
        _halves(kernel, [*(a[:, :h] for a in arrays), *coefficients], [*(a[:, h:] for a in arrays), *coefficients])
