"""caviar's tape-free population step against the same step compiled whole: how much a
compiled step would save, and whether it can stay bit for bit caviar's.

The compiled side runs a population's mini-batch for a stack of Dense-ReLU layers (no batch
norm, no dropout) in two numba calls: the forward pass (each member's product, then its bias
and ReLU while the product is fresh) and the backward pass (the ReLU's gradient, db, dW and
dA per member); the head between them is caviar's (``Softmax.member_loss_grads``: NumPy's exp
and log, whose SIMD rounding a compiler does not reproduce). Its products call the very
``cblas_sgemm`` of the OpenBLAS that NumPy's wheel bundles, with the arguments NumPy's matmul
passes it (row-major; a transposed view as Trans with its leading dimension), so they are
NumPy's products. It checks that the logits, the members' losses and every gradient equal
``caviar.train.step.run``'s, then times both per step (the same mini-batch again and again,
one thread, fastest of two rounds). Without NumPy's bundled OpenBLAS (another BLAS build) it
says so and stops.

    python benchmarks/compiled_step.py [--steps 300]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from threadpoolctl import threadpool_limits  # noqa: E402

from caviar import data as D  # noqa: E402
from caviar import kernels  # noqa: E402
from caviar.train import step as tape_free  # noqa: E402
from caviar.train.population import Population  # noqa: E402


def numpy_sgemm():
    """NumPy's own cblas_sgemm (its wheel's OpenBLAS, 64-bit integers), or None."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "libscipy_openblas64_*.so"))
    if not libs:
        return None
    fn = getattr(ctypes.CDLL(libs[0]), "scipy_cblas_sgemm64_", None)
    if fn is None:
        return None
    i32, i64, f32, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    fn.restype = None
    fn.argtypes = [i32, i32, i32, i64, i64, i64, f32, ptr, i64, ptr, i64, f32, ptr, i64]
    return fn


ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def compiled_step(sgemm):
    """(forward, backward): the step's two numba functions over NumPy's ``sgemm``."""
    one, zero = np.float32(1.0), np.float32(0.0)

    @numba.njit(nogil=True, inline="always")
    def ld(a):  # a row-major matrix's leading dimension
        return a.strides[0] // a.itemsize

    @numba.njit(nogil=True, error_model="numpy")
    def forward(X, Ws, bs, outs):
        # outs[l][k] = relu(A_prev[k] @ Ws[l][k] + b), linear for the last layer; X (m, n) shared,
        # bs[l] as (K, h) rows (kernels.per_unit); the ReLU as caviar's kernel takes it (x kept
        # at a tie or NaN)
        K, m, last = Ws[0].shape[0], X.shape[0], len(Ws) - 1
        for layer in range(len(Ws)):
            W, b, out = Ws[layer], bs[layer], outs[layer]
            n, h = W.shape[1], W.shape[2]
            for k in range(K):
                A = X if layer == 0 else outs[layer - 1][k]
                Wk, Ok, bk = W[k], out[k], b[k]
                sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, h, n, one, A.ctypes.data, ld(A), Wk.ctypes.data, ld(Wk),
                      zero, Ok.ctypes.data, ld(Ok))
                for i in range(m):
                    oi = Ok[i]
                    if layer < last:
                        for j in range(h):
                            x = oi[j] + bk[j]
                            oi[j] = x if (x >= zero or x != x) else zero
                    else:
                        for j in range(h):
                            oi[j] = oi[j] + bk[j]

    @numba.njit(nogil=True, error_model="numpy")
    def backward(g, X, Ws, outs, dWs, dbs, das):
        # from dZ[L] = g (written over): per layer, dZ = dA * (out > 0), db its sum over the
        # examples row after row, dW = A_prev^T dZ, dA_prev = dZ W^T (das[layer] for layer >= 1)
        K, m, last = Ws[0].shape[0], X.shape[0], len(Ws) - 1
        for layer in range(last, -1, -1):
            W, out, dW, db = Ws[layer], outs[layer], dWs[layer], dbs[layer]
            n, h = W.shape[1], W.shape[2]
            dz = g if layer == last else das[layer + 1]
            for k in range(K):
                dzk, dbk = dz[k], db[k, 0]
                if layer < last:
                    ok = out[k]
                    for i in range(m):
                        di, oi = dzk[i], ok[i]
                        for j in range(h):
                            di[j] = di[j] * (one if oi[j] > zero else zero)
                for j in range(h):
                    dbk[j] = dzk[0, j]
                for i in range(1, m):
                    di = dzk[i]
                    for j in range(h):
                        dbk[j] = dbk[j] + di[j]
                A, dWk = (X if layer == 0 else outs[layer - 1][k]), dW[k]
                sgemm(ROW_MAJOR, TRANS, NO_TRANS, n, h, m, one, A.ctypes.data, ld(A), dzk.ctypes.data, ld(dzk),
                      zero, dWk.ctypes.data, ld(dWk))
                if layer > 0:
                    Wk, ak = W[k], das[layer][k]
                    sgemm(ROW_MAJOR, NO_TRANS, TRANS, m, n, h, one, dzk.ctypes.data, ld(dzk), Wk.ctypes.data, ld(Wk),
                          zero, ak.ctypes.data, ld(ak))

    return forward, backward


