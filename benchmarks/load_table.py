"""Loading a large table: caviar's ``data.prepare`` (read, column roles, split, preprocessing
fitted on the training rows, float32 matrices for train, dev and test) against
``pandas.read_csv`` alone on the same file. Each runs in a fresh process, so the peak memory
(max RSS) is its own.

    python benchmarks/load_table.py [--rows 1000000] [--columns 20] [--repeats 3]

Prints both times, the ratio caviar / pandas (the goal: at most 2), and the peak memory against
the final float32 matrix plus pandas' frame (the goal: at most 3 times that). Each side runs
``--repeats`` times, alternating, each time in a fresh process; the fastest run of each counts
(on a shared 2-core machine single runs of the same side differed by up to 30%).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
which, path = sys.argv[1], sys.argv[2]
import pandas
from caviar import data  # imports are not timed: a session imports once and loads many tables
t0 = time.perf_counter()
if which == "pandas":
    frame = pandas.read_csv(path)
    out = {{"shape": list(frame.shape), "frame_bytes": int(frame.memory_usage(deep=True).sum())}}
else:
    ds = data.load(path, target="label")  # read, target encoded, rows with no target dropped
    load_seconds = time.perf_counter() - t0
    del ds
    t0 = time.perf_counter()
    ds, parts, prep, sets = data.prepare(path, target="label")  # all of it, from the file again
    out = {{"shape": [sum(len(X) for X, _ in sets.values()), sets["train"][0].shape[1]],
           "matrix_bytes": int(sum(X.nbytes for X, _ in sets.values())), "load_seconds": load_seconds}}
out["seconds"] = time.perf_counter() - t0
out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def write_table(path, rows, columns, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, columns)).astype(np.float32)
    label = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    with open(path, "w") as f:
        f.write(",".join([f"x{i}" for i in range(columns)] + ["label"]) + "\n")
        step = 100_000
        for start in range(0, rows, step):
            block = X[start:start + step]
            lines = [",".join(f"{v:.6g}" for v in row) + f",{lab}" for row, lab in zip(block, label[start:start + step])]
            f.write("\n".join(lines) + "\n")
    return os.path.getsize(path)


def run(which, path):
    from child import json_of

    return json_of([sys.executable, "-c", CHILD.format(root=os.path.join(HERE, "..")), which, path], which)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "table.csv")
        size = write_table(path, args.rows, args.columns)
        runs = {"pandas": [], "caviar": []}
        for _ in range(max(1, args.repeats)):
            for which in runs:
                runs[which].append(run(which, path))
        pandas_run = min(runs["pandas"], key=lambda r: r["seconds"])
        caviar_run = min(runs["caviar"], key=lambda r: r["seconds"])
        caviar_run["load_seconds"] = min(r["load_seconds"] for r in runs["caviar"])
        print("runs (s): pandas " + ", ".join(f"{r['seconds']:.2f}" for r in runs["pandas"]) + "; caviar prepare "
              + ", ".join(f"{r['seconds']:.2f}" for r in runs["caviar"]))
    final = caviar_run["matrix_bytes"] + pandas_run["frame_bytes"]
    print(f"{args.rows} rows x {args.columns} numeric columns and a text label, {size / 1e6:.0f} MB of CSV")
    print(f"  pandas.read_csv        {pandas_run['seconds']:6.2f} s   peak {pandas_run['peak_bytes'] / 1e6:7.0f} MB")
    print(f"  caviar data.load       {caviar_run['load_seconds']:6.2f} s   (the table read, its target encoded)")
    print(f"  caviar data.prepare    {caviar_run['seconds']:6.2f} s   peak {caviar_run['peak_bytes'] / 1e6:7.0f} MB"
          f"   (read, roles, split, preprocessing fitted on train; float32 matrices {caviar_run['matrix_bytes'] / 1e6:.0f} MB)")
    print(f"ratio caviar/pandas time, load = {caviar_run['load_seconds'] / pandas_run['seconds']:.2f}, "
          f"to the float32 matrices = {caviar_run['seconds'] / pandas_run['seconds']:.2f}  (goal: at most 2)")
    print(f"peak memory / (float32 matrix + pandas frame) = {caviar_run['peak_bytes'] / final:.2f}  (goal: at most 3)")


if __name__ == "__main__":
    main()
