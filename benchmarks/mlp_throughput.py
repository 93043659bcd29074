"""Training throughput: a 784-256-128-10 ReLU network, batch 128, Adam (lr 0.001), float32,
on 60,000 synthetic examples -- caviar, PyTorch on the CPU, and scikit-learn's MLPClassifier,
in one run. Prints samples per second and the ratios caviar/PyTorch and caviar/scikit-learn
(above 1 means caviar is faster). Every library shuffles each epoch and keeps the last
partial batch.

    python benchmarks/mlp_throughput.py [--epochs 2] [--examples 60000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import caviar  # noqa: E402
from blas import kernels  # noqa: E402

SIZES = [784, 256, 128, 10]
BATCH = 128


def make_data(m, seed=0):
    """Ten Gaussian classes in 784 dimensions, learnable but not trivially."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((10, SIZES[0])).astype(np.float32)
    y = rng.integers(0, 10, size=m)
    X = centers[y] * 0.3 + rng.standard_normal((m, SIZES[0]), dtype=np.float32)
    return X, y


def run_caviar(X, y, epochs):
    net = caviar.Network(SIZES, activation="relu", output="softmax", seed=0)
    t0 = time.perf_counter()
    caviar.fit(net, X, y, optimizer="adam", lr=0.001, epochs=epochs, batch_size=BATCH, verbose=False, seed=0)
    seconds = time.perf_counter() - t0
    return seconds, net.evaluate(X, y)["accuracy"]


def run_torch(X, y, epochs):
    import torch

    torch.manual_seed(0)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=0.001, eps=1e-8)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    m = len(X)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(m)
        for i in range(0, m, BATCH):
            idx = order[i : i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        accuracy = float((model(Xt).argmax(1) == yt).float().mean())
    return seconds, accuracy


def run_sklearn(X, y, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=tuple(SIZES[1:-1]), activation="relu", solver="adam",
                        learning_rate_init=0.001, batch_size=BATCH, max_iter=epochs, shuffle=True,
                        random_state=0, tol=0.0, n_iter_no_change=epochs + 1, alpha=0.0)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    seconds = time.perf_counter() - t0
    return seconds, float(clf.score(X, y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=60000)
    args = parser.parse_args(argv)
    X, y = make_data(args.examples)
    samples = args.examples * args.epochs
    results = {}
    # the peers run first: caviar's training sets process-wide malloc options when it starts
    # (caviar/memory.py), which would otherwise apply to them too
    for name, fn in [("pytorch", run_torch), ("scikit-learn", run_sklearn), ("caviar", run_caviar)]:
        try:
            fn(X[:4096], y[:4096], 1)  # warm-up, untimed: one-time costs of each library
            results[name] = fn(X, y, args.epochs)
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
    results = {name: results[name] for name in ("caviar", "pytorch", "scikit-learn") if name in results}
    print(f"784-256-128-10 ReLU, batch {BATCH}, Adam, float32, {args.examples} examples x {args.epochs} epochs")
    print(f"BLAS: {kernels()}")
    for name, (seconds, accuracy) in results.items():
        print(f"  {name:<13} {samples / seconds:10.0f} samples/s  ({seconds:6.2f} s, train accuracy {accuracy:.3f})")
    speed = {name: samples / seconds for name, (seconds, _) in results.items()}
    for peer in ("pytorch", "scikit-learn"):
        if peer in speed:
            print(f"ratio caviar/{peer} = {speed['caviar'] / speed[peer]:.2f}  (>= 1 means caviar is as fast or faster)")


if __name__ == "__main__":
    main()
