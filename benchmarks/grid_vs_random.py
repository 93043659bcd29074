"""Why random search beats a grid (the notes, week 3): the same budget of trials on a problem
where one hyperparameter matters (the learning rate) and one does not (Adam's epsilon).

A 4 x 4 grid tries 4 distinct learning rates; 16 random trials try 16. Prints, for each, the
distinct values of each hyperparameter tried and the best dev accuracy, in one run.

    python benchmarks/grid_vs_random.py [--trials 16] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from caviar.tune import Space, log_uniform, tune  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    space = Space({"lr": log_uniform(1e-4, 1e-1), "epsilon": log_uniform(1e-9, 1e-6)})
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("grid", "random"):
            study = tune(data="digits", space=space, strategy=strategy, trials=args.trials, epochs=args.epochs,
                         workers=1, study=os.path.join(tmp, f"{strategy}.sqlite"), log=lambda line: None)
            trials = study.trials()
            lrs = {round(t["params"]["lr"], 12) for t in trials}
            eps = {round(t["params"]["epsilon"], 15) for t in trials}
            best = max(t["value"] for t in trials if t["value"] is not None)
            print(f"{strategy:<7} {len(trials)} trials: {len(lrs):>2} distinct learning rates (the one that matters), "
                  f"{len(eps):>2} distinct epsilons; best dev accuracy {best:.4f}")
            study.close()


if __name__ == "__main__":
    main()
