"""Page faults of training with and without caviar's malloc settings (``caviar/memory.py``).

Trains one population of the default search's 100-wide shape ([64, 100, 100, 100, 10], 10
members, batch 64, dropout, 10 epochs on digits) in a fresh process, once as caviar runs it
and once with ``CAVIAR_KEEP_FREED_MEMORY=0``, and prints the minor page faults and seconds of
each (the best of ``--repeats``) and their ratios.

    python benchmarks/page_faults.py [--epochs 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

FIT = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from caviar.tune.objective import study_data
from caviar.train.population import Population
settings = {{"data": "digits", "target": None, "split_seed": 0, "dev": None, "test": None, "seed": 0}}
_, _, sets = study_data(settings)
members = [{{"seed": i, "lr": 1e-3, "l2": 0.01, "keep_prob": 0.8}} for i in range(10)]
pop = Population([64, 100, 100, 100, 10], members)
faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
pop.fit(*sets["train"], epochs={epochs}, batch_size=64, validation_data=sets["dev"])
print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, time.perf_counter() - t0]))
"""


def run(keep, epochs):
    from child import json_of

    env = {**os.environ, "CAVIAR_KEEP_FREED_MEMORY": "1" if keep else "0", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    return json_of([sys.executable, "-c", FIT.format(root=ROOT, epochs=epochs)], "the population's fit", env)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = {}
    for keep in (False, True):
        runs = [run(keep, args.epochs) for _ in range(args.repeats)]
        results[keep] = (min(f for f, _ in runs), min(s for _, s in runs))
    print(f"population of 10 x [64, 100, 100, 100, 10], batch 64, {args.epochs} epochs on digits, a fresh process each")
    for keep, label in ((False, "malloc's defaults (CAVIAR_KEEP_FREED_MEMORY=0)"), (True, "caviar's settings (default)")):
        faults, seconds = results[keep]
        print(f"  {label:<48} {faults:8d} minor page faults   {seconds:6.2f} s")
    print(f"ratio faults defaults / caviar = {results[False][0] / max(results[True][0], 1):.1f}")
    print(f"ratio seconds defaults / caviar = {results[False][1] / results[True][1]:.2f}")


if __name__ == "__main__":
    main()
