"""The same search with caviar and with Optuna: the same space, the same budget of trials and
epochs, the same data, network and training function. Optuna drives caviar's trial function
with its RandomSampler and its TPESampler; caviar runs its own random search with one worker
(the same resources as Optuna's sequential loop) and with one worker per core. Prints wall
time and best dev accuracy of each, in one run.

    python benchmarks/tune_vs_optuna.py [--trials 20] [--epochs 10]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from caviar.tune import default_space, tune  # noqa: E402
from caviar.tune.objective import study_data, train_trial  # noqa: E402
from caviar.tune.strategies import trial_seed  # noqa: E402


def optuna_search(settings, space, trials, sampler_name, seed):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.RandomSampler(seed=seed) if sampler_name == "random" else optuna.samplers.TPESampler(seed=seed)

    def objective(trial):
        params = {}
        for dim in space:
            if dim.scale == "log":
                params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, log=True)
            elif dim.scale == "one_minus_log":  # 1 - beta on a log scale, as caviar samples it
                params[dim.name] = 1 - trial.suggest_float("1-" + dim.name, 1 - dim.high, 1 - dim.low, log=True)
            elif dim.scale == "categorical":
                params[dim.name] = trial.suggest_categorical(dim.name, list(dim.options))
            elif type(dim).__name__ == "Integer":
                params[dim.name] = trial.suggest_int(dim.name, dim.low, dim.high)
            else:
                params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high)
        spec = {"params": params, "seed": trial_seed(seed, trial.number), "budget": settings["epochs"]}
        status, value, last, best_epoch, error, _ = train_trial(settings, spec)
        if status == "failed":  # a broken benchmark, not a bad configuration: say so
            raise RuntimeError(error)
        return value if value is not None and math.isfinite(value) else 0.0

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return study.best_value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    space = default_space()
    settings = {"data": args.data, "target": None, "split_seed": args.seed, "seed": args.seed, "dev": None, "test": None,
                "epochs": args.epochs, "metric": "dev_accuracy"}
    study_data(settings)  # load once, outside every timing
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, os.cpu_count() or 1):
            t0 = time.perf_counter()
            study = tune(data=args.data, space=space, trials=args.trials, epochs=args.epochs, workers=workers,
                         seed=args.seed, study=os.path.join(tmp, f"w{workers}.sqlite"), log=lambda line: None)
            seconds = time.perf_counter() - t0
            best = max(t["value"] for t in study.trials() if t["value"] is not None)
            rows.append((f"caviar random, {workers} worker(s)", seconds, best))
            study.close()
    try:
        for sampler in ("random", "tpe"):
            t0 = time.perf_counter()
            best = optuna_search(settings, space, args.trials, sampler, args.seed)
            rows.append((f"optuna {sampler}, sequential", time.perf_counter() - t0, best))
    except ImportError:
        print("optuna is not installed: pip install optuna")
    print(f"{args.trials} trials x {args.epochs} epochs on {args.data}, the default space")
    for name, seconds, best in rows:
        print(f"  {name:<28} {seconds:7.1f} s   best dev accuracy {best:.4f}")
    base = rows[0][1]
    for name, seconds, _ in rows[1:]:
        print(f"ratio {name} / caviar random, 1 worker = {seconds / base:.2f}")


if __name__ == "__main__":
    main()