def compare(sizes, K, batch, steps, forward, backward, X, y):
    pop = Population(sizes, [{"seed": i, "lr": 1e-3} for i in range(K)], optimizer="adam")
    idx = np.random.default_rng(0).permutation(len(X))[:batch]
    Xb, yb = np.ascontiguousarray(X[idx]), y[idx]
    Ws = tuple(pop.net.params[f"W{layer}"].data for layer in range(1, len(sizes)))
    bs = tuple(pop.net.params[f"b{layer}"].data for layer in range(1, len(sizes)))

    def caviar():
        for p in pop.net.parameters():
            p.grad = None
        return tape_free.run(pop, Xb, yb)

    def compiled():
        outs = tuple(np.empty((K, batch, h), np.float32) for h in sizes[1:])
        forward(Xb, Ws, tuple(kernels.per_unit(b, K) for b in bs), outs)
        losses, g = pop.head.member_loss_grads(outs[-1], yb)
        dWs = tuple(np.empty(W.shape, np.float32) for W in Ws)
        dbs = tuple(np.empty(b.shape, np.float32) for b in bs)
        das = tuple(np.empty((K, batch, n), np.float32) for n in sizes[:-1])
        backward(g, Xb, Ws, outs, dWs, dbs, das)
        return losses, outs[-1], dWs, dbs

    losses, z = caviar()
    grads = {name: p.grad for name, p in pop.net.params.items()}
    losses2, z2, dWs, dbs = compiled()
    same = np.array_equal(losses, losses2) and np.array_equal(z, z2) and all(
        np.array_equal(grads[f"W{layer + 1}"], dWs[layer]) and np.array_equal(grads[f"b{layer + 1}"], dbs[layer])
        for layer in range(len(Ws)))
    best = {}
    for _ in range(2):
        for f in (caviar, compiled):
            f()
            t0 = time.perf_counter()
            for _ in range(steps):
                f()
            best[f.__name__] = min(best.get(f.__name__, np.inf), (time.perf_counter() - t0) / steps)
    print(f"{str(sizes):<24} {K:>3} {batch:>5} {'yes' if same else 'NO':>13} {best['caviar'] * 1e6:11.0f} "
          f"{best['compiled'] * 1e6:11.0f} {best['caviar'] / best['compiled']:17.2f}")
    return same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    sgemm = numpy_sgemm()
    if sgemm is None:
        raise SystemExit("this NumPy does not bundle scipy-openblas64 (cblas_sgemm64_): nothing to compare")
    forward, backward = compiled_step(sgemm)
    ds = D.load("digits")
    X = D.Normalizer().fit(ds.X).transform(ds.X).astype(np.float32)
    y = ds.y.astype(np.int64)
    print("one population mini-batch, forward + backward (no optimizer), one thread, float32")
    print(f"{'layer sizes':<24} {'K':>3} {'batch':>5} {'bit-identical':>13} {'caviar us':>11} {'compiled us':>11} "
          f"{'caviar / compiled':>17}")
    kernels.THREADS = 1
    with threadpool_limits(1):
        results = [compare(sizes, K, batch, args.steps if batch < 128 else args.steps // 3, forward, backward, X, y)
                   for sizes, K, batch in (([64, 32, 10], 32, 64), ([64, 32, 32, 10], 32, 64),
                                           ([64, 64, 64, 64, 10], 10, 32), ([64, 128, 128, 128, 10], 10, 64),
                                           ([64, 256, 256, 10], 10, 128))]
    if not all(results):
        raise SystemExit("the compiled step's numbers differ from caviar's")


if __name__ == "__main__":
    main()
