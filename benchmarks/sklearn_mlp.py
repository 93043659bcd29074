"""caviar's scikit-learn estimator against scikit-learn's MLPClassifier, the same work: the same
architecture, Adam with the same learning rate and betas, the same mini-batch size and number of
epochs (no early stopping on either side), float64 on both, on the same train/test split.

    python benchmarks/sklearn_mlp.py [--epochs 20] [--rows 20000]

Two tables: scikit-learn's bundled digits (1,797 x 64) and a synthetic classification problem
(``make_classification``, 20,000 x 40, 5 classes). Prints test accuracy and fit time for each,
and the ratio caviar / scikit-learn of the fit times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))


def tables(rows, seed=0):
    from sklearn.datasets import load_digits, make_classification
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    yield "digits", train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    X, y = make_classification(n_samples=rows, n_features=40, n_informative=20, n_classes=5, random_state=seed)
    yield "synthetic", train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)


def main(argv=None):
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from blas import kernels
    from caviar.sklearn import CaviarClassifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--hidden", default="64,32")
    args = parser.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # a fixed number of epochs, by design
    print(f"BLAS: {kernels()}")
    print(f"hidden {hidden}, Adam lr 0.001, batch 64, {args.epochs} epochs, no early stopping, float64")
    for name, (X, Xt, y, yt) in tables(args.rows):
        models = {
            # scikit-learn's MLP does not standardize its inputs; caviar's estimator does (the
            # notes' normalization), so the MLP gets a StandardScaler in front: the same work
            "scikit-learn MLPClassifier": make_pipeline(StandardScaler(), MLPClassifier(
                hidden_layer_sizes=hidden, solver="adam", learning_rate_init=0.001, batch_size=64,
                max_iter=args.epochs, early_stopping=False, n_iter_no_change=args.epochs + 1, tol=0.0,
                alpha=0.0, random_state=0)),
            "caviar CaviarClassifier": CaviarClassifier(hidden=hidden, lr=0.001, batch_size=64, epochs=args.epochs,
                                                        early_stopping=None, random_state=0),
        }
        times = {}
        for label, model in models.items():
            best = None
            for _ in range(2):  # the faster of two fits: the first pays for imports and warm-up
                t0 = time.perf_counter()
                model.fit(X, y)
                seconds = time.perf_counter() - t0
                best = seconds if best is None else min(best, seconds)
            times[label] = best
            accuracy = float(np.mean(model.predict(Xt) == yt))
            print(f"{name:<10} {X.shape[0]:>6} x {X.shape[1]:<3} {label:<28} test accuracy {accuracy:.4f}"
                  f"  fit {best:6.2f} s", flush=True)
        ratio = times["caviar CaviarClassifier"] / times["scikit-learn MLPClassifier"]
        print(f"{name:<10} fit time caviar / scikit-learn = {ratio:.2f}")


if __name__ == "__main__":
    main()
