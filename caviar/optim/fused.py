"""One-pass optimizer updates, compiled with numba where it is installed.

The NumPy updates of ``gd``, ``momentum``, ``rmsprop`` and ``adam`` are the readable reference:
one array operation per line of the notes, each a pass over the parameters (Adam makes about
13). A kernel here does, for every element, exactly the same float operations in the same
order and the same dtype (no fused multiply-add, no fast-math), reading and writing each array
once, so its result is bit-identical to the reference (``tests/test_fused.py`` holds this on
float32 and float64, with per-member and scalar hyperparameters).

Arrays are (K, P): K members (a single network's parameter is one row), each coefficient a (K,)
array in the parameters' dtype, computed in float64 and rounded once, as ``base.coef`` rounds it.
Large updates are split in two halves that two threads run at once (numba releases the GIL),
which is where the second core helps an update that is bound by memory.

Without numba, or on the GPU, ``available()`` is False and the NumPy reference runs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy

from .. import backend

MIN_SIZE = 1 << 12  # elements from which a kernel beats NumPy's passes (and pays numba's start, once)
SPLIT = 1 << 18  # elements from which an update is split over two threads
_pool = None
_kernels = None  # by optimizer name, compiled on first use (numba's import alone takes 0.2 s)


def _compile():
    import numba

    jit = numba.njit(cache=True, nogil=True, error_model="numpy")

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

    return {"gd": sgd, "momentum": momentum, "rmsprop": rmsprop, "adam": adam}


def kernels():
    """The compiled kernels by optimizer name; empty without numba (or with a numba that
    refuses this NumPy)."""
    global _kernels
    if _kernels is None:
        try:
            _kernels = _compile()
        except Exception:  # noqa: BLE001 - any failure of an optional compiler means: use NumPy
            _kernels = {}
    return _kernels


def available(array):
    """Whether the compiled kernels update ``array`` (NumPy, float32 or float64, ``MIN_SIZE``
    elements or more; ``CAVIAR_FUSED=0`` turns them off)."""
    return (os.environ.get("CAVIAR_FUSED", "1") != "0" and backend.name() == "numpy"
            and isinstance(array, numpy.ndarray) and array.dtype in (numpy.float32, numpy.float64)
            and array.size >= MIN_SIZE
            and bool(kernels()))


def column(value, K, dtype):
    """A hyperparameter (a float or a per-member (K, 1) array) as a (K,) array in ``dtype``,
    computed in float64 and rounded once: the value ``base.coef`` gives the NumPy update."""
    return numpy.ascontiguousarray(numpy.broadcast_to(numpy.asarray(value, dtype=numpy.float64).reshape(-1), (K,)),
                                   dtype=dtype)


def run(kernel, arrays, coefficients):
    """``kernel(*arrays, *coefficients)``, in two halves on two threads for large arrays."""
    K, P = arrays[0].shape
    if K * P < SPLIT or (os.cpu_count() or 1) < 2:
        kernel(*arrays, *coefficients)
        return
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(1, thread_name_prefix="caviar-update")
    if K >= 2:  # whole members on each thread
        h = K // 2
        first = _pool.submit(kernel, *(a[:h] for a in arrays), *(c[:h] for c in coefficients))
        kernel(*(a[h:] for a in arrays), *(c[h:] for c in coefficients))
    else:
        h = P // 2
        first = _pool.submit(kernel, *(a[:, :h] for a in arrays), *coefficients)
        kernel(*(a[:, h:] for a in arrays), *coefficients)
    first.result()

