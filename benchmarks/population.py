"""Caviar training against one-model-at-a-time training: the same 64 configurations (2-layer
and 3-layer ReLU networks on digits, 20 epochs, batch 64, Adam, random learning rates and L2)
trained

  (a) as caviar populations (one per architecture: 32 members each),
  (b) one by one with caviar,
  (c) one by one with PyTorch on the CPU,
  (d) through Optuna driving PyTorch (the same 64 configurations, enqueued),

in one run. Prints wall times, the ratios (b)/(a), (c)/(a), (d)/(a), and the best dev accuracy
of each (they must agree closely: the same configurations, trained the same way).

    python benchmarks/population.py [--configs 64] [--epochs 20] [--hidden 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import caviar  # noqa: E402
from blas import kernels  # noqa: E402
from caviar import data as D  # noqa: E402
from caviar.train.population import Population  # noqa: E402

BATCH = 64


def load():
    ds = D.load("digits")
    s = D.split(ds.X, ds.y, seed=0)
    norm = D.Normalizer().fit(s.train[0])
    return (norm.transform(s.train[0]).astype(np.float32), s.train[1],
            norm.transform(s.dev[0]).astype(np.float32), s.dev[1])


def configurations(n, hidden, seed=0):
    rng = np.random.default_rng(seed)
    configs = []
    for i in range(n):
        depth = 1 if i < n // 2 else 2  # 2-layer and 3-layer networks
        configs.append({"sizes": [64] + [hidden] * depth + [10], "seed": i,
                        "lr": float(10 ** rng.uniform(-3.5, -1.5)), "l2": float(10 ** rng.uniform(-4, 0))})
    return configs


def caviar_population(data, configs, epochs):
    Xt, yt, Xd, yd = data
    best = 0.0
    for depth_sizes in sorted({tuple(c["sizes"]) for c in configs}):
        group = [c for c in configs if tuple(c["sizes"]) == depth_sizes]
        pop = Population(list(depth_sizes), [{"seed": c["seed"], "lr": c["lr"], "l2": c["l2"]} for c in group])
        pop.fit(Xt, yt, epochs=epochs, batch_size=BATCH, validation_data=(Xd, yd), shuffle_seed=0)
        best = max(best, max(pop.results[i][1].evaluate(Xd, yd)["accuracy"] for i in range(len(group))))
    return best


def caviar_one_by_one(data, configs, epochs):
    Xt, yt, Xd, yd = data
    best = 0.0
    for c in configs:
        net = caviar.Network(c["sizes"], l2=c["l2"], seed=c["seed"])
        caviar.fit(net, Xt, yt, optimizer="adam", lr=c["lr"], epochs=epochs, batch_size=BATCH, validation_data=(Xd, yd),
                seed=c["seed"], shuffle_seed=0, verbose=False)
        best = max(best, net.evaluate(Xd, yd)["accuracy"])
    return best


def torch_train(data, c, epochs):
    """The same network, cost (mean cross-entropy + lambda/2m ||W||^2) and Adam, in PyTorch."""
    import torch

    Xt, yt, Xd, yd = data
    torch.manual_seed(c["seed"])
    layers = []
    for i, (n_in, n_out) in enumerate(zip(c["sizes"][:-1], c["sizes"][1:])):
        lin = torch.nn.Linear(n_in, n_out)
        torch.nn.init.normal_(lin.weight, std=np.sqrt(2.0 / n_in))  # He, as caviar
        torch.nn.init.zeros_(lin.bias)
        layers += [lin, torch.nn.ReLU()] if i < len(c["sizes"]) - 2 else [lin]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    X, y = torch.from_numpy(Xt), torch.from_numpy(yt)
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    m = len(X)
    for _ in range(epochs):
        order = torch.randperm(m)
        for i in range(0, m, BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss = loss + c["l2"] / (2 * len(idx)) * sum((w * w).sum() for w in weights)
            loss.backward()
            opt.step()
        with torch.no_grad():  # a dev evaluation every epoch, as the others do
            accuracy = float((model(torch.from_numpy(Xd)).argmax(1) == torch.from_numpy(yd)).float().mean())
    return accuracy


def torch_one_by_one(data, configs, epochs):
    return max(torch_train(data, c, epochs) for c in configs)


def optuna_torch(data, configs, epochs):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for i, c in enumerate(configs):
        study.enqueue_trial({"index": i, "lr": c["lr"], "l2": c["l2"]})

    def objective(trial):
        c = dict(configs[trial.suggest_int("index", 0, len(configs) - 1)])
        c["lr"] = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        c["l2"] = trial.suggest_float("l2", 1e-5, 1.0, log=True)
        return torch_train(data, c, epochs)

    study.optimize(objective, n_trials=len(configs))
    return study.best_value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args(argv)
    data = load()
    configs = configurations(args.configs, args.hidden)
    runs = [("(a) caviar population", caviar_population), ("(b) caviar one by one", caviar_one_by_one),
            ("(c) pytorch one by one", torch_one_by_one), ("(d) optuna + pytorch", optuna_torch)]
    results = {}
    # the peers run first: caviar's training sets process-wide malloc options when it starts
    # (caviar/memory.py), which would otherwise apply to them too
    for name, fn in runs[2:] + runs[:2]:
        try:
            t0 = time.perf_counter()
            best = fn(data, configs, args.epochs)
            results[name] = (time.perf_counter() - t0, best)
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
    results = {name: results[name] for name, _ in runs if name in results}
    print(f"{args.configs} configurations ({args.configs // 2} x 64-{args.hidden}-10, {args.configs - args.configs // 2} x "
          f"64-{args.hidden}-{args.hidden}-10), digits, {args.epochs} epochs, batch {BATCH}, Adam")
    print(f"BLAS: {kernels()}")
    for name, (seconds, best) in results.items():
        print(f"  {name:<24} {seconds:7.2f} s   best dev accuracy {best:.4f}")
    base = results["(a) caviar population"][0]
    for name in list(results)[1:]:
        print(f"ratio {name[:3]}/(a) = {results[name][0] / base:.1f}")


if __name__ == "__main__":
    main()
