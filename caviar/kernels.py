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

    # -- optimizer updates over (K, P) rows ------------------------------------------------------
    # The gradient g covers the columns start .. start + g.shape[1] of the parameter p and its
    # state (a population's parameters are column blocks of one (K, P) array); it is g + d * p
    # where a step left the L2 term's gradient to the update (``with_decay``). Each row is
    # taken as 1-D slices with its coefficients in locals and the decay test outside the inner
    # loop: that is what lets the compiler vectorize it (4-5x faster than 2-D indexing).
    @jit
    def sgd(p, g, lr, d, with_decay, start):  # p -= lr * g
        n = g.shape[1]
        for k in range(g.shape[0]):
            pk, gk, a, c = p[k, start:start + n], g[k], lr[k], d[k]
            if with_decay:
                for j in range(n):
                    pk[j] = pk[j] - a * (gk[j] + c * pk[j])
            else:
                for j in range(n):
                    pk[j] = pk[j] - a * gk[j]

    @jit
    def momentum(p, g, v, beta, one_minus, scale, d, with_decay, start):
        n = g.shape[1]
        for k in range(g.shape[0]):
            pk, gk, vk = p[k, start:start + n], g[k], v[k, start:start + n]
            b, c, a, dd = beta[k], one_minus[k], scale[k], d[k]
            if with_decay:
                for j in range(n):
                    vv = vk[j] * b + (gk[j] + dd * pk[j]) * c
                    vk[j] = vv
                    pk[j] = pk[j] - vv * a
            else:
                for j in range(n):
                    vv = vk[j] * b + gk[j] * c
                    vk[j] = vv
                    pk[j] = pk[j] - vv * a

    @jit
    def rmsprop(p, g, s, beta2, one_minus, eps, lr, d, with_decay, start):
        n = g.shape[1]
        for k in range(g.shape[0]):
            pk, gk, sk = p[k, start:start + n], g[k], s[k, start:start + n]
            b, c, e, a, dd = beta2[k], one_minus[k], eps[k], lr[k], d[k]
            if with_decay:
                for j in range(n):
                    gg = gk[j] + dd * pk[j]
                    ss = sk[j] * b + (gg * gg) * c
                    sk[j] = ss
                    pk[j] = pk[j] - (gg / (numpy.sqrt(ss) + e)) * a
            else:
                for j in range(n):
                    gg = gk[j]
                    ss = sk[j] * b + (gg * gg) * c
                    sk[j] = ss
                    pk[j] = pk[j] - (gg / (numpy.sqrt(ss) + e)) * a

    @jit
    def adam(p, g, v, s, beta1, one_minus1, beta2, one_minus2, correct2, eps, step, d, with_decay, start):
        n = g.shape[1]
        for k in range(g.shape[0]):
            pk, gk, vk, sk = p[k, start:start + n], g[k], v[k, start:start + n], s[k, start:start + n]
            b1, c1, b2, c2, h2, e, a, dd = (beta1[k], one_minus1[k], beta2[k], one_minus2[k], correct2[k], eps[k],
                                            step[k], d[k])
            if with_decay:
                for j in range(n):
                    gg = gk[j] + dd * pk[j]
                    vv = vk[j] * b1 + gg * c1
                    vk[j] = vv
                    ss = sk[j] * b2 + (gg * gg) * c2
                    sk[j] = ss
                    pk[j] = pk[j] - (vv / (numpy.sqrt(ss * h2) + e)) * a
            else:
                for j in range(n):
                    gg = gk[j]
                    vv = vk[j] * b1 + gg * c1
                    vk[j] = vv
                    ss = sk[j] * b2 + (gg * gg) * c2
                    sk[j] = ss
                    pk[j] = pk[j] - (vv / (numpy.sqrt(ss * h2) + e)) * a

    # -- sums of squares -------------------------------------------------------------------
    @jit
    def pairwise_squares(a, lo, n, negzero):
        # NumPy's pairwise sum (numpy/_core/src/umath/loops_utils.h) of a[lo:lo+n] ** 2: under 8
        # terms one by one from -0.0; up to 128, eight running sums combined as a tree, then
        # the rest one by one; beyond, the two halves (the first a multiple of 8) summed apart
        if n < 8:
            res = negzero
            for i in range(lo, lo + n):
                res += a[i] * a[i]
            return res
        if n <= 128:
            r0, r1, r2, r3 = a[lo] * a[lo], a[lo + 1] * a[lo + 1], a[lo + 2] * a[lo + 2], a[lo + 3] * a[lo + 3]
            r4, r5, r6, r7 = a[lo + 4] * a[lo + 4], a[lo + 5] * a[lo + 5], a[lo + 6] * a[lo + 6], a[lo + 7] * a[lo + 7]
            i = 8
            while i < n - n % 8:
                b = lo + i
                r0 += a[b] * a[b]
                r1 += a[b + 1] * a[b + 1]
                r2 += a[b + 2] * a[b + 2]
                r3 += a[b + 3] * a[b + 3]
                r4 += a[b + 4] * a[b + 4]
                r5 += a[b + 5] * a[b + 5]
                r6 += a[b + 6] * a[b + 6]
                r7 += a[b + 7] * a[b + 7]
                i += 8
            res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            while i < n:
                res += a[lo + i] * a[lo + i]
                i += 1
            return res
        half = n // 2
        half -= half % 8
        return pairwise_squares(a, lo, half, negzero) + pairwise_squares(a, lo + half, n - half, negzero)

    @jit
    def squares(w, out, consts):  # out[k, 0] = (w[k] * w[k]).sum() as NumPy sums it
        for k in range(w.shape[0]):
            out[k, 0] = pairwise_squares(w[k], 0, w.shape[1], consts[0])

    # -- layers over (K, m, h) ----------------------------------------------------------------
    @jit
    def bias_relu(z, b, with_bias, consts, out):  # out = max(z + b, 0) (out may be z); NumPy's maximum keeps z at a tie or NaN
        zero = consts[0]
        for k in range(z.shape[0]):
            bk = b[k]
            for i in range(z.shape[1]):
                zi, oi = z[k, i], out[k, i]
                if with_bias:
                    for j in range(zi.shape[0]):
                        x = zi[j] + bk[j]
                        oi[j] = x if (x >= zero or x != x) else zero
                else:
                    for j in range(zi.shape[0]):
                        x = zi[j]
                        oi[j] = x if (x >= zero or x != x) else zero

    @jit
    def dropout(draws, a, keep, inverse, consts, out):
        # inverted dropout: draws become the scale (1/keep where draw < keep, else 0) and out = a * scale
        zero = consts[0]
        for k in range(draws.shape[0]):
            kp, inv = keep[k, 0], inverse[k, 0]
            for i in range(draws.shape[1]):
                di, ai, oi = draws[k, i], a[k, i], out[k, i]
                for j in range(di.shape[0]):
                    sc = inv if di[j] < kp else zero
                    di[j] = sc
                    oi[j] = ai[j] * sc

    @jit
    def relu_grad(g, out, dz, db, with_bias, consts):  # dz = g * (out > 0); db = dz summed over examples, row after row
        zero, one = consts[0], consts[1]
        K, m, h = g.shape
        for k in range(K):
            for i in range(m):
                gi, oi, di = g[k, i], out[k, i], dz[k, i]
                for j in range(h):
                    di[j] = gi[j] * (one if oi[j] > zero else zero)
            if with_bias:
                dbk = db[k]
                d0 = dz[k, 0]
                for j in range(h):
                    dbk[j] = d0[j]
                for i in range(1, m):
                    di = dz[k, i]
                    for j in range(h):
                        dbk[j] = dbk[j] + di[j]

    @jit
    def batch_norm(z, gamma, beta, consts, out, xhat, mu, var, inv_std):
        m_, eps, one = consts[0], consts[1], consts[2]
        K, m, h = z.shape
        for k in range(K):
            muk, vk, ik, gk, bk = mu[k], var[k], inv_std[k], gamma[k], beta[k]
            z0 = z[k, 0]
            for j in range(h):
                muk[j] = z0[j]
            for i in range(1, m):
                zi = z[k, i]
                for j in range(h):
                    muk[j] = muk[j] + zi[j]
            for j in range(h):
                muk[j] = muk[j] / m_
            for i in range(m):  # centered, kept in xhat
                zi, xi = z[k, i], xhat[k, i]
                for j in range(h):
                    xi[j] = zi[j] - muk[j]
            x0 = xhat[k, 0]
            for j in range(h):  # its squares, summed row after row
                vk[j] = x0[j] * x0[j]
            for i in range(1, m):
                xi = xhat[k, i]
                for j in range(h):
                    vk[j] = vk[j] + xi[j] * xi[j]
            for j in range(h):
                vk[j] = vk[j] / m_
                ik[j] = one / numpy.sqrt(vk[j] + eps)
            for i in range(m):
                xi, oi = xhat[k, i], out[k, i]
                for j in range(h):
                    x = xi[j] * ik[j]
                    xi[j] = x
                    oi[j] = gk[j] * x + bk[j]

    @jit
    def batch_norm_grad(g, xhat, gamma, inv_std, consts, dz, dgamma, dbeta, s1, s2, c):
        m_ = consts[0]
        K, m, h = g.shape
        for k in range(K):
            dgk, dbk, s1k, s2k, gmk, ik, ck = dgamma[k], dbeta[k], s1[k], s2[k], gamma[k], inv_std[k], c[k]
            g0, x0 = g[k, 0], xhat[k, 0]
            for j in range(h):  # row 0 starts the sums over the examples, as in NumPy
                dx = g0[j] * gmk[j]
                dgk[j] = g0[j] * x0[j]
                dbk[j] = g0[j]
                s1k[j] = dx
                s2k[j] = dx * x0[j]
            for i in range(1, m):
                gi, xi = g[k, i], xhat[k, i]
                for j in range(h):
                    dx = gi[j] * gmk[j]
                    dgk[j] = dgk[j] + gi[j] * xi[j]
                    dbk[j] = dbk[j] + gi[j]
                    s1k[j] = s1k[j] + dx
                    s2k[j] = s2k[j] + dx * xi[j]
            for j in range(h):
                ck[j] = ik[j] / m_  # (inv_std / m), once per unit
            for i in range(m):
                gi, xi, di = g[k, i], xhat[k, i], dz[k, i]
                for j in range(h):
                    dx = gi[j] * gmk[j]
                    di[j] = ck[j] * ((m_ * dx - s1k[j]) - xi[j] * s2k[j])

    return {"gd": sgd, "momentum": momentum, "rmsprop": rmsprop, "adam": adam, "squares": squares, "bias_relu": bias_relu, "dropout": dropout,
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


def usable(*arrays, contiguous=True):
    """Whether the kernels run on ``arrays``: NumPy arrays of one float dtype, C-contiguous
    (unless ``contiguous`` is False), the first of ``MIN_SIZE`` elements or more
    (``CAVIAR_FUSED=0`` turns the kernels off)."""
    first = arrays[0]
    return (os.environ.get("CAVIAR_FUSED", "1") != "0" and backend.name() == "numpy"
            and isinstance(first, numpy.ndarray) and first.dtype in (numpy.float32, numpy.float64)
            and first.size >= MIN_SIZE
            and all(isinstance(a, numpy.ndarray) and a.dtype == first.dtype and (a.flags.c_contiguous or not contiguous)
                    for a in arrays)
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
    """A per-unit vector ((h,), (1, h) or (K, 1, h)) as a C-ordered (K, h) array: a view where
    it is one, else a copy (a population's parameters are views of its (K, P) block, and a
    kernel vectorizes only over rows it knows to be contiguous). Kernels only read these."""
    return numpy.ascontiguousarray(array.reshape(K, -1))


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


def update(kind, param, grad, state, columns, decay=None, start=0):
    """Optimizer ``kind``'s kernel: ``param`` and its ``state`` arrays (K, P) updated in place
    over the columns ``start`` .. ``start + grad.shape[1]`` from ``grad``, taken as ``grad +
    decay * param`` where ``decay`` (the L2 term's factor per member) is given; ``columns``
    are the update's coefficients as (K,) arrays (``column``). Split over two threads when
    large (memory-bound work gains the second core)."""
    kernel = kernels()[kind]
    K, P = grad.shape
    columns = list(columns) + [column(0.0 if decay is None else decay, K, param.dtype)]
    with_decay = decay is not None
    if K * P < SPLIT or THREADS < 2:
        kernel(param, grad, *state, *columns, with_decay, start)
    elif K >= 2:  # whole members on each thread
        h = K // 2
        _halves(kernel, [param[:h], grad[:h], *(a[:h] for a in state), *(c[:h] for c in columns), with_decay, start],
                [param[h:], grad[h:], *(a[h:] for a in state), *(c[h:] for c in columns), with_decay, start])
    else:  # one row: a half of its columns on each thread
        h = P // 2
        _halves(kernel, [param, grad[:, :h], *state, *columns, with_decay, start],
                [param, grad[:, h:], *state, *columns, with_decay, start + h])
