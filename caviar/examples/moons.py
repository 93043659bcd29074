"""Train a small network on the notes' two-moons toy problem with caviar's autodiff.

    python -m caviar.examples.moons [--epochs 2000] [--lr 0.5] [--seed 0]

Only the forward pass is written; ``backward`` and ``GradientDescent`` do the rest.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import make_moons

import caviar
from caviar import functional as F


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a 2-16-16-1 tanh network on two moons.")
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")

    X, y = make_moons(n_samples=1000, noise=0.2, random_state=args.seed)
    X = X.astype(np.float32)
    X_train, y_train, X_test, y_test = X[:800], y[:800], X[800:], y[800:]

    rng = caviar.backend.rng(args.seed)
    sizes = [2, 16, 16, 1]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):  # Xavier init for tanh: sqrt(1 / n[l-1])
        params.append(caviar.Variable(rng.standard_normal((n_in, n_out), dtype=np.float32) * np.sqrt(1 / n_in)))
        params.append(caviar.Variable(np.zeros(n_out, dtype=np.float32)))

    def logits(X):
        a = caviar.Tensor(X)
        for i in range(0, len(params) - 2, 2):
            a = (a @ params[i] + params[i + 1]).tanh()
        return a @ params[-2] + params[-1]  # forward propagation stops at Z[L]

    def accuracy(X, y):
        with caviar.no_grad():
            return float(((logits(X).data[:, 0] > 0) == y).mean())

    opt = caviar.optim.GradientDescent(lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        cost = opt.minimize(lambda: F.sigmoid_cross_entropy(logits(X_train), y_train), params)
        if epoch == 1 or epoch % (args.epochs // 5 or 1) == 0:
            print(f"epoch {epoch:5d}  cost {float(cost.data):.4f}  train accuracy {accuracy(X_train, y_train):.3f}")
    print(f"two moons: train accuracy {accuracy(X_train, y_train):.3f}, test accuracy {accuracy(X_test, y_test):.3f}")


if __name__ == "__main__":
    main()
