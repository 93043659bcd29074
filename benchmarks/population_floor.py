"""How far populations can speed up the default ``caviar tune`` search on this machine.

For every group of the default search (40 trials, 10 epochs, groups of 10 sharing an
architecture, the default space, digits), in one process with one thread (BLAS and caviar's
compiled kernels, as in a ``caviar tune`` worker), after a warm-up that trains one epoch of
each group (so that no timing includes numba compiling or loading a kernel), with the
garbage collector off during each timing (``no_collector``), times:

  solo        the group's trials trained one by one (``--no-population``'s work),
  population  the group trained as one caviar population (the default),
  products    only the matrix products that population performs (forward, backward and the
              dev evaluation, same shapes, same count), with nothing else around them.

A population must do at least its matrix products, so solo / products is the most any
population implementation could gain on this machine; solo / population is what caviar gains.

It also times the one place where members could share work: the first layer, whose input
is the same mini-batch for every member, as K products (what caviar does) and as one wide
(m, n) @ (n, K*h) product with the layout changes it needs, forward and weight gradient.

With ``--breakdown`` it trains each group's population once more with a clock around each
call of its step that is not a matrix product (batch norm, dropout, the head, the L2 term's
squares, the optimizer and its update kernel, the dev evaluation) and prints each one's time
per training step: where a population's time goes beyond its products.

    python benchmarks/population_floor.py [--trials 40] [--group-size 10] [--epochs 10] [--breakdown]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from threadpoolctl import threadpool_limits  # noqa: E402

from caviar import functional as F  # noqa: E402
from caviar import kernels  # noqa: E402
from caviar.nn import heads  # noqa: E402
from caviar.optim import base  # noqa: E402
from caviar.train import step as tape_free  # noqa: E402
from caviar.train.dropout import PopulationDropout  # noqa: E402
from caviar.train.batches import minibatch_indices  # noqa: E402
from caviar.train.population import Population, load_kernels  # noqa: E402
from caviar.tune.objective import shape_of, study_data, train_population, train_trial  # noqa: E402
from caviar.tune.space import default_space  # noqa: E402
from caviar.tune.strategies import RandomSearch, population_key  # noqa: E402


@contextlib.contextmanager
def no_collector():
    """The cyclic garbage collector off while a timing runs (as ``timeit`` does), after a
    collection: a full collection walks every object of this process (134-139 ms for the
    199,000 objects here once numba's kernels are loaded) and falls in one timing or another
    depending on what ran before, which moved a group's time by 0.1 s between runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def default_groups(trials, epochs, group_size, seed):
    specs = RandomSearch(default_space(), trials, epochs, seed, group_size=group_size).propose(None)
    groups = {}
    for number, spec in enumerate(specs):
        trial = {**spec, "number": number}
        groups.setdefault(population_key(trial), []).append(trial)
    return list(groups.values())


def products(sizes, K, batch, n_train, n_dev, epochs, rng):
    """Time only the matrix products a population of K performs in ``epochs`` epochs."""
    W = [rng.standard_normal((K, a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    steps = [len(idx) for idx in minibatch_indices(n_train, batch, np.random.default_rng(0), True, 1)]
    X = {m: rng.standard_normal((m, sizes[0])).astype(np.float32) for m in set(steps) | {n_dev}}
    t0 = time.perf_counter()
    for _ in range(epochs):
        for m in steps:
            acts = [X[m]]
            for w in W:
                acts.append(acts[-1] @ w)
            g = acts[-1]
            for layer in range(len(W) - 1, -1, -1):
                a = acts[layer]
                _ = (a.T if a.ndim == 2 else a.swapaxes(-1, -2)) @ g  # dW
                if layer:
                    g = g @ W[layer].swapaxes(-1, -2)  # dA of the layer below
        a = X[n_dev]
        for w in W:  # the epoch's dev evaluation
            a = a @ w
    return time.perf_counter() - t0


def first_layer(sizes, K, batch, rng, repeats=200):
    """(seconds as K products, seconds as one wide product) for the first layer's forward and
    weight gradient on one mini-batch."""
    n, h = sizes[0], sizes[1]
    X = rng.standard_normal((batch, n)).astype(np.float32)
    W = rng.standard_normal((K, n, h)).astype(np.float32)
    dz = rng.standard_normal((K, batch, h)).astype(np.float32)

    def stacked():
        return X @ W, X.T @ dz

    def wide():
        z = (X @ W.transpose(1, 0, 2).reshape(n, K * h)).reshape(batch, K, h).transpose(1, 0, 2)
        dW = (X.T @ dz.transpose(1, 0, 2).reshape(batch, K * h)).reshape(n, K, h).transpose(1, 0, 2)
        return z, np.ascontiguousarray(dW)

    times = []
    for f in (stacked, wide):
        f()
        t0 = time.perf_counter()
        for _ in range(repeats):
            f()
        times.append((time.perf_counter() - t0) / repeats)
    return times


# (label, owner, name): calls of a population's step, timed where the step looks them up
PIECES = [
    ("forward and backward (tape-free step)", tape_free, "run"),
    ("  batch norm forward (+ ReLU)", F, "batch_norm_train"),
    ("  batch norm, ReLU and dropout forward", F, "batch_norm_relu_dropout"),
    ("  bias, ReLU and dropout (a Dense layer's)", F, "bias_relu_dropout"),
    ("  batch norm backward (+ ReLU's gradient)", F, "batch_norm_grad"),
    ("  dropout (alone)", PopulationDropout, "drop_over"),
    ("  head: losses and dZ[L]", heads.Softmax, "member_loss_grads"),
    ("L2 term's squares", F.SquaresPlan, "__call__"),
    ("optimizer step", base.Optimizer, "step"),
    ("  its update kernel", kernels, "update"),
    ("dev evaluation (each epoch)", Population, "evaluate"),
]


@contextlib.contextmanager
def clocks():
    """Seconds and calls per piece of ``PIECES`` while the block runs; the originals restored after."""
    seconds, calls = collections.defaultdict(float), collections.defaultdict(int)
    saved = [(owner, name, owner.__dict__[name]) for _, owner, name in PIECES]

    def timed(label, fn):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - t0
                calls[label] += 1
        return call

    for (label, owner, name), (_, _, fn) in zip(PIECES, saved):
        setattr(owner, name, timed(label, fn))
    try:
        yield seconds, calls
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def breakdown(settings, group, sizes, batch):
    """Print where a group's population spends its time, per training step."""
    with clocks() as (seconds, calls):
        t0 = time.perf_counter()
        train_population(settings, group)
        total = time.perf_counter() - t0
    steps = max(calls[PIECES[0][0]], 1)
    print(f"{str(sizes)} batch {batch}, K {len(group)}: {total:.2f} s, {steps} steps, "
          f"{total / steps * 1e6:.0f} us a step (all included)")
    for label, _, _ in PIECES:
        if calls[label]:
            print(f"  {label:<44} {seconds[label] / steps * 1e6:8.1f} us a step  ({calls[label] / steps:.2f} calls, "
                  f"{seconds[label] / total:4.0%})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown", action="store_true", help="time the pieces of each population's step")
    args = parser.parse_args(argv)
    settings = {"data": "digits", "target": None, "split_seed": args.seed, "dev": None, "test": None,
                "seed": args.seed, "metric": "dev_accuracy"}
    ds, _, sets = study_data(settings)
    n_train, n_dev = len(sets["train"][0]), len(sets["dev"][0])
    rng = np.random.default_rng(0)
    total = np.zeros(3)
    shared, pieces = [], []
    print(f"default caviar tune search: {args.trials} trials x {args.epochs} epochs, groups of {args.group_size}, "
          f"digits, one process, one BLAS thread")
    print(f"{'layer sizes':<22} {'batch':>5} {'K':>3} {'solo s':>7} {'popul. s':>8} {'products s':>10} "
          f"{'solo/popul.':>11} {'solo/products':>13}")
    kernels.THREADS = 1  # as in a caviar tune worker: one thread for BLAS and the kernels
    with threadpool_limits(1):
        # warm-up: one epoch of each group, alone and as a population, so that no time below is
        # numba compiling or loading a kernel (on a fresh install it compiles them here)
        load_kernels()
        for group in default_groups(args.trials, 1, args.group_size, args.seed):
            train_trial(settings, group[0])
            train_population(settings, group)
        for group in default_groups(args.trials, args.epochs, args.group_size, args.seed):
            sizes, _ = shape_of(group[0]["params"], ds)
            batch = int(group[0]["params"].get("batch_size", 64))
            with no_collector():
                t0 = time.perf_counter()
                for trial in group:
                    train_trial(settings, trial)
                solo = time.perf_counter() - t0
            with no_collector():
                t0 = time.perf_counter()
                train_population(settings, group)
                pop = time.perf_counter() - t0
            with no_collector():
                floor = products(sizes, len(group), batch, n_train, n_dev, args.epochs, rng)
            total += (solo, pop, floor)
            shared.append((sizes, batch, len(group), *first_layer(sizes, len(group), batch, rng)))
            pieces.append((group, sizes, batch))
            print(f"{str(sizes):<22} {batch:>5} {len(group):>3} {solo:7.2f} {pop:8.2f} {floor:10.2f} "
                  f"{solo / pop:11.2f} {solo / floor:13.2f}")
    solo, pop, floor = total
    print(f"{'all groups':<32} {solo:7.2f} {pop:8.2f} {floor:10.2f} {solo / pop:11.2f} {solo / floor:13.2f}")
    print(f"caviar's populations reach {(solo / pop) / (solo / floor):.0%} of the matrix-product ceiling")
    print("first layer (forward + weight gradient, one mini-batch): K products vs one wide product")
    for sizes, batch, K, stacked, wide in shared:
        print(f"  {sizes[0]}->{sizes[1]:<4} batch {batch:>3} K {K:>3}: {stacked * 1e6:7.1f} us vs {wide * 1e6:7.1f} us "
              f"(wide / K products = {wide / stacked:.2f})")
    if args.breakdown:
        print("each population again, a clock around each piece of its step (one thread):")
        with threadpool_limits(1):
            for group, sizes, batch in pieces:
                breakdown(settings, group, sizes, batch)


if __name__ == "__main__":
    main()
