"""The default ``caviar tune`` search with and without populations: the same trials (40 trials,
10 epochs, groups of 10 sharing an architecture, the default space, digits, one worker per
core), trained as populations or one by one. Prints the search's wall time each way (the best
of ``--repeats`` runs, the two ways alternating), the ratio, the best dev accuracy of each
(they must be equal: a population changes how trials train, not their results), and the CPU
time of that run's processes (driver and workers): against the wall time, how well the
workers share the cores.

    python benchmarks/tune_population.py [--trials 40] [--group-size 10] [--epochs 10] [--workers W]
                                         [--backend numpy|cupy]

With ``--backend cupy`` the trials train on the GPU (workers share it).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from caviar import backend  # noqa: E402
from caviar.tune import tune  # noqa: E402
from caviar.tune.executors import default_workers  # noqa: E402


def cpu_seconds():
    """CPU time of this process and of its children that have ended (the workers, once the
    search's pool has shut down)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                       resource.RUSAGE_CHILDREN)))


def search(population, args, directory, run):
    path = os.path.join(directory, f"{population}-{run}.sqlite")
    cpu, t0 = cpu_seconds(), time.perf_counter()
    study = tune(trials=args.trials, epochs=args.epochs, group_size=args.group_size, population=population,
                 workers=args.workers, study=path, seed=args.seed, log=lambda line: None)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu
    best = max(t["value"] for t in study.trials() if t["value"] is not None)
    study.close()
    return seconds, best, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    args = parser.parse_args(argv)
    backend.use(args.backend)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        search(True, argparse.Namespace(**{**vars(args), "trials": 2}), tmp, "warm-up")  # load data, warm caches
        # the two ways alternate, run after run, so that both see the same machine (a shared
        # VM's speed drifts: one version of the code's populations took 0.89 to 1.09 s in
        # runs an hour apart here)
        runs = {False: [], True: []}
        for r in range(args.repeats):
            for population in (False, True):
                runs[population].append(search(population, args, tmp, r))
        for population, done in runs.items():
            fastest = min(done, key=lambda r: r[0])
            results[population] = (fastest[0], fastest[2], done[0][1])  # seconds, its CPU, best
    print(f"default caviar tune search: {args.trials} trials x {args.epochs} epochs, groups of {args.group_size}, "
          f"digits, {args.workers or default_workers()} worker(s), backend {args.backend}")
    for population, label in ((False, "one by one (--no-population)"), (True, "populations (default)")):
        seconds, cpu, best = results[population]
        print(f"  {label:<30} {seconds:6.2f} s   best dev accuracy {best:.4f}   CPU {cpu:5.2f} s")
    print(f"ratio one-by-one / populations = {results[False][0] / results[True][0]:.2f}")


if __name__ == "__main__":
    main()
