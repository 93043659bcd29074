"""Tape overhead: one forward+backward of a 784-256-128-10 ReLU MLP (batch 128, float32).

Times the same step three ways in one run -- through caviar's autodiff, hand-written in
NumPy (the notes' backprop equations, no tape), and in PyTorch on the CPU -- and prints the
ratios. The goal is a tape overhead under 10% of the step.

    python benchmarks/autodiff_overhead.py [--repeats 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import caviar  # noqa: E402
from caviar import functional as F  # noqa: E402

SIZES = [784, 256, 128, 10]
M = 128


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((M, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=M)
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        params.append((rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in)).astype(np.float32))
        params.append(np.zeros(n_out, dtype=np.float32))
    return X, y, params


def caviar_step(X, y, params):
    X = caviar.Tensor(X)
    ps = [caviar.Variable(p) for p in params]

    def step():
        for p in ps:
            p.grad = None
        a = X
        for i in range(0, len(ps) - 2, 2):
            a = (a @ ps[i] + ps[i + 1]).relu()
        cost = F.softmax_cross_entropy(a @ ps[-2] + ps[-1], y)
        cost.backward()
        return ps[0].grad

    return step


def caviar_network_step(X, y, params):
    """The same step as a caviar Network runs it: fused dense layers (the notes' layer
    equations, one tape node per layer) and the fused softmax cross-entropy."""
    net = caviar.Network(SIZES, seed=0)
    for p, value in zip(net.parameters(), params):
        p.data = value.copy()
    ps = net.parameters()

    def step():
        for p in ps:
            p.grad = None
        net.cost(X, y, training=True).backward()
        return ps[0].grad

    return step


def numpy_step(X, y, params):
    W1, b1, W2, b2, W3, b3 = params
    Y = np.eye(SIZES[-1], dtype=np.float32)[y]

    def step():
        Z1 = X @ W1 + b1
        A1 = np.maximum(Z1, 0)
        Z2 = A1 @ W2 + b2
        A2 = np.maximum(Z2, 0)
        Z3 = A2 @ W3 + b3
        e = np.exp(Z3 - Z3.max(1, keepdims=True))
        P = e / e.sum(1, keepdims=True)
        _cost = -np.log(P[np.arange(M), y]).mean()
        dZ3 = (P - Y) / M
        dW3, db3 = A2.T @ dZ3, dZ3.sum(0)
        dZ2 = (dZ3 @ W3.T) * (Z2 > 0)
        dW2, db2 = A1.T @ dZ2, dZ2.sum(0)
        dZ1 = (dZ2 @ W2.T) * (Z1 > 0)
        dW1, db1 = X.T @ dZ1, dZ1.sum(0)
        return dW1, (db1, dW2, db2, dW3, db3)  # every gradient computed, as the others do

    return step


def torch_step(X, y, params):
    import torch

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    ps = [torch.tensor(p, requires_grad=True) for p in params]

    def step():
        for p in ps:
            p.grad = None
        a = Xt
        for i in range(0, len(ps) - 2, 2):
            a = torch.relu(a @ ps[i] + ps[i + 1])
        cost = torch.nn.functional.cross_entropy(a @ ps[-2] + ps[-1], yt)
        cost.backward()
        return ps[0].grad

    return step


def best_time(step, repeats):
    """Median of ``repeats`` timed steps, after warm-up (medians resist a busy machine)."""
    for _ in range(10):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    X, y, params = make_data()
    # the three must compute the same gradient
    g_cav, g_np = caviar_step(X, y, params)(), numpy_step(X, y, params)()[0]
    np.testing.assert_allclose(g_cav, g_np, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(caviar_network_step(X, y, params)(), g_np, rtol=1e-4, atol=1e-6)
    t_cav = best_time(caviar_step(X, y, params), args.repeats)
    t_net = best_time(caviar_network_step(X, y, params), args.repeats)
    t_np = best_time(numpy_step(X, y, params), args.repeats)
    try:
        t_torch = best_time(torch_step(X, y, params), args.repeats)
    except ImportError:
        t_torch = None
    print(f"784-256-128-10 ReLU MLP, batch {M}, float32, forward+backward, median of {args.repeats}")
    print(f"  caviar autodiff    {t_cav * 1e3:8.3f} ms  (primitive ops: matmul, add, relu)")
    print(f"  caviar Network     {t_net * 1e3:8.3f} ms  (fused dense layers, as training runs)")
    print(f"  hand-written NumPy {t_np * 1e3:8.3f} ms")
    if t_torch is not None:
        print(f"  PyTorch CPU        {t_torch * 1e3:8.3f} ms")
    print(f"ratio caviar/numpy  = {t_cav / t_np:.3f}  (tape overhead {100 * (t_cav - t_np) / t_cav:+.1f}% of the step)")
    print(f"ratio network/numpy = {t_net / t_np:.3f}  (tape overhead {100 * (t_net - t_np) / t_net:+.1f}% of the step)")
    if t_torch is not None:
        print(f"ratio caviar/torch  = {t_cav / t_torch:.3f}  (< 1 means caviar is faster)")
        print(f"ratio network/torch = {t_net / t_torch:.3f}")


if __name__ == "__main__":
    main()
